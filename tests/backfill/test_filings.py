"""EDGAR backfill: submissions JSON and its older pages, the quarterly full index, acceptance times from the
index page (New York time), 8-K items, CIK -> ticker, the fair-access limit, 429 / 503 mid-way, and a filing
that cannot be had listed as missing."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from ingest.backfill.edgar_index import (
    accepted_from_index,
    accepted_from_submissions,
    end_of_filing_date,
    form_matches,
    parse_full_index,
    quarters,
)
from ingest.backfill.window import Window, parse_bound
from ingest.contracts import decode_document
from tests.backfill.helpers import USER_AGENT, WINDOW, config_for, run
from tests.backfill.servers import EDGAR_ROOT, EdgarArchive
from tests.ingest.servers import http_server

AAPL = "Archives/edgar/data/320193"


def t(text: str) -> int:
    return parse_bound(text, end=False)


def test_acceptance_times_read_new_york_time_and_the_ambiguous_json_value_is_read_late():
    html = (EDGAR_ROOT / AAPL / "000032019324000057" / "0000320193-24-000057-index.htm").read_text()
    assert accepted_from_index(html) == t("2024-05-02T20:30:31Z")  # 16:30:31 EDT
    assert accepted_from_index(html.replace("2024-05-02 16:30:31", "2024-01-02 16:30:31")) == t("2024-01-02T21:30:31Z")
    assert accepted_from_index("<html>no accepted here</html>") is None
    # "2024-05-02T16:30:31.000Z" is UTC for some filers and New York time with a false Z for others: the later.
    assert accepted_from_submissions("2024-05-02T16:30:31.000Z") == t("2024-05-02T20:30:31Z")
    assert end_of_filing_date("2024-05-03") == t("2024-05-04T04:00:00Z")


def test_full_index_rows_and_quarters_and_form_filter():
    rows = parse_full_index((EDGAR_ROOT / "Archives/edgar/full-index/2024/QTR2/form.idx").read_bytes())
    assert len(rows) == 7
    sc = next(r for r in rows if r.form.startswith("SC"))
    assert (sc.form, sc.company, sc.cik, sc.filing_date) == ("SC 13G/A", "Apple Inc.", "0000320193", "2024-05-10")
    msft = next(r for r in rows if r.cik == "0000789019")
    assert (msft.accession, msft.company) == ("0001193125-24-150101", "MICROSOFT CORP")
    assert quarters("2024-03-31", "2024-06-30") == [(2024, 1), (2024, 2)]
    assert quarters("2024-12-30", "2025-01-04") == [(2024, 4), (2025, 1)]
    assert form_matches("8-K/A", ["8-K"]) and not form_matches("8-K12B", ["8-K"]) and form_matches("10-q", ["10-Q"])


def backfill(tmp_path: Path, server: EdgarArchive, window: Window = WINDOW, **kw) -> dict:
    async def go():
        async with http_server({"/{tail:.*}": server.handle}) as url:
            config = config_for("http://127.0.0.1:9", url, sources=["filings"], **kw)
            return await run(tmp_path, config, window)
    return asyncio.run(go())


def documents(out: Path) -> list:
    return [decode_document(json.loads(line)["value"]) for line in (out / "filings.jsonl").read_text().splitlines()]


def test_companies_from_submissions_and_older_pages_through_a_503_and_a_429(tmp_path):
    server = EdgarArchive(fail_at={3: 503, 7: 429})
    manifest = backfill(tmp_path, server)

    paths = server.paths()
    assert "/submissions/CIK0000320193-submissions-001.json" in paths  # reaches into the window
    assert "/submissions/CIK0000320193-submissions-002.json" not in paths  # 1994 .. March 2024: not asked
    assert len(paths) == len(set(paths))  # nothing answered was asked again
    assert [r.status for r in server.requests if r.status != 200] == [503, 429]
    assert all(r.headers.get("User-Agent") == USER_AGENT for r in server.requests)

    docs = {d.accession: d for d in documents(tmp_path)}
    # 000052 was dated May 1 but accepted April 30, 17:45 New York time: before the window, not in it.
    # 000075 is dated July 1 but was accepted Friday June 28 after 17:30 New York time: inside the window.
    assert sorted(docs) == ["0000320193-24-000057", "0000320193-24-000061", "0000320193-24-000069",
                            "0000320193-24-000075", "0001193125-24-150101"]
    assert docs["0000320193-24-000075"].ts_event == t("2024-06-28T21:52:10Z")
    q2 = docs["0000320193-24-000057"]
    assert q2.ts_event == q2.ts_ingest == t("2024-05-02T20:30:31Z")  # the index page's 16:30:31 EDT
    assert q2.title == "8-K: Apple Inc. (Items 2.02, 9.01)" and q2.symbols == ("AAPL",)
    assert "share repurchase program" in q2.body and q2.cik == "0000320193" and q2.form == "8-K"
    assert q2.url.endswith("/Archives/edgar/data/320193/000032019324000057/aapl-20240502.htm")
    assert docs["0001193125-24-150101"].symbols == ("MSFT",)  # CIK -> ticker through company_tickers.json
    assert docs["0001193125-24-150101"].title == "8-K: MICROSOFT CORP (Items 5.02)"
    assert docs["0000320193-24-000061"].title == "10-Q: Apple Inc."
    lines = [json.loads(line) for line in (tmp_path / "filings.jsonl").read_text().splitlines()]
    assert [line["ts"] for line in lines] == sorted(d.ts_event for d in docs.values())

    report = manifest["backfill"]["sources"]["filings"]
    assert (report["mode"], report["listed"], report["filings"], report["missing"]) == ("submissions", 6, 5, [])
    assert report["first"] == "2024-05-02T20:30:31Z" and manifest["backfill"]["complete"]


def test_acceptance_from_the_submissions_json_saves_the_index_pages(tmp_path):
    server = EdgarArchive()
    backfill(tmp_path, server, acceptance="submissions")
    assert not [p for p in server.paths() if p.endswith("-index.htm")]
    q2 = next(d for d in documents(tmp_path) if d.accession == "0000320193-24-000057")
    assert q2.ts_event == t("2024-05-02T20:30:31Z")  # the later reading of "16:30:31.000Z"


def test_every_filer_of_some_forms_from_the_full_index(tmp_path):
    server = EdgarArchive()
    manifest = backfill(tmp_path, server, companies=[], forms=["8-K"])
    paths = server.paths()
    # QTR3 too: a filing dated July 1 can have been accepted inside the window.
    assert {"/Archives/edgar/full-index/2024/QTR2/form.idx", "/Archives/edgar/full-index/2024/QTR3/form.idx"} <= \
        set(paths) and not any("/submissions/" in p for p in paths)
    docs = {d.accession: d for d in documents(tmp_path)}
    assert sorted(docs) == ["0000320193-24-000057", "0000320193-24-000069", "0000320193-24-000075",
                            "0001193125-24-150101"]
    q2 = docs["0000320193-24-000057"]
    # The full index names neither the document nor the items: both come from the index page and the text.
    assert q2.title == "8-K: Apple Inc. (Items 2.02, 9.01)" and q2.ts_event == t("2024-05-02T20:30:31Z")
    assert q2.url.endswith("/aapl-20240502.htm")
    assert manifest["backfill"]["sources"]["filings"]["mode"] == "full-index"


def test_requests_stay_within_the_fair_access_limit(tmp_path):
    import time

    stamps: list[float] = []
    server = EdgarArchive(on_success=lambda n: stamps.append(time.monotonic()))
    config_rate = 5
    async def go():
        async with http_server({"/{tail:.*}": server.handle}) as url:
            config = config_for("http://127.0.0.1:9", url, sources=["filings"])
            config.filings = config.filings.model_copy(update={"max_requests_per_s": config_rate})
            return await run(tmp_path, config)
    asyncio.run(go())
    assert len(stamps) > 2 * config_rate
    # Any rate+1 consecutive answers span at least a second (measured on the server: a lower bound only).
    assert min(b - a for a, b in zip(stamps, stamps[config_rate:])) >= 0.9


def test_a_filing_that_cannot_be_fetched_is_listed_as_missing_and_fetched_by_the_rerun(tmp_path):
    doc = EDGAR_ROOT / AAPL / "000032019324000061" / "aapl-20240330.htm"
    server = EdgarArchive(root=_copy_tree(tmp_path / "archive"))
    (server.root / doc.relative_to(EDGAR_ROOT)).unlink()  # a 404, as a document not yet mirrored
    out = tmp_path / "out"
    first = backfill(out, server)
    missing = first["backfill"]["sources"]["filings"]["missing"]
    assert [m["accession"] for m in missing] == ["0000320193-24-000061"] and "404" in missing[0]["reason"]
    assert not first["backfill"]["complete"] and len(documents(out)) == 4
    (server.root / doc.relative_to(EDGAR_ROOT)).write_bytes(doc.read_bytes())
    asked = len(server.requests)
    second = backfill(out, server)
    assert [r.path for r in server.requests[asked:]] == [
        f"/{AAPL}/000032019324000061/0000320193-24-000061-index.htm", f"/{AAPL}/000032019324000061/aapl-20240330.htm"]
    assert second["backfill"]["complete"] and len(documents(out)) == 5


def test_an_unknown_ticker_is_reported_not_guessed(tmp_path):
    manifest = backfill(tmp_path, EdgarArchive(), companies=["AAPL", "NOSUCH"])
    report = manifest["backfill"]["sources"]["filings"]
    assert report["listing_failed"] == [{"what": "NOSUCH", "reason": "ticker not in company_tickers.json nor "
                                                                    "FINSIGNAL_FILINGS_CIK_TICKERS"}]
    assert report["filings"] == 4 and not manifest["backfill"]["complete"]


def _copy_tree(dest: Path) -> Path:
    import shutil

    shutil.copytree(EDGAR_ROOT, dest)
    return dest.resolve()


def test_a_filing_listed_under_co_registrants_goes_to_the_filer_with_a_ticker(tmp_path):
    from ingest.backfill.edgar_index import FilingRef
    from ingest.backfill.filings import FilingBackfill
    from ingest.backfill.settings import BackfillSettings
    from ingest.backfill.store import Store
    from ingest.filings.settings import FilingsSettings

    fb = FilingBackfill(BackfillSettings(), FilingsSettings(), Store(tmp_path), WINDOW, clock_ns=lambda: 0)
    fb.tickers = {"0001326160": "DUK"}
    sub = FilingRef("0001326160-24-000055", "0000030371", "DUKE ENERGY CAROLINAS, LLC", "8-K", "2024-05-29")
    parent = FilingRef("0001326160-24-000055", "0001326160", "DUKE ENERGY CORP", "8-K", "2024-05-29")
    other = FilingRef("0000030371-24-000010", "0000030371", "DUKE ENERGY CAROLINAS, LLC", "10-Q", "2024-05-07")
    kept = fb._one_per_accession([sub, other, parent])
    assert kept == [other, parent]  # the parent with a ticker, though the subsidiary was listed first
