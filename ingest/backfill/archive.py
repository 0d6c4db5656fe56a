"""A user's news archive (JSONL or CSV) read into rows: columns mapped, timestamps to UTC nanoseconds.

Pure: bytes in, rows and rejected rows (with line number and reason) out. Timestamps may be ISO 8601
with an offset or `Z`, RFC 2822 (`Tue, 05 Mar 2024 09:30:00 -0500`, `... EST`), epoch numbers (unit by
option, else by digit count: 10 s, 13 ms, 16 us, 19 ns) or any `strptime` format. A time without a zone
is read in `timezone` when one is given and refused otherwise: guessing UTC would shift a whole archive.
Local times that occur twice (the hour clocks fall back) or not at all (the hour they spring forward)
take the later reading, so a story is never placed before it could have been read.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from email.utils import parsedate_to_datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field

from ingest.backfill.window import to_ns

# Column names tried, in order, when a mapping option is not given (compared case-insensitively).
CANDIDATES: dict[str, tuple[str, ...]] = {
    "time": ("timestamp", "time", "datetime", "date", "published", "published_at", "pubdate", "created_at"),
    "title": ("headline", "title"),
    "body": ("body", "text", "content", "summary", "description"),
    "url": ("url", "link"),
    "id": ("id", "guid"),
    "symbols": ("symbols", "tickers", "symbol", "ticker"),
}
_EPOCH_UNITS = {"s": 10**9, "ms": 10**6, "us": 10**3, "ns": 1}
_AUTO_FROM, _AUTO_TO = 365 * 86_400 * 10**9, 7_258_118_400 * 10**9  # 1971-01-01, 2200-01-01


class ArchiveError(ValueError):
    """An archive that cannot be read at all (unknown format, no time or text column)."""


class TimestampError(ValueError):
    """A timestamp that cannot be read as one instant."""


class ArchiveOptions(BaseModel):
    """How to read an archive: its format, which column is which, how its times are written."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal["auto", "jsonl", "csv"] = "auto"
    time: str | None = Field(None, description="timestamp column; default the first of "
                             + ", ".join(CANDIDATES["time"]))
    title: str | None = Field(None, description="headline column")
    body: str | None = Field(None, description="body column")
    url: str | None = Field(None, description="URL column")
    id: str | None = Field(None, description="the archive's own id / GUID column (deduplicates as a feed GUID)")
    symbols: str | None = Field(None, description="column of symbols (comma, space or ; separated, or a list)")
    timezone: str | None = Field(None, description="IANA zone for times written without one, e.g. America/New_York")
    time_format: str | None = Field(None, description="strptime format of the timestamps, e.g. %d/%m/%Y %H:%M")
    epoch_unit: Literal["auto", "s", "ms", "us", "ns"] = "auto"
    delimiter: str = Field(",", min_length=1, max_length=1)
    encoding: str = "utf-8-sig"

    def zone(self) -> ZoneInfo | None:
        if not self.timezone:
            return None
        try:
            return ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ArchiveError(f"unknown time zone {self.timezone!r} (use an IANA name such as UTC or "
                               "America/New_York)") from None


@dataclass(frozen=True, slots=True)
class ArchiveRow:
    """One story of the archive."""

    line: int
    ts: int
    title: str
    body: str
    url: str | None
    guid: str | None
    symbols: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RejectedRow:
    line: int
    reason: str
    raw: str


# -- time -----------------------------------------------------------------------------------------------------


def localize(naive: dt.datetime, zone: dt.tzinfo) -> dt.datetime:
    """A wall-clock time in `zone`; ambiguous or skipped times take the later instant."""
    first, second = naive.replace(tzinfo=zone, fold=0), naive.replace(tzinfo=zone, fold=1)
    return max(first, second, key=lambda d: d.astimezone(dt.timezone.utc))


def _epoch_ns(number: Decimal, unit: str) -> int:
    if unit == "auto":
        # The ranges 1971..2200 in s, ms, us and ns do not overlap, so the magnitude names the unit.
        unit = next((u for u, scale in _EPOCH_UNITS.items() if _AUTO_FROM <= number * scale < _AUTO_TO), "")
        if not unit:
            raise TimestampError(f"epoch time {number} is not between 1971 and 2200 in s, ms, us or ns; "
                                 "give --news-epoch-unit")
    ns = number * _EPOCH_UNITS[unit]
    if ns != ns.to_integral_value():
        ns = ns.to_integral_value(rounding="ROUND_CEILING")  # a fraction of a nanosecond: round later, not earlier
    return int(ns)


def parse_timestamp(value: Any, *, zone: dt.tzinfo | None = None, time_format: str | None = None,
                    epoch_unit: str = "auto") -> int:
    """UTC nanoseconds since the epoch of one archive timestamp; `TimestampError` says why not."""
    if isinstance(value, bool) or value is None:
        raise TimestampError(f"{value!r} is not a timestamp")
    if isinstance(value, (int, float)) or (isinstance(value, str) and _is_number(value.strip())):
        try:
            number = Decimal(str(value).strip())
        except InvalidOperation:
            raise TimestampError(f"{value!r} is not a number") from None
        if not number.is_finite() or number < 0:
            raise TimestampError(f"{value!r} is not an epoch time")
        return _epoch_ns(number, epoch_unit)
    if not isinstance(value, str) or not value.strip():
        raise TimestampError(f"{value!r} is not a timestamp")
    text = value.strip()
    when = _parse_text(text, time_format)
    if when.tzinfo is None or when.utcoffset() is None:
        if zone is None:
            raise TimestampError(f"{text!r} has no time zone; give one (--news-timezone UTC, America/New_York, ...)")
        when = localize(when, zone)
    ns = to_ns(when.astimezone(dt.timezone.utc))
    if ns < 0:
        raise TimestampError(f"{text!r} is before 1970")
    return ns


