"""An interrupted backfill, rerun, asks only for what it had not stored: counted on the servers. The result is
the same recording, byte for byte, as a backfill that was never interrupted."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from ingest.backfill.news import NewsImport
from ingest.backfill.store import BackfillStateError
from ingest.backfill.window import Window
from tests.backfill.helpers import bybit_server, recording_bytes, run, served
from tests.backfill.servers import EdgarArchive, Request
from tests.backfill.test_archive import FIXTURE

NEWS = [NewsImport(FIXTURE, source="archive:wire")]


def unit(out: Path, request: Request) -> Path:
    """The file under .backfill/ that the answer to `request` ends up in."""
    state = out / ".backfill"
    if request.path == "/v5/market/kline":
        q = request.query
        return state / "bybit" / q["category"] / q["symbol"] / q["interval"] / f"{q['start']}.jsonl"
    if request.path == "/files/company_tickers.json":
        return state / "edgar" / "company_tickers.json"
    if request.path.startswith("/submissions/"):
        return state / "edgar" / "submissions" / request.path.rsplit("/", 1)[1]
    folder = request.path.split("/")[5]  # /Archives/edgar/data/<cik>/<accession without dashes>/<file>
    return state / "edgar" / "filings" / f"{folder[:10]}-{folder[10:12]}-{folder[12:]}.jsonl"


def test_rerun_after_an_interruption_fetches_only_what_is_missing_and_gives_the_same_recording(tmp_path):
    reference, out = tmp_path / "reference", tmp_path / "out"
    bybit, edgar = bybit_server(), EdgarArchive()
    holder: dict[str, asyncio.Task] = {}
    marks: dict[str, int] = {}

    def interrupt_after(n: int):
        def check(_: int) -> None:
            if len(bybit.ok()) + len(edgar.ok()) - marks["ok"] == n and "task" in holder:
                holder["task"].cancel()  # as Ctrl-C does to asyncio.run's main task
        return check

    async def scenario():
        # One pair of servers throughout: documents record the URL they were fetched from.
        async with served(bybit, edgar) as config:
            assert (await run(reference, config, news=NEWS))["backfill"]["complete"]
            marks.update(bybit=len(bybit.requests), edgar=len(edgar.requests), ok=len(bybit.ok()) + len(edgar.ok()))
            bybit.fail_at = {marks["bybit"] + 4: 429}
            edgar.fail_at = {marks["edgar"] + 5: 503}
            bybit.on_success = edgar.on_success = interrupt_after(9)
            holder["task"] = asyncio.create_task(run(out, config, news=NEWS))
            with pytest.raises(asyncio.CancelledError):
                await holder["task"]
            marks.update(bybit2=len(bybit.requests), edgar2=len(edgar.requests))
            bybit.on_success = edgar.on_success = lambda n: None
            stored = {p for p in (out / ".backfill").rglob("*") if p.is_file()}
            manifest = await run(out, config, news=NEWS)
            return stored, manifest

    stored, manifest = asyncio.run(scenario())
    one_run = [r for r in bybit.requests[:marks["bybit"]] + edgar.requests[:marks["edgar"]] if r.status == 200]
    first = [r for r in bybit.requests[marks["bybit"]:marks["bybit2"]] + edgar.requests[marks["edgar"]:marks["edgar2"]]
             if r.status == 200]
    again = [r for r in bybit.requests[marks["bybit2"]:] + edgar.requests[marks["edgar2"]:] if r.status == 200]
    assert 9 <= len(first) <= 9 + 8 and [r.status for r in bybit.requests[marks["bybit"]:] if r.status != 200] == [429]
    assert 0 < len([p for p in stored if p.parent.name in ("60", "filings")])

    # Nothing that the first run had stored was asked for again ...
    assert not [r.path for r in again if unit(out, r) in stored]
    # ... and what was asked, with what was stored, is what one uninterrupted run asks for.
    needed = {unit(reference, r).relative_to(reference) for r in one_run}
    assert needed <= {unit(out, r).relative_to(out) for r in again} | {p.relative_to(out) for p in stored}
    assert len(first) + len(again) - len(one_run) <= 8  # at most the answers in flight when interrupted
    assert manifest["backfill"]["complete"]
    assert recording_bytes(out) == recording_bytes(reference)
    assert set(recording_bytes(out)) == {"filings.jsonl", "market.bybit.kline.jsonl", "news.jsonl"}

    # A third run has nothing left to ask.
    async def third():
        async with served(bybit, edgar) as config:
            return await run(out, config, news=NEWS)
    before = len(bybit.requests) + len(edgar.requests)
    asyncio.run(third())
    assert len(bybit.requests) + len(edgar.requests) == before


def test_an_output_directory_of_another_window_is_refused(tmp_path):
    async def go(window: Window):
        async with served(bybit_server(), EdgarArchive()) as config:
            return await run(tmp_path, config, window)
    asyncio.run(go(Window.parse("2024-06-01", "2024-06-02")))
    with pytest.raises(BackfillStateError, match="holds a backfill of 2024-06-01T00:00:00Z"):
        asyncio.run(go(Window.parse("2024-06-01", "2024-06-03")))
