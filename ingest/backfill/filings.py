"""EDGAR filings over the window, one part per filing, every request within the SEC's fair-access limit.

Which filings: for configured companies (CIKs or tickers, resolved through company_tickers.json), each
company's submissions JSON and those of its older pages that reach into the window; with no companies,
the quarterly full index (`form.idx`) of each quarter the window touches. Both filtered by form.
Then per filing: its index page (the authoritative acceptance time, and the primary document when the
submissions JSON did not name it) and, for `document_forms`, the primary document's text. `ts_event`
is the acceptance time: when the filing became public. 8-K items come from the submissions JSON, else
from the text, as the live ingestor finds them.

One `RateLimiter` (FINSIGNAL_FILINGS_MAX_REQUESTS_PER_S, below the SEC's 10/s) covers every request, on
both hosts; 403, 429 and 503 pause it for everyone, doubling from `backoff_s` up to 10 minutes, and the
request is tried again. The submissions JSON, older pages, full indexes and the ticker file are kept in
the state directory, so a rerun asks only for filings it has no part for.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import structlog

from ingest import http
from ingest.backfill.edgar_index import (
    EdgarHistoryError,
    FilingRef,
    accepted_from_index,
    accepted_from_submissions,
    end_of_filing_date,
    filing_rows,
    form_matches,
    older_pages,
    overlaps,
    parse_full_index,
    quarters,
    submissions,
    ticker_ciks,
)
from ingest.backfill.settings import BackfillSettings
from ingest.backfill.store import Store, lines, read_part, write_atomic
from ingest.backfill.window import NS, Window, iso
from ingest.contracts import Document
from ingest.filings.edgar import document_text, items_of, primary_document_url
from ingest.filings.service import parse_company_tickers
from ingest.filings.settings import FilingsSettings
from ingest.limits import Backoff, RateLimiter
from ingest.metrics import BACKOFFS

log = structlog.get_logger(__name__)

SOURCE = "filings"
MAX_PAUSE_S = 600.0
DAY_NS = 86_400 * NS


class FetchFailed(Exception):
    """A request that did not succeed after every attempt (or was refused outright, e.g. 404)."""


class EdgarClient:
    """Polite GETs: declared User-Agent, one shared limiter, throttling answers pause everyone and retry."""

    def __init__(self, session: aiohttp.ClientSession, filings: FilingsSettings, attempts: int) -> None:
        self.session = session
        self.settings = filings
        self.headers = {"User-Agent": filings.require_user_agent(), "Accept-Encoding": "gzip, deflate"}
        self.limiter = RateLimiter(filings.max_requests_per_s, 1.0)
        self.attempts = attempts
        self.requests = 0
        self._throttled = 0

    async def get(self, url: str, max_bytes: int = http.MAX_BODY_BYTES) -> http.Response:
        backoff = Backoff(base_s=0.5, cap_s=30.0)
        last: Exception | None = None
        for attempt in range(1, self.attempts + 1):
            try:
                self.requests += 1
                resp = await http.get(self.session, url, source=SOURCE, limiter=self.limiter, headers=self.headers,
                                      timeout_s=self.settings.timeout_s, max_bytes=max_bytes)
                self._throttled = 0
                return resp
            except (http.Forbidden, http.RateLimited, http.Unavailable) as exc:
                self._throttled += 1
                pause = min(MAX_PAUSE_S, max(exc.retry_after or 0.0,
                                             self.settings.backoff_s * 2 ** (self._throttled - 1)))
                self.limiter.pause_for(pause)
                BACKOFFS.labels(SOURCE, f"http_{exc.status}").inc()
                log.warning("backfill.edgar_backoff", status=exc.status, url=url, pause_s=pause, attempt=attempt)
                last = exc
            except http.HttpError as exc:  # 404 and the like: asking again will not help
                raise FetchFailed(str(exc)) from exc
            except (aiohttp.ClientError, TimeoutError) as exc:
                last = exc
                await asyncio.sleep(backoff.next_delay())
        raise FetchFailed(f"{url}: {last!r} after {self.attempts} attempts")


class FilingBackfill:
    """Lists the window's filings and fetches those without a part."""

    def __init__(self, settings: BackfillSettings, filings: FilingsSettings, store: Store, window: Window,
                 clock_ns: Callable[[], int]) -> None:
        self.settings = settings
        self.filings = filings
        self.store = store
        self.window = window
        self.clock_ns = clock_ns
        self.forms = settings.forms or filings.forms
        self.tickers: dict[str, str] = {}  # CIK -> ticker
        self.failed: dict[str, str] = {}  # accession -> reason
        self.listing_failed: list[dict[str, str]] = []
        self.candidates: list[FilingRef] = []
        self.listed = False  # the candidates are known (listing finished)
        self.client: EdgarClient | None = None
        # Filing dates that can hold an acceptance inside the window: never before the acceptance's New York
        # date, and at most a long weekend after it (after 17:30 a filing is dated the next business day).
        self.first_day = iso(window.start - DAY_NS)[:10]
        self.last_day = iso(window.end + 5 * DAY_NS)[:10]

    def part(self, accession: str) -> Path:
        return self.store.path("edgar", "filings", f"{accession}.jsonl")

    async def run(self, session: aiohttp.ClientSession, bar: Any) -> None:
        self.client = EdgarClient(session, self.filings, self.settings.attempts)
        await self._load_tickers()
        refs = await (self._from_submissions() if self.settings.companies else self._from_full_index())
        self.candidates = self._one_per_accession(refs)
        self.listed = True
        todo = [r for r in self.candidates if not self.part(r.accession).is_file()]
        bar.reset(total=len(todo))
        queue: asyncio.Queue[FilingRef] = asyncio.Queue()
        for ref in todo:
            queue.put_nowait(ref)

        async def worker() -> None:
            while not queue.empty():
                ref = queue.get_nowait()
                await self._fetch(ref)
                bar.update(1)

        await asyncio.gather(*(worker() for _ in range(self.settings.concurrency)))

    # -- listing --------------------------------------------------------------------------------------------

    async def _cached(self, name: str, url: str, *, final: bool) -> bytes:
        """A listing file from the state directory, else fetched and kept.

        A file fetched before the window ended may lack filings accepted since: unless `final` (an
        older page, a past quarter's index), it is fetched again until a copy postdates the window.
        """
        path = self.store.path("edgar", name)
        meta_path = path.with_name(path.name + ".fetched")
        fetched_at = int(meta_path.read_text() or 0) if meta_path.is_file() else 0
        if path.is_file() and (final or fetched_at >= self.window.end):
            return path.read_bytes()
        assert self.client is not None
        resp = await self.client.get(url)
        write_atomic(path, resp.body)
        write_atomic(meta_path, str(self.clock_ns()).encode())
        return resp.body

    async def _load_tickers(self) -> None:
        mapping: dict[str, str] = {}
        self._by_ticker: dict[str, str] = {}
        if self.filings.tickers_url:
            try:
                body = await self._cached("company_tickers.json", self.filings.tickers_url, final=True)
                mapping = parse_company_tickers(body)
                self._by_ticker = ticker_ciks(body)
            except (FetchFailed, ValueError) as exc:
                log.error("backfill.tickers_unavailable", url=self.filings.tickers_url, error=str(exc))
                self.listing_failed.append({"what": "company_tickers.json", "reason": str(exc)})
        mapping.update({cik.zfill(10): t.upper() for cik, t in self.filings.cik_tickers.items()})
        self._by_ticker.update({t.upper(): cik.zfill(10) for cik, t in self.filings.cik_tickers.items()})
        self.tickers = mapping

    def company_ciks(self) -> list[str]:
        out = []
        for company in self.settings.companies:
            key = company.strip().upper()
            if key.isdigit():
                out.append(key.zfill(10))
            elif key in self._by_ticker:
                out.append(self._by_ticker[key])
            else:
                self.listing_failed.append({"what": company, "reason": "ticker not in company_tickers.json "
                                            "nor FINSIGNAL_FILINGS_CIK_TICKERS"})
        return list(dict.fromkeys(out))

    async def _from_submissions(self) -> list[FilingRef]:
        refs: list[FilingRef] = []
        base = self.settings.edgar_data_url.rstrip("/")
        for cik in self.company_ciks():
            name = f"CIK{cik}.json"
            try:
                data = submissions(await self._cached(f"submissions/{name}", f"{base}/submissions/{name}",
                                                      final=False))
                company = str(data.get("name") or "")
                refs += filing_rows(data["filings"].get("recent") or {}, cik, company)
                for page in older_pages(data):
                    if not overlaps(page, self.first_day, self.last_day):
                        continue
                    body = await self._cached(f"submissions/{page['name']}", f"{base}/submissions/{page['name']}",
                                              final=True)
                    refs += filing_rows(json.loads(body), cik, company)
            except (FetchFailed, EdgarHistoryError, ValueError) as exc:
                log.error("backfill.submissions_failed", cik=cik, error=str(exc))
                self.listing_failed.append({"what": f"submissions of CIK {cik}", "reason": str(exc)})
        return [r for r in refs if form_matches(r.form, self.forms) and self._may_be_inside(r)]

    async def _from_full_index(self) -> list[FilingRef]:
        refs: list[FilingRef] = []
        base = self.filings.base_url.rstrip("/")
        for year, q in quarters(self.first_day, self.last_day):
            final = (year, q) < _quarter_of(self.clock_ns())  # a past quarter's index no longer changes
            try:
                body = await self._cached(f"full-index/{year}-QTR{q}-form.idx",
                                          f"{base}/Archives/edgar/full-index/{year}/QTR{q}/form.idx", final=final)
                refs += parse_full_index(body)
            except (FetchFailed, EdgarHistoryError) as exc:
                log.error("backfill.full_index_failed", year=year, quarter=q, error=str(exc))
                self.listing_failed.append({"what": f"full index {year} QTR{q}", "reason": str(exc)})
        return [r for r in refs if form_matches(r.form, self.forms) and self._may_be_inside(r)]

    def _may_be_inside(self, ref: FilingRef) -> bool:
        return self.first_day <= ref.filing_date <= self.last_day

    def _one_per_accession(self, refs: list[FilingRef]) -> list[FilingRef]:
        """A filing with co-registrants is listed under each filer: keep the one that maps to a ticker, else
        the first listed (the company configured first, the full index's first row)."""
        best: dict[str, FilingRef] = {}
        for ref in refs:
            held = best.get(ref.accession)
            if held is None or (ref.cik in self.tickers and held.cik not in self.tickers):
                best[ref.accession] = ref
        return sorted(best.values(), key=lambda r: (r.filing_date, r.accession))

    # -- one filing -----------------------------------------------------------------------------------------

    async def _fetch(self, ref: FilingRef) -> None:
        try:
            doc = await self._document(ref)
        except FetchFailed as exc:
            self.failed[ref.accession] = str(exc)
            log.error("backfill.filing_failed", accession=ref.accession, error=str(exc))
            return
        except ValueError as exc:  # the contract refused what we built: say so, keep going
            self.failed[ref.accession] = f"document invalid: {exc}"
            log.error("backfill.filing_invalid", accession=ref.accession, error=str(exc))
            return
        # A filing accepted outside the window is recorded as an empty part: known, nothing to fetch again.
        records = [(doc.ts_event, doc.key, doc.to_bytes())] if doc is not None else []
        write_atomic(self.part(ref.accession), lines(records))

    async def _document(self, ref: FilingRef) -> Document | None:
        assert self.client is not None
        base = self.filings.base_url
        index_url = ref.index_url(base)
        accepted: int | None = None
        doc_url = ref.document_url(base)
        if self.settings.acceptance == "index" or doc_url is None or not ref.acceptance:
            index = await self.client.get(index_url)
            html = index.body.decode("utf-8", "replace")
            accepted = accepted_from_index(html)
            doc_url = doc_url or primary_document_url(html, ref.form, index.url)
        if accepted is None:
            accepted = (accepted_from_submissions(ref.acceptance) if ref.acceptance
                        else end_of_filing_date(ref.filing_date))
        if accepted not in self.window:
            return None
        text = ""
        if doc_url and ref.form.upper() in {f.upper() for f in self.filings.document_forms}:
            resp = await self.client.get(doc_url, max_bytes=self.filings.max_document_bytes)
            text = document_text(resp.body, resp.headers.get("Content-Type"), doc_url)
        items = ref.items or (items_of(text[:20_000]) if ref.form.upper().startswith("8-K") else ())
        title = f"{ref.form}: {ref.company}" if ref.company else ref.form
        if items:
            title += f" (Items {', '.join(items)})"
        body = (text or title)[: self.filings.max_body_chars]
        ticker = self.tickers.get(ref.cik)
        return Document.create(kind="filing", source="sec-edgar", title=title, body=body,
                               url=doc_url if text else index_url, symbols=[ticker] if ticker else [],
                               ts_event=accepted, ts_ingest=accepted, accession=ref.accession, cik=ref.cik,
                               form=ref.form)

    # -- assembly -------------------------------------------------------------------------------------------

    def collect(self) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """(recording lines, manifest entry) from the parts of this window's filings."""
        rows: list[dict[str, Any]] = []
        missing = []
        if not self.listed:  # interrupted while listing: keep what earlier runs fetched
            for path in sorted(self.store.path("edgar", "filings").glob("*.jsonl")):
                rows.extend(read_part(path))
        for ref in self.candidates if self.listed else []:
            path = self.part(ref.accession)
            if path.is_file():
                rows.extend(read_part(path))
            else:
                missing.append({"accession": ref.accession, "cik": ref.cik, "form": ref.form,
                                "reason": self.failed.get(ref.accession, "not fetched (interrupted)")})
        times = sorted(r["ts"] for r in rows)
        return rows, {
            "mode": "submissions" if self.settings.companies else "full-index",
            "companies": self.settings.companies, "forms": self.forms, "acceptance": self.settings.acceptance,
            "listed": len(self.candidates) if self.listed else None, "filings": len(rows),
            "first": iso(times[0]) if times else None, "last": iso(times[-1]) if times else None,
            "missing": missing, "listing_failed": self.listing_failed,
            "requests": self.client.requests if self.client else 0,
        }


def _quarter_of(ns: int) -> tuple[int, int]:
    import datetime as dt

    when = dt.datetime.fromtimestamp(ns / 1e9, tz=dt.timezone.utc)
    return when.year, (when.month - 1) // 3 + 1
