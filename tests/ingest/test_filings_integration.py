"""The EDGAR ingestor against a local EDGAR stand-in, onto the real broker."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest
from aiohttp import web

from ingest.contracts import decode_document
from ingest.filings.service import FilingsIngestor
from ingest.filings.settings import FilingsConfigError, FilingsSettings
from ingest.kafka import ensure_topics
from ingest.runner import make_sink
from ingest.seen import MemorySeen
from tests.ingest.kafka_io import read_topic
from tests.ingest.servers import fixture, http_server, until

pytestmark = pytest.mark.integration

UA = "Finsignal Tests ops@finsignal.test"


class Edgar:
    """www.sec.gov, as far as the ingestor uses it; the first 8-K feed request and Apple's document get a 503."""

    def __init__(self) -> None:
        self.base = ""
        self.hits: list[tuple[float, str, str]] = []  # (monotonic time, path?query, user agent)
        self.fail_once = {"/cgi-bin/browse-edgar?type=8-K", "/Archives/edgar/data/320193/000032019324000069/"
                          "aapl-20240529.htm"}

    def _body(self, name: str) -> bytes:
        return fixture("edgar", name).read_bytes()  # as the SEC serves it: absolute https://www.sec.gov links

    async def handle(self, request: web.Request) -> web.Response:
        self.hits.append((time.monotonic(), request.path_qs, request.headers.get("User-Agent", "")))
        key = request.path + (f"?type={request.query.get('type')}" if "type" in request.query else "")
        if key in self.fail_once:
            self.fail_once.discard(key)
            return web.Response(status=503, body=self._body("rate_limited.html"), content_type="text/html")
        if request.path == "/cgi-bin/browse-edgar":
            assert request.query["action"] == "getcurrent" and request.query["output"] == "atom"
            return web.Response(body=self._body(f"getcurrent_{request.query['type']}.atom"),
                                content_type="application/atom+xml")
        if request.path == "/files/company_tickers.json":
            return web.Response(body=self._body("company_tickers.json"), content_type="application/json")
        name = request.path.rsplit("/", 1)[-1]
        if name.endswith("-index.htm"):
            name = f"index_{name.removesuffix('-index.htm')}.htm"
        if fixture("edgar", name).is_file():
            return web.Response(body=self._body(name), content_type="text/html")
        return web.Response(status=404, text="Not Found")


