"""The EDGAR ingestor: poll getcurrent per form, fetch primary documents, publish one Document per filing.

Every request (feed polls, ticker map, index pages, documents) goes through one
`RateLimiter` so the whole ingestor stays under the SEC's 10 requests/s. An HTTP
403, 429 or 503 (EDGAR's "Request Rate Threshold Exceeded" page) pauses that limiter
for everyone, doubling up to 10 minutes; such a page is never parsed. A filing is
published once per accession number, marked seen only after Kafka acknowledged it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable

import aiohttp
import structlog

from ingest import http
from ingest.contracts import Document
from ingest.filings.edgar import (
    SEC_URL,
    CurrentFiling,
    EdgarParseError,
    Filer,
    attribute,
    co_registrant_ciks,
    document_text,
    index_filers,
    items_of,
    one_per_accession,
    parse_current_feed,
    primary_document_url,
    rebase,
)
from ingest.filings.settings import FilingsSettings
from ingest.kafka import DeadLetter
from ingest.limits import RateLimiter
from ingest.metrics import BACKOFFS, DEDUPES, ERRORS
from ingest.seen import SeenStore
from ingest.settings import TopicSettings
from ingest.sink import KafkaSink

log = structlog.get_logger(__name__)

SOURCE = "filings"
MAX_PAUSE_S = 600.0


class FilingsIngestor:
    """Polls EDGAR until stopped."""

    def __init__(self, settings: FilingsSettings, sink: KafkaSink, topics: TopicSettings,
                 session: aiohttp.ClientSession, seen: SeenStore, clock: Callable[[], int] = time.time_ns) -> None:
        self.user_agent = settings.require_user_agent()  # refuse to start anonymous
        self.settings = settings
        self.sink = sink
        self.topics = topics
        self.session = session
        self.seen = seen
        self.clock = clock
        self.limiter = RateLimiter(settings.max_requests_per_s, 1.0)
        self.tickers: dict[str, str] = {}
        self._in_flight: set[str] = set()
        self._throttled = 0  # consecutive throttling answers, for the doubling pause

    async def run(self, stop: asyncio.Event) -> None:
        await self._load_tickers()
        queue: asyncio.Queue[CurrentFiling] = asyncio.Queue(self.settings.queue_size)
        workers = [asyncio.create_task(self._worker(queue), name=f"edgar-worker-{i}")
                   for i in range(self.settings.workers)]
        try:
            while not stop.is_set():
                for form in self.settings.forms:
                    if stop.is_set():
                        break
                    try:
                        await self._poll_form(form, queue)
                    except Exception:  # noqa: BLE001 - one bad poll must not end the service
                        ERRORS.labels(SOURCE, "unexpected").inc()
                        log.exception("filings.poll_failed", form=form)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.settings.poll_interval_s)
        finally:
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)

    # -- requests -------------------------------------------------------------------------------------------

    async def _get(self, url: str, params: dict[str, str] | None = None, max_bytes: int = http.MAX_BODY_BYTES
                   ) -> http.Response:
        """One polite GET; throttling answers pause every EDGAR request and are raised, never parsed.

        An SEC URL (the feed's links are absolute) is fetched from the configured `base_url`.
        """
        url = rebase(url, self.settings.base_url)
        headers = {"User-Agent": self.user_agent, "Accept-Encoding": "gzip, deflate"}
        try:
            resp = await http.get(self.session, url, source=SOURCE, limiter=self.limiter, params=params,
                                  headers=headers, timeout_s=self.settings.timeout_s, max_bytes=max_bytes)
        except (http.Forbidden, http.RateLimited, http.Unavailable) as exc:
            self._throttled += 1
            pause = min(MAX_PAUSE_S, max(exc.retry_after or 0.0,
                                         self.settings.backoff_s * 2 ** (self._throttled - 1)))
            self.limiter.pause_for(pause)
            BACKOFFS.labels(SOURCE, f"http_{exc.status}").inc()
            log.warning("filings.backoff", status=exc.status, url=url, pause_s=pause)
            raise
        self._throttled = 0
        return resp

    async def _load_tickers(self) -> None:
        """CIK -> ticker from the SEC's company_tickers.json; configured pairs win. Failure is logged, not fatal."""
        mapping: dict[str, str] = {}
        if self.settings.tickers_url:
            try:
                resp = await self._get(self.settings.tickers_url)
                mapping = parse_company_tickers(resp.body)
            except (http.HttpError, aiohttp.ClientError, TimeoutError, ValueError) as exc:
                ERRORS.labels(SOURCE, "tickers").inc()
                log.error("filings.tickers_unavailable", url=self.settings.tickers_url, error=repr(exc))
        mapping.update({cik.zfill(10): t.upper() for cik, t in self.settings.cik_tickers.items()})
        self.tickers = mapping
        log.info("filings.tickers_loaded", companies=len(mapping))

    # -- feed -----------------------------------------------------------------------------------------------

    async def _poll_form(self, form: str, queue: asyncio.Queue[CurrentFiling]) -> None:
        url = f"{self.settings.base_url.rstrip('/')}/cgi-bin/browse-edgar"
        params = {"action": "getcurrent", "type": form, "company": "", "dateb": "", "owner": "include",
                  "start": "0", "count": str(self.settings.count), "output": "atom"}
        try:
            resp = await self._get(url, params)
        except (http.Forbidden, http.RateLimited, http.Unavailable):
            return  # paused; the next poll tries again
        except (http.HttpError, aiohttp.ClientError, TimeoutError) as exc:
            ERRORS.labels(SOURCE, "feed").inc()
            log.warning("filings.feed_failed", form=form, error=repr(exc))
            return
        try:
            entries = parse_current_feed(resp.body, SEC_URL)  # links kept public; `_get` rebases them
        except EdgarParseError as exc:
            await self.sink.dead_letter(DeadLetter(reason=f"getcurrent feed: {exc}", stage="filings.feed",
                                                   source_topic=resp.url), resp.body[:900_000])
            return
        filings = one_per_accession(entries, has_ticker=self._has_ticker)
        DEDUPES.labels(SOURCE, "feed_entry").inc(len(entries) - len(filings))
        seen = await self.seen.seen(f.accession for f in filings)
        fresh = 0
        for filing in sorted(filings, key=lambda f: f.updated_ns or 0):
            if filing.accession in seen or filing.accession in self._in_flight:
                DEDUPES.labels(SOURCE, "accession").inc()
                continue
            self._in_flight.add(filing.accession)
            await queue.put(filing)  # bounded: a slow document fetch slows the polling, not memory
            fresh += 1
        log.info("filings.polled", form=form, entries=len(entries), filings=len(filings), new=fresh)

    # -- documents ------------------------------------------------------------------------------------------

    async def _worker(self, queue: asyncio.Queue[CurrentFiling]) -> None:
        while True:
            filing = await queue.get()
            try:
                await self._publish(filing)
            except Exception:  # noqa: BLE001 - one filing's surprise must not stop the worker
                ERRORS.labels(SOURCE, "unexpected").inc()
                log.exception("filings.publish_failed", accession=filing.accession)
            finally:
                self._in_flight.discard(filing.accession)
                queue.task_done()

    def _has_ticker(self, cik: str) -> bool:
        return cik in self.tickers

    async def _publish(self, filing: CurrentFiling) -> None:
        url, text, filers = filing.index_url, "", []
        if filing.form.upper() in {f.upper() for f in self.settings.document_forms}:
            url, text, filers = await self._primary_text(filing)
        elif not self._has_ticker(filing.cik):
            filers = await self._index_filers(filing)  # a listed co-registrant may be beyond the feed page
        if filers:
            chosen = attribute(filers, filing.accession, self._has_ticker, primary_listed_first=True)
            if chosen.cik != filing.cik:
                log.info("filings.attributed", accession=filing.accession, feed_cik=filing.cik, cik=chosen.cik)
            filing = filing.attributed_to(chosen)
        else:
            filers = list(filing.filers)
        items = items_of(f"{filing.summary}\n{text[:20_000]}") if filing.form.upper().startswith("8-K") else ()
        body = text or filing.summary
        if len(body) > self.settings.max_body_chars:
            log.info("filings.body_cut", accession=filing.accession, chars=len(body))
            body = body[: self.settings.max_body_chars]
        title = f"{filing.form}: {filing.company}" if filing.company else filing.form
        if items:
            title += f" (Items {', '.join(items)})"
        chosen = Filer(filing.cik, filing.company, filing.role)
        symbols = [self.tickers[c] for c in co_registrant_ciks(filers or [chosen], chosen) if c in self.tickers]
        now = self.clock()
        try:
            doc = Document.create(kind="filing", source="sec-edgar", title=title, body=body, url=url,
                                  symbols=symbols, ts_event=filing.updated_ns or now,
                                  ts_ingest=now, accession=filing.accession, cik=filing.cik, form=filing.form)
        except ValueError as exc:
            raw = json.dumps({"accession": filing.accession, "cik": filing.cik, "form": filing.form,
                              "title": title, "url": url}).encode()
            await self.sink.dead_letter(DeadLetter(reason=f"filing invalid: {exc}", stage="filings.document",
                                                   source_topic=filing.index_url), raw)
            return
        ack = await self.sink.publish(self.topics.filings, doc.key, doc.to_bytes(), kind="filing", ack=True)
        assert ack is not None
        await ack  # raises if Kafka refused it: then it is not marked and the next poll retries
        await self.seen.mark([filing.accession])
        log.info("filings.published", accession=filing.accession, form=filing.form, cik=filing.cik,
                 symbols=list(doc.symbols), items=list(items), chars=len(body))

    async def _primary_text(self, filing: CurrentFiling) -> tuple[str, str, list[Filer]]:
        """(URL, text, filers of the index page) of the primary document; (index URL, "", ...) when unavailable."""
        filers: list[Filer] = []
        for attempt in range(1, self.settings.document_attempts + 1):
            try:
                index = await self._get(filing.index_url)
                html = index.body.decode("utf-8", "replace")
                filers = index_filers(html)
                # Joined to the public index URL, not the fetched one: the published URL stays www.sec.gov's.
                doc_url = primary_document_url(html, filing.form, filing.index_url)
                if doc_url is None:
                    log.warning("filings.no_primary_document", accession=filing.accession, index=filing.index_url)
                    return filing.index_url, "", filers
                doc = await self._get(doc_url, max_bytes=self.settings.max_document_bytes)
                return doc_url, document_text(doc.body, doc.headers.get("Content-Type"), doc_url), filers
            except (http.Forbidden, http.RateLimited, http.Unavailable):
                continue  # the limiter is paused: the next attempt waits it out
            except (http.HttpError, aiohttp.ClientError, TimeoutError) as exc:
                ERRORS.labels(SOURCE, "document").inc()
                log.warning("filings.document_failed", accession=filing.accession, error=repr(exc),
                            attempt=attempt)
        log.error("filings.document_unavailable", accession=filing.accession, index=filing.index_url)
        return filing.index_url, "", filers

    async def _index_filers(self, filing: CurrentFiling) -> list[Filer]:
        """Filers named on the filing's index page; none when it cannot be had (the feed's then stand)."""
        try:
            return index_filers((await self._get(filing.index_url)).body.decode("utf-8", "replace"))
        except (http.HttpError, aiohttp.ClientError, TimeoutError) as exc:
            ERRORS.labels(SOURCE, "index").inc()
            log.warning("filings.index_failed", accession=filing.accession, error=repr(exc))
            return []


def parse_company_tickers(body: bytes) -> dict[str, str]:
    """`{"0": {"cik_str": 320193, "ticker": "AAPL", "title": "Apple Inc."}, ...}` -> {"0000320193": "AAPL"}.

    The file lists share classes in order of importance, so the first ticker of a CIK is kept.
    """
    data = json.loads(body)
    rows = data.values() if isinstance(data, dict) else data
    out: dict[str, str] = {}
    for row in rows:
        try:
            cik, ticker = str(int(row["cik_str"])).zfill(10), str(row["ticker"]).upper()
        except (KeyError, TypeError, ValueError):
            continue
        out.setdefault(cik, ticker)
    if not out:
        raise ValueError("company tickers file has no usable rows")
    return out
