"""The backfill window: `--from` / `--to` as instants in nanoseconds, UTC unless an offset is given."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

_DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
NS = 1_000_000_000


class WindowError(ValueError):
    """A --from / --to that cannot be read, or an empty window."""


def to_ns(when: dt.datetime) -> int:
    """Exact nanoseconds since the epoch of an aware datetime (no float rounding)."""
    delta = when - dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
    return (delta.days * 86_400 + delta.seconds) * NS + delta.microseconds * 1_000


def from_ns(ns: int) -> dt.datetime:
    return dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(microseconds=ns // 1_000)


def iso(ns: int) -> str:
    """`2024-05-02T22:04:25Z` (microseconds shown only when present)."""
    return from_ns(ns).isoformat().replace("+00:00", "Z")


def parse_bound(text: str, *, end: bool) -> int:
    """A date (`2024-05-01`, UTC midnight; as `--to` it includes that whole day) or an ISO 8601 instant."""
    text = text.strip()
    try:
        if _DATE_ONLY.match(text):
            day = dt.date.fromisoformat(text)
            when = dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc)
            return to_ns(when + dt.timedelta(days=1) if end else when)
        when = dt.datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        raise WindowError(f"{text!r}: use a date (2024-05-01) or an ISO 8601 time (2024-05-01T13:30:00Z)") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return to_ns(when)


@dataclass(frozen=True, slots=True)
class Window:
    """[start, end) in nanoseconds since the epoch, UTC."""

    start: int
    end: int

    @classmethod
    def parse(cls, start: str, end: str) -> Window:
        window = cls(parse_bound(start, end=False), parse_bound(end, end=True))
        if window.end <= window.start:
            raise WindowError(f"--to ({iso(window.end)}) must be after --from ({iso(window.start)})")
        return window

    @property
    def start_ms(self) -> int:
        return self.start // 1_000_000

    @property
    def end_ms(self) -> int:
        return self.end // 1_000_000

    def __contains__(self, ns: int) -> bool:
        return self.start <= ns < self.end

    def as_json(self) -> dict[str, str]:
        return {"from": iso(self.start), "to": iso(self.end)}
