"""Parsers for EDGAR pages: the getcurrent Atom feed, a filing's index page, the primary document.

getcurrent entries look like (one per filer role, so a filing can appear several times):

    <title>8-K - Apple Inc. (0000320193) (Filer)</title>
    <link rel="alternate" href="https://www.sec.gov/Archives/edgar/data/320193/000032019324000081/0000320193-24-000081-index.htm"/>
    <summary type="html">&lt;b&gt;Filed:&lt;/b&gt; 2024-08-01 &lt;b&gt;AccNo:&lt;/b&gt; 0000320193-24-000081 ...</summary>
    <updated>2024-08-01T16:30:34-04:00</updated>
    <category scheme="https://www.sec.gov/" label="form type" term="8-K"/>
    <id>urn:tag:sec.gov,2008:accession-number=0000320193-24-000081</id>

The accession number's prefix is whoever submitted the filing (often a filing agent),
so the company CIK comes from the title, else from the `/edgar/data/<cik>/` link.
"""

from __future__ import annotations

import calendar
import io
import re
from collections.abc import Callable
from dataclasses import dataclass
from html.parser import HTMLParser
from urllib.parse import urljoin

from ingest.text import html_to_text

_TITLE = re.compile(r"^(?P<form>\S.*?) - (?P<company>.+?) \((?P<cik>\d{1,10})\) \((?P<role>[^()]+)\)\s*$")
_ACCESSION = re.compile(r"(\d{10}-\d{2}-\d{6})")
_LINK_CIK = re.compile(r"/Archives/edgar/data/(\d{1,10})/", re.IGNORECASE)
_ITEM = re.compile(r"\bItem\s+(\d{1,2}\.\d{2})\b", re.IGNORECASE)
# Who the filing is about comes first: a Form 4's issuer over its reporting owner, a 13D's subject over its filer.
_ROLE_RANK = {"filer": 0, "subject": 0, "issuer": 0, "filed by": 1, "reporting": 2}


class EdgarParseError(ValueError):
    """An EDGAR page that does not have the expected shape."""


@dataclass(frozen=True, slots=True)
class CurrentFiling:
    """One filing announced by the getcurrent feed."""

    accession: str
    cik: str
    company: str
    form: str
    role: str
    index_url: str
    updated_ns: int | None
    summary: str
    items: tuple[str, ...]


def parse_current_feed(body: bytes, base_url: str) -> list[CurrentFiling]:
    """Entries of a getcurrent Atom feed, one per (accession, role); raise on anything that is not the feed."""
    import feedparser

    parsed = feedparser.parse(io.BytesIO(body), response_headers={"content-type": "application/atom+xml"})
    if not parsed.get("version", "").startswith("atom") and not parsed.entries:
        bozo = parsed.get("bozo_exception")
        raise EdgarParseError(f"not the getcurrent Atom feed ({type(bozo).__name__ if bozo else 'no feed'})")
    out = []
    for entry in parsed.entries:
        filing = _entry(entry, base_url)
        if filing is not None:
            out.append(filing)
    if parsed.entries and not out:
        raise EdgarParseError(f"{len(parsed.entries)} feed entries, none with a form, CIK and accession")
    return out


def _entry(entry: dict, base_url: str) -> CurrentFiling | None:
    title = (entry.get("title") or "").strip()
    link = urljoin(base_url, entry.get("link") or "")
    m = _TITLE.match(title)
    accession = _first(_ACCESSION, entry.get("id") or "") or _first(_ACCESSION, link)
    cik = m.group("cik") if m else _first(_LINK_CIK, link)
    form = m.group("form").strip() if m else ((entry.get("tags") or [{}])[0].get("term") or "")
    if not (accession and cik and form):
        return None
    summary = html_to_text(entry.get("summary") or "")
    when = entry.get("updated_parsed") or entry.get("published_parsed")
    return CurrentFiling(
        accession=accession, cik=cik.zfill(10), company=m.group("company").strip() if m else "",
        form=form, role=(m.group("role").strip() if m else ""), index_url=link,
        updated_ns=calendar.timegm(when) * 1_000_000_000 if when else None,
        summary=summary, items=items_of(summary),
    )


def _first(pattern: re.Pattern, text: str) -> str | None:
    m = pattern.search(text)
    return m.group(1) if m else None


def one_per_accession(filings: list[CurrentFiling],
                      has_ticker: Callable[[str], bool] = lambda cik: False) -> list[CurrentFiling]:
    """The feed repeats a filing once per filer (co-registrants) or role: keep one per accession number.

    Preferred: the company the filing is about (by role), then one whose CIK maps to a ticker
    (a parent over its unlisted subsidiary), then the first in feed order.
    """
    def rank(f: CurrentFiling) -> tuple[int, int]:
        return _ROLE_RANK.get(f.role.lower(), 3), 0 if has_ticker(f.cik) else 1

    best: dict[str, CurrentFiling] = {}
    for filing in filings:
        held = best.get(filing.accession)
        if held is None or rank(filing) < rank(held):
            best[filing.accession] = filing
    return list(best.values())


def items_of(text: str) -> tuple[str, ...]:
    """8-K item numbers ("2.02", "9.01") in order of first mention."""
    return tuple(dict.fromkeys(_ITEM.findall(text)))


class _IndexTable(HTMLParser):
    """Rows of the "Document Format Files" table: (seq, description, href, type)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.rows: list[list[tuple[str, str | None]]] = []
        self._row: list[tuple[str, str | None]] | None = None
        self._cell: list[str] | None = None
        self._href: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "tr":
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell, self._href = [], None
        elif tag == "a" and self._cell is not None and self._href is None:
            self._href = dict(attrs).get("href")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._row is not None and self._cell is not None:
            self._row.append((" ".join("".join(self._cell).split()), self._href))
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.rows.append(self._row)
            self._row = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def primary_document_url(index_html: str, form: str, index_url: str) -> str | None:
    """The primary document of a filing from its `-index.htm` page: the row typed as the form, else Seq 1."""
    table = _IndexTable()
    table.feed(index_html)
    candidates: list[tuple[int, str]] = []
    for row in table.rows:
        if len(row) < 4:
            continue
        seq, _, (name, href), (doc_type, _) = row[0][0], row[1], row[2], row[3]
        if not href or not name:
            continue
        href = href.split("/ix?doc=", 1)[-1]  # inline XBRL viewer link -> the document itself
        url = urljoin(index_url, href)
        if doc_type.upper() == form.upper():
            candidates.append((0, url))
        elif seq.strip() == "1":
            candidates.append((1, url))
    if not candidates:
        return None
    return min(candidates)[1]


def document_text(body: bytes, content_type: str | None, url: str) -> str:
    """Readable text of a primary document (HTML, inline XBRL or plain text)."""
    text = _decode(body, content_type)
    lowered = url.lower()
    if lowered.endswith((".htm", ".html", ".xhtml")) or "<html" in text[:2_000].lower():
        return html_to_text(text)
    return "\n".join(line.rstrip() for line in text.splitlines()).strip()


def _decode(body: bytes, content_type: str | None) -> str:
    charset = None
    if content_type and "charset=" in content_type.lower():
        charset = content_type.lower().split("charset=", 1)[1].split(";")[0].strip().strip('"')
    for encoding in filter(None, (charset, "utf-8")):
        try:
            return body.decode(encoding)
        except (LookupError, UnicodeDecodeError):
            continue
    return body.decode("cp1252", errors="replace")  # EDGAR's older documents are Windows-1252
