"""Pure parsers for EDGAR's history: the submissions JSON, the quarterly full index, a filing's index page.

Submissions JSON (`https://data.sec.gov/submissions/CIK##########.json`): company facts, then
`filings.recent`, columnar arrays (`accessionNumber`, `filingDate`, `acceptanceDateTime`, `form`,
`primaryDocument`, `items`, ...) of the newest filings, and `filings.files`, the older pages
(`CIK##########-submissions-001.json`, same columnar arrays at their top level) with the
`filingFrom` / `filingTo` dates each covers.

Times: `acceptanceDateTime` ends in `Z`, but for some filers it is the New York clock with a `Z`
appended and for others genuine UTC, and the string does not say which. The filing's `-index.htm`
page shows "Accepted" in New York time for every filer, so it is the authority; without it the later
of the two readings is the only one never earlier than the truth.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from ingest.backfill.window import to_ns

NEW_YORK = ZoneInfo("America/New_York")
_ACCEPTED = re.compile(r'class="infoHead">\s*Accepted\s*</div>\s*<div[^>]*class="info">\s*'
                       r"(\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2})\s*<", re.IGNORECASE)
_INDEX_ROW = re.compile(r"(?P<cik>\d{1,10})\s+(?P<date>\d{4}-\d{2}-\d{2}|\d{8})\s+"
                        r"(?P<file>edgar/data/\d+/(?P<acc>\d{10}-\d{2}-\d{6})\.txt)\s*$")


class EdgarHistoryError(ValueError):
    """A page that does not have the shape EDGAR serves."""


@dataclass(frozen=True, slots=True)
class FilingRef:
    """One filing to backfill, from the submissions JSON or the full index."""

    accession: str
    cik: str  # 10 digits
    company: str
    form: str
    filing_date: str  # YYYY-MM-DD
    acceptance: str | None = None  # the submissions JSON's acceptanceDateTime, as sent
    primary_document: str | None = None
    items: tuple[str, ...] = ()

    def folder(self, base_url: str) -> str:
        return f"{base_url.rstrip('/')}/Archives/edgar/data/{int(self.cik)}/{self.accession.replace('-', '')}"

    def index_url(self, base_url: str) -> str:
        return f"{self.folder(base_url)}/{self.accession}-index.htm"

    def document_url(self, base_url: str) -> str | None:
        return f"{self.folder(base_url)}/{self.primary_document}" if self.primary_document else None


def form_matches(form: str, wanted: list[str]) -> bool:
    """`8-K` takes `8-K` and its amendment `8-K/A`, as EDGAR's own form filter does."""
    form = form.upper()
    return any(form == w.upper() or form.startswith(w.upper() + "/") for w in wanted)