def test_filings_deduped_by_accession_with_cik_ticker_items_and_text(kafka_settings, topics):
    ensure_topics(kafka_settings, topics.all())
    edgar = Edgar()

    async def scenario() -> None:
        async with http_server({"/{tail:.*}": edgar.handle}) as base:
            edgar.base = base
            settings = FilingsSettings(user_agent=UA, base_url=base, tickers_url=f"{base}/files/company_tickers.json",
                                       backoff_s=0.1, poll_interval_s=0.2, forms=["8-K", "10-Q", "10-K"])
            sink = make_sink(kafka_settings, topics, "filings", 100)
            await sink.start()
            stop = asyncio.Event()
            async with aiohttp.ClientSession() as session:
                ingestor = FilingsIngestor(settings, sink, topics, session, MemorySeen())
                task = asyncio.create_task(ingestor.run(stop))
                try:
                    await until(lambda: sink.sent >= 5)
                    # another full round of polls, which must publish nothing new
                    polls = sum("browse-edgar" in h[1] for h in edgar.hits)
                    await until(lambda: sum("browse-edgar" in h[1] for h in edgar.hits) >= polls + 3)
                    await until(lambda: not ingestor._in_flight)
                finally:
                    stop.set()
                    await asyncio.wait_for(task, 10)
                    await sink.close()

    asyncio.run(scenario())

    records = read_topic(kafka_settings, topics.filings, 5)
    docs = {d.accession: d for d in (decode_document(r.value) for r in records)}
    assert len(records) == 5 and len(docs) == 5  # Duke's two entries are one filing, Southern's two too
    assert all(r.key == decode_document(r.value).id.encode() for r in records)

    apple = docs["0000320193-24-000069"]
    assert (apple.cik, apple.symbols, apple.form, apple.kind) == ("0000320193", ("AAPL",), "8-K", "filing")
    assert apple.title == "8-K: Apple Inc. (Items 2.02, 9.01)"
    assert "Item 2.02 Results of Operations and Financial Condition." in apple.body
    assert "second fiscal quarter ended March 30, 2024" in apple.body
    assert "must not appear" not in apple.body and "EntityCentralIndexKey" not in apple.body
    # fetched from the configured base URL (this server), published with the public SEC URL
    assert apple.url == "https://www.sec.gov/Archives/edgar/data/320193/000032019324000069/aapl-20240529.htm"
    assert any(path == "/Archives/edgar/data/320193/000032019324000069/aapl-20240529.htm" for _, path, _ in edgar.hits)

    msft = docs["0001193125-24-150101"]  # filed by an agent: the accession prefix is not Microsoft's CIK
    assert (msft.cik, msft.symbols) == ("0000789019", ("MSFT",))
    assert msft.title == "8-K: MICROSOFT CORP (Items 5.02)" and "elected a new independent director" in msft.body

    duke = docs["0001326160-24-000112"]  # co-registrants: the listed parent kept; no index page -> summary
    assert (duke.cik, duke.symbols) == ("0001326160", ("DUK",))
    assert "Item 8.01: Other Events" in duke.body and duke.title.endswith("(Items 8.01, 9.01)")

    # Co-registrants, the feed page naming only two unlisted subsidiaries: the index page names the parent,
    # which maps to a ticker, so the filing is Southern Co's.
    southern = docs["0001193125-24-151488"]
    assert (southern.cik, southern.symbols) == ("0000092122", ("SO",))
    assert southern.title == "8-K: SOUTHERN CO (Items 7.01, 9.01)" and "updated capital plan" in southern.body
    assert southern.url == "https://www.sec.gov/Archives/edgar/data/92122/000119312524151488/d830012d8k.htm"

    nvda = docs["0001045810-24-000124"]
    assert (nvda.form, nvda.symbols, nvda.cik) == ("10-Q", ("NVDA",), "0001045810")
    assert "Data Center revenue was a record $22.6 billion" in nvda.body and "(Items" not in nvda.title

    # Every request declared the User-Agent; the 503 pages were backed off from, never parsed or dead-lettered.
    assert {ua for _, _, ua in edgar.hits} == {UA}
    assert not edgar.fail_once
    assert read_topic(kafka_settings, topics.deadletter, None, timeout_s=2, settle_s=0.3) == []


def test_filings_refuses_to_start_without_a_declared_user_agent():
    for ua in (None, "", "finsignal", "Finsignal Research"):
        with pytest.raises(FilingsConfigError):
            FilingsIngestor(FilingsSettings(user_agent=ua), None, None, None, MemorySeen())  # type: ignore[arg-type]


def test_without_fetching_documents_an_unlisted_feed_pick_still_reads_the_index_page_for_its_filers(
        kafka_settings, topics):
    ensure_topics(kafka_settings, topics.all())
    edgar = Edgar()
    edgar.fail_once.clear()

    async def scenario() -> None:
        async with http_server({"/{tail:.*}": edgar.handle}) as base:
            settings = FilingsSettings(user_agent=UA, base_url=base, tickers_url=f"{base}/files/company_tickers.json",
                                       forms=["8-K"], document_forms=[], poll_interval_s=0.2)
            sink = make_sink(kafka_settings, topics, "filings", 100)
            await sink.start()
            stop = asyncio.Event()
            async with aiohttp.ClientSession() as session:
                ingestor = FilingsIngestor(settings, sink, topics, session, MemorySeen())
                task = asyncio.create_task(ingestor.run(stop))
                try:
                    await until(lambda: sink.sent >= 4)
                finally:
                    stop.set()
                    await asyncio.wait_for(task, 10)
                    await sink.close()

    asyncio.run(scenario())
    docs = {d.accession: d for d in (decode_document(r.value) for r in read_topic(kafka_settings, topics.filings, 4))}
    southern = docs["0001193125-24-151488"]
    assert (southern.cik, southern.symbols, southern.title) == ("0000092122", ("SO",), "8-K: SOUTHERN CO (Items 7.01, 9.01)")
    assert "Item 7.01: Regulation FD Disclosure" in southern.body  # the feed summary: no document fetched
    index_hits = [path for _, path, _ in edgar.hits if path.endswith("-index.htm")]
    assert index_hits == ["/Archives/edgar/data/3153/000119312524151488/0001193125-24-151488-index.htm"]  # only it
