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

A filing with co-registrants (a parent and its finance subsidiaries on one accession)
has one feed entry per filer, and a feed page may cut the list short; the filing's
index page lists every filer, the primary registrant first:

    <span class="companyName">SOUTHERN CO (Filer)
     <acronym title="Central Index Key">CIK</acronym>: <a href="...">0000092122 (see all company filings)</a></span>

Links are absolute `https://www.sec.gov/...` URLs; `rebase` points them at a configured
mirror or proxy for fetching, while published URLs stay the public ones.
"""

from __future__ import annotations

import calendar
import io
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit, urlunsplit

from ingest.text import html_to_text

_TITLE = re.compile(r"^(?P<form>\S.*?) - (?P<company>.+?) \((?P<cik>\d{1,10})\) \((?P<role>[^()]+)\)\s*$")
_ACCESSION = re.compile(r"(\d{10}-\d{2}-\d{6})")
_LINK_CIK = re.compile(r"/Archives/edgar/data/(\d{1,10})/", re.IGNORECASE)
_ITEM = re.compile(r"\bItem\s+(\d{1,2}\.\d{2})\b", re.IGNORECASE)
# Who the filing is about comes first: a Form 4's issuer over its reporting owner, a 13D's subject over its filer.
_ROLE_RANK = {"filer": 0, "subject": 0, "issuer": 0, "filed by": 1, "reporting": 2}
_INDEX_FILER = re.compile(r"^(?P<company>.+)\s\((?P<role>[^()]+)\)\s*CIK:?\s*(?P<cik>\d{1,10})\b")
SEC_URL = "https://www.sec.gov"  # where the public links point, whatever host the ingestor fetches from
_SEC_HOSTS = frozenset({"www.sec.gov", "sec.gov"})


class EdgarParseError(ValueError):
    """An EDGAR page that does not have the expected shape."""


@dataclass(frozen=True, slots=True)
class Filer:
    """One entity named on a filing: its CIK (10 digits), name and role (Filer, Subject, Reporting...)."""

    cik: str
    company: str
    role: str


@dataclass(frozen=True, slots=True)
class CurrentFiling:
    """One filing announced by the getcurrent feed, attributed to `cik`; `filers` are all its feed entries."""

    accession: str
    cik: str
    company: str
    form: str
    role: str
    index_url: str
    updated_ns: int | None
    summary: str
    items: tuple[str, ...]
    filers: tuple[Filer, ...] = ()

    def attributed_to(self, filer: Filer) -> CurrentFiling:
        """This filing with `filer` as the company it is about."""
        return replace(self, cik=filer.cik, company=filer.company, role=filer.role)


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
    filer = Filer(cik.zfill(10), m.group("company").strip() if m else "", m.group("role").strip() if m else "")
    return CurrentFiling(
        accession=accession, cik=filer.cik, company=filer.company, form=form, role=filer.role, index_url=link,
        updated_ns=calendar.timegm(when) * 1_000_000_000 if when else None,
        summary=summary, items=items_of(summary), filers=(filer,),
    )


def _first(pattern: re.Pattern, text: str) -> str | None:
    m = pattern.search(text)
    return m.group(1) if m else None


def one_per_accession(filings: list[CurrentFiling],
                      has_ticker: Callable[[str], bool] = lambda cik: False) -> list[CurrentFiling]:
    """The feed repeats a filing once per filer (co-registrants) or role: keep one per accession number.

    Each kept filing carries every filer the feed named for it and is attributed by `attribute`.
    """
    grouped: dict[str, list[CurrentFiling]] = {}
    for filing in filings:
        grouped.setdefault(filing.accession, []).append(filing)
    out = []
    for accession, entries in grouped.items():
        filers = tuple(dict.fromkeys(f for e in entries for f in (e.filers or (Filer(e.cik, e.company, e.role),))))
        chosen = attribute(filers, accession, has_ticker)
        first = next(e for e in entries if e.cik == chosen.cik)
        out.append(replace(first, filers=filers).attributed_to(chosen))
    return out


def attribute(filers: tuple[Filer, ...] | list[Filer], accession: str, has_ticker: Callable[[str], bool],
              primary_listed_first: bool = False) -> Filer:
    """The filer a filing is attributed to.

    By role first (a Form 4's issuer over its reporting owner, a 13D's subject over who filed it),
    then one whose CIK maps to a ticker (a parent over its unlisted finance subsidiaries), then the
    parent: the first filer of the index page (`primary_listed_first`), else the one that submitted
    the filing itself (its CIK is the accession prefix); then the order given.
    """
    if not filers:
        raise ValueError(f"{accession}: no filer to attribute the filing to")
    submitter = accession.split("-", 1)[0]

    def rank(pair: tuple[int, Filer]) -> tuple[int, int, int, int]:
        i, f = pair
        parent = (i == 0) if primary_listed_first else f.cik == submitter
        return _ROLE_RANK.get(f.role.lower(), 3), 0 if has_ticker(f.cik) else 1, 0 if parent else 1, i

    return min(enumerate(filers), key=rank)[1]


def co_registrant_ciks(filers: tuple[Filer, ...] | list[Filer], chosen: Filer) -> list[str]:
    """CIKs of the filers in the chosen one's role class, chosen first: their tickers all name the filing."""
    rank = _ROLE_RANK.get(chosen.role.lower(), 3)
    rest = [f.cik for f in filers if f.cik != chosen.cik and _ROLE_RANK.get(f.role.lower(), 3) == rank]
    return list(dict.fromkeys([chosen.cik, *rest]))


class _IndexFilers(HTMLParser):
    """Text of each `<span class="companyName">` of a filing index page, in page order."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.names: list[str] = []
        self._depth = 0  # spans open inside the current companyName span, itself included
        self._parts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag != "span":
            return
        if self._depth:
            self._depth += 1
        elif "companyName" in (dict(attrs).get("class") or "").split():
            self._depth, self._parts = 1, []

    def handle_endtag(self, tag: str) -> None:
        if tag == "span" and self._depth:
            self._depth -= 1
            if not self._depth:
                self.names.append(" ".join("".join(self._parts).split()))

    def handle_data(self, data: str) -> None:
        if self._depth:
            self._parts.append(data)


def index_filers(index_html: str) -> list[Filer]:
    """Every filer a filing's `-index.htm` page names, in page order (the primary registrant first)."""
    parser = _IndexFilers()
    parser.feed(index_html)
    out = []
    for text in parser.names:
        m = _INDEX_FILER.match(text)
        if m:
            out.append(Filer(m.group("cik").zfill(10), m.group("company").strip(), m.group("role").strip()))
    return list(dict.fromkeys(out))


def rebase(url: str, base_url: str) -> str:
    """`url` with an SEC host (www.sec.gov) moved onto `base_url`, a mirror or proxy; other URLs unchanged."""
    parts = urlsplit(url)
    if (parts.hostname or "").lower() not in _SEC_HOSTS:
        return url
    base = urlsplit(base_url.rstrip("/"))
    if (base.hostname or "").lower() in _SEC_HOSTS and not base.path:
        return url
    return urlunsplit((base.scheme, base.netloc, base.path + parts.path, parts.query, parts.fragment))


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