def _is_number(text: str) -> bool:
    return bool(text) and text.replace(".", "", 1).isdigit()


def _parse_text(text: str, time_format: str | None) -> dt.datetime:
    if time_format:
        try:
            return dt.datetime.strptime(text, time_format)
        except ValueError as exc:
            raise TimestampError(f"{text!r} does not match {time_format!r}: {exc}") from None
    try:
        return dt.datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        pass
    try:
        return parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        raise TimestampError(f"{text!r} is neither ISO 8601 nor RFC 2822; give --news-time-format") from None


# -- rows -----------------------------------------------------------------------------------------------------


def detect_format(name: str, head: bytes) -> Literal["jsonl", "csv"]:
    lowered = name.lower()
    if lowered.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    if lowered.endswith((".csv", ".tsv")):
        return "csv"
    return "jsonl" if head.lstrip(b"\xef\xbb\xbf \t\r\n")[:1] == b"{" else "csv"


def _records(data: bytes, fmt: str, options: ArchiveOptions) -> tuple[list[str], list[tuple[int, Any, str]]]:
    """(column names seen, [(line, record or error text, raw)])."""
    try:
        text = data.decode(options.encoding)
    except (UnicodeDecodeError, LookupError) as exc:
        raise ArchiveError(f"archive is not {options.encoding}: {exc}") from None
    out: list[tuple[int, Any, str]] = []
    names: dict[str, None] = {}
    if fmt == "jsonl":
        for lineno, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                out.append((lineno, f"not JSON: {exc.msg}", line))
                continue
            if not isinstance(record, dict):
                out.append((lineno, "not a JSON object", line))
                continue
            names.update(dict.fromkeys(record))
            out.append((lineno, record, line))
        return list(names), out
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=options.delimiter)
    line = 1
    try:
        for record in reader:
            start, line = line + 1, reader.line_num
            if None in record:  # more fields than the header names
                named = len(reader.fieldnames or [])
                extra = len(record[None])  # type: ignore[index]
                out.append((start, f"{named + extra} fields, header has {named}", json.dumps(record, default=str)))
                continue
            out.append((start, record, json.dumps(record, ensure_ascii=False)))
    except csv.Error as exc:
        raise ArchiveError(f"CSV line {reader.line_num}: {exc}") from None
    return list(reader.fieldnames or []), out


def _resolve(names: list[str], options: ArchiveOptions) -> dict[str, str | None]:
    lowered = {n.lower().strip(): n for n in names if isinstance(n, str)}
    mapping: dict[str, str | None] = {}
    for field, candidates in CANDIDATES.items():
        given = getattr(options, field)
        if given is not None:
            if given not in names:
                raise ArchiveError(f"no column {given!r} (columns: {', '.join(map(str, names)) or 'none'})")
            mapping[field] = given
        else:
            mapping[field] = next((lowered[c] for c in candidates if c in lowered), None)
    if mapping["time"] is None:
        raise ArchiveError(f"no timestamp column among {', '.join(map(str, names)) or 'none'}; name it with "
                           "--news-time COLUMN")
    if mapping["title"] is None and mapping["body"] is None:
        raise ArchiveError("no headline or body column; name one with --news-title / --news-body")
    return mapping


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else str(value)


def _symbols(value: Any) -> tuple[str, ...]:
    if value is None or value == "":
        return ()
    parts = value if isinstance(value, list) else str(value).replace(";", ",").replace(" ", ",").split(",")
    return tuple(dict.fromkeys(str(p).strip().lstrip("$").upper() for p in parts if str(p).strip()))


def read_archive(data: bytes, name: str, options: ArchiveOptions) -> tuple[list[ArchiveRow], list[RejectedRow]]:
    """Every row of an archive, or the reason it was refused; raises `ArchiveError` only for the whole file."""
    fmt = options.format if options.format != "auto" else detect_format(name, data[:4096])
    zone = options.zone()
    names, records = _records(data, fmt, options)
    if not records:
        return [], []
    cols = _resolve(names, options)
    rows: list[ArchiveRow] = []
    rejected: list[RejectedRow] = []
    for line, record, raw in records:
        if isinstance(record, str):
            rejected.append(RejectedRow(line, record, raw))
            continue
        get = lambda field: record.get(cols[field]) if cols[field] else None  # noqa: E731
        try:
            ts = parse_timestamp(get("time"), zone=zone, time_format=options.time_format,
                                 epoch_unit=options.epoch_unit)
        except TimestampError as exc:
            rejected.append(RejectedRow(line, f"timestamp: {exc}", raw))
            continue
        title, body = _text(get("title")).strip(), _text(get("body")).strip()
        if not (title or body):
            rejected.append(RejectedRow(line, "no headline and no body", raw))
            continue
        url = _text(get("url")).strip() or None
        guid = _text(get("id")).strip() or None
        rows.append(ArchiveRow(line, ts, title, body, url, guid, _symbols(get("symbols"))))
    return rows, rejected