def submissions(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise EdgarHistoryError(f"submissions JSON unreadable: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("filings"), dict):
        raise EdgarHistoryError("not a submissions JSON (no filings object)")
    return data


def filing_rows(columns: dict[str, Any], cik: str, company: str) -> list[FilingRef]:
    """Filings of a columnar block (`filings.recent`, or an older page); rows without an accession are skipped."""
    if not isinstance(columns, dict) or not isinstance(columns.get("accessionNumber"), list):
        raise EdgarHistoryError("no accessionNumber column")
    n = len(columns["accessionNumber"])

    def col(name: str) -> list[Any]:
        values = columns.get(name)
        return values if isinstance(values, list) and len(values) == n else [None] * n

    out = []
    for acc, date, accepted, form, doc, items in zip(columns["accessionNumber"], col("filingDate"),
                                                      col("acceptanceDateTime"), col("form"),
                                                      col("primaryDocument"), col("items")):
        if not (isinstance(acc, str) and re.fullmatch(r"\d{10}-\d{2}-\d{6}", acc) and isinstance(form, str)):
            continue
        out.append(FilingRef(accession=acc, cik=cik, company=company, form=form, filing_date=str(date or ""),
                             acceptance=accepted if isinstance(accepted, str) else None,
                             primary_document=doc or None if isinstance(doc, str) else None,
                             items=tuple(i.strip() for i in (items or "").split(",") if i.strip())
                             if isinstance(items, str) else ()))
    return out


def older_pages(data: dict[str, Any]) -> list[dict[str, Any]]:
    """`filings.files`: [{"name", "filingCount", "filingFrom", "filingTo"}]."""
    files = data["filings"].get("files") or []
    return [f for f in files if isinstance(f, dict) and isinstance(f.get("name"), str)]


def overlaps(page: dict[str, Any], first_day: str, last_day: str) -> bool:
    """Whether an older page's filing dates reach into [first_day, last_day] (unknown dates: assume so)."""
    return not (str(page.get("filingTo") or "9999") < first_day or str(page.get("filingFrom") or "0000") > last_day)


def accepted_from_index(html: str) -> int | None:
    """The "Accepted" time of a filing's index page (New York time) in UTC nanoseconds."""
    m = _ACCEPTED.search(html)
    if not m:
        return None
    naive = dt.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S")
    return to_ns(naive.replace(tzinfo=NEW_YORK).astimezone(dt.timezone.utc))


def accepted_from_submissions(value: str) -> int:
    """`acceptanceDateTime` read both ways (UTC, or New York with a false Z): the later, never early."""
    text = value.strip().removesuffix("Z").removesuffix("z")
    naive = dt.datetime.fromisoformat(text).replace(tzinfo=None)
    as_utc = to_ns(naive.replace(tzinfo=dt.timezone.utc))
    as_new_york = to_ns(naive.replace(tzinfo=NEW_YORK).astimezone(dt.timezone.utc))
    return max(as_utc, as_new_york)


def end_of_filing_date(day: str) -> int:
    """Midnight after the filing date in New York: a bound no acceptance on that date is later than."""
    date = dt.date.fromisoformat(day if "-" in day else f"{day[:4]}-{day[4:6]}-{day[6:]}")
    return to_ns(dt.datetime(date.year, date.month, date.day, tzinfo=NEW_YORK) + dt.timedelta(days=1))


def parse_full_index(body: bytes) -> list[FilingRef]:
    """Rows of a `full-index/YYYY/QTRn/form.idx` (or company.idx): fixed-width columns under a dashed rule."""
    text = body.decode("latin-1")
    header_at = text.find("\n---")
    if header_at < 0:
        raise EdgarHistoryError("not an EDGAR full index (no dashed header rule)")
    head_lines = text[:header_at].splitlines()
    header = head_lines[-1] if head_lines else ""
    by_form = header.lstrip().lower().startswith("form type")
    split_at = header.find("Company Name") if by_form else header.find("Form Type")
    out = []
    for line in text[header_at + 1:].splitlines()[1:]:
        m = _INDEX_ROW.search(line)
        if not m:
            continue
        left = line[: m.start()]
        if split_at > 0:
            first, second = left[:split_at].strip(), left[split_at:].strip()
        else:
            parts = re.split(r"\s{2,}", left.strip(), maxsplit=1)
            first, second = parts[0], parts[1] if len(parts) > 1 else ""
        form, company = (first, second) if by_form else (second, first)
        date = m.group("date")
        out.append(FilingRef(accession=m.group("acc"), cik=m.group("cik").zfill(10), company=company, form=form,
                             filing_date=date if "-" in date else f"{date[:4]}-{date[4:6]}-{date[6:]}"))
    return out


def quarters(first_day: str, last_day: str) -> list[tuple[int, int]]:
    """(year, quarter) of every calendar quarter with a day in [first_day, last_day] (YYYY-MM-DD)."""
    first, last = dt.date.fromisoformat(first_day), dt.date.fromisoformat(last_day)
    out = []
    y, q = first.year, (first.month - 1) // 3 + 1
    while (y, q) <= (last.year, (last.month - 1) // 3 + 1):
        out.append((y, q))
        y, q = (y + 1, 1) if q == 4 else (y, q + 1)
    return out


def ticker_ciks(body: bytes) -> dict[str, str]:
    """Every ticker of company_tickers.json (`{"0": {"cik_str", "ticker", "title"}}`) -> its CIK (10 digits)."""
    data = json.loads(body)
    rows = data.values() if isinstance(data, dict) else data
    out: dict[str, str] = {}
    for row in rows:
        try:
            out.setdefault(str(row["ticker"]).upper(), str(int(row["cik_str"])).zfill(10))
        except (KeyError, TypeError, ValueError):
            continue
    return out
