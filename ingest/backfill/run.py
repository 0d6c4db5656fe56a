"""`finsignal backfill`: the sources fetched side by side into parts, then one recording assembled from them.

The recording (`<topic>.jsonl` + `manifest.json`) is what `finsignal replay`, `run --replay` and
`backtest` read. Its manifest adds a `backfill` section: the window, per source what span is covered
and what is missing (and why), and whether the backfill is complete. Backfilled records carry
`ts_ingest = ts_event`: nothing was seen live, and the earliest a live ingestor could have seen a
record is when it happened, so `--time-basis ingest` backtests read the same times. Assembly also
runs when the backfill is interrupted (Ctrl-C), so what was fetched is usable at once.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import structlog

from ingest.backfill.filings import FilingBackfill
from ingest.backfill.klines import KlineBackfill
from ingest.backfill.news import NewsImport, import_archive
from ingest.backfill.settings import BackfillSettings
from ingest.backfill.store import Store, read_part, sortable
from ingest.backfill.window import Window
from ingest.bybit.settings import BybitSettings
from ingest.filings.settings import FilingsConfigError, FilingsSettings
from ingest.news.settings import NewsSettings
from ingest.settings import TopicSettings

log = structlog.get_logger(__name__)

TS_INGEST_NOTE = "ts_ingest = ts_event: backfilled, never seen live; the earliest a live ingestor could have seen it"


@dataclass
class BackfillConfig:
    """Everything one backfill reads; each part defaults to its settings model (env + TOML)."""

    backfill: BackfillSettings = field(default_factory=BackfillSettings)
    bybit: BybitSettings = field(default_factory=BybitSettings)
    filings: FilingsSettings = field(default_factory=FilingsSettings)
    news: NewsSettings = field(default_factory=NewsSettings)
    topics: TopicSettings = field(default_factory=TopicSettings)
    sources_explicit: bool = False  # the user named the sources: a missing User-Agent is an error, not a skip


def backfill(window: Window, out: Path, config: BackfillConfig | None = None, *, news: list[NewsImport] = (),
             progress: bool = False, clock_ns: Callable[[], int] = time.time_ns) -> dict[str, Any]:
    """Run a backfill into `out`; returns the manifest written."""
    return asyncio.run(backfill_async(window, out, config or BackfillConfig(), news=list(news), progress=progress,
                                      clock_ns=clock_ns))


async def backfill_async(window: Window, out: Path, config: BackfillConfig, *, news: list[NewsImport] = (),
                         progress: bool = False, clock_ns: Callable[[], int] = time.time_ns) -> dict[str, Any]:
    from tqdm.auto import tqdm

    store = Store(out)
    store.bind_window(window.as_json())
    for spec in news:
        import_archive(spec, window, store, config.news)
    skipped: dict[str, str] = {}
    klines = KlineBackfill(config.bybit, store, window, config.backfill.kline_chunk, config.backfill.concurrency,
                           clock_ns)
    filings = FilingBackfill(config.backfill, config.filings, store, window, clock_ns)
    tasks = []
    bars = []
    async with aiohttp.ClientSession() as session:
        if "bybit" in config.backfill.sources and config.bybit.categories():
            bar = tqdm(desc="bybit klines", unit="chunk", total=0, disable=not progress, position=len(bars))
            bars.append(bar)
            tasks.append(klines.run(session, bar))
        else:
            skipped["bybit"] = "not in FINSIGNAL_BACKFILL_SOURCES" if "bybit" not in config.backfill.sources \
                else "no symbols configured"
        if "filings" in config.backfill.sources:
            try:
                config.filings.require_user_agent()
            except FilingsConfigError as exc:
                if config.sources_explicit:
                    raise
                skipped["filings"] = str(exc)
                log.error("backfill.filings_skipped", reason=str(exc))
            else:
                bar = tqdm(desc="edgar filings", unit="filing", total=0, disable=not progress, position=len(bars))
                bars.append(bar)
                tasks.append(filings.run(session, bar))
        else:
            skipped["filings"] = "not in FINSIGNAL_BACKFILL_SOURCES"
        try:
            await asyncio.gather(*tasks)
        finally:
            for bar in bars:
                bar.close()
            manifest = assemble(store, window, config, klines, filings, skipped, clock_ns())
    return manifest


def assemble(store: Store, window: Window, config: BackfillConfig, klines: KlineBackfill, filings: FilingBackfill,
             skipped: dict[str, str], now_ns: int) -> dict[str, Any]:
    """Write the recording from every part on disk, and its manifest."""
    kline_rows, series = klines.collect(now_ns)
    filing_rows, filing_report = filings.collect()
    news_rows: list[dict[str, Any]] = []
    archives = []
    for meta_path in sorted(store.path("news").glob("*.meta.json")):
        meta = json.loads(meta_path.read_text())
        archives.append(meta)
        news_rows.extend(read_part(store.path("news", meta["part"])))
    news_rows = _one_per_key(news_rows)  # one story in two archives is one document
    sources: dict[str, Any] = {}
    bybit_gaps = [m for s in series for m in s["missing"] if not m["reason"].startswith("none served")]
    sources["bybit"] = {"status": f"skipped: {skipped['bybit']}" if "bybit" in skipped else
                        ("complete" if not bybit_gaps else "incomplete"), "series": series,
                        "invalid_rows": klines.invalid}
    sources["filings"] = {"status": f"skipped: {skipped['filings']}" if "filings" in skipped else
                          ("complete" if filings.listed and not filing_report["missing"]
                           and not filing_report["listing_failed"] else "incomplete"), **filing_report}
    sources["news"] = {"status": "complete" if archives else "none imported", "archives": archives,
                       "documents": len(news_rows)}
    complete = all(s["status"] in ("complete", "none imported") or s["status"].startswith("skipped")
                   for s in sources.values())
    manifest = {"created_ns": now_ns, "backfill": {"window": window.as_json(), "complete": complete,
                                                   "ts_ingest": TS_INGEST_NOTE, "sources": sources}}
    counts = store.assemble({config.topics.kline: kline_rows, config.topics.filings: [sortable(filing_rows)],
                             config.topics.news: [sortable(news_rows)]}, manifest)
    log.info("backfill.assembled", out=str(store.out), topics=counts, complete=complete)
    return {"format": 1, "topics": counts, **manifest}


def _one_per_key(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    best: dict[str, dict[str, Any]] = {}
    for row in sorted(rows, key=lambda r: (r["ts"], r.get("value") or "")):
        best.setdefault(row.get("key") or row.get("value"), row)
    return list(best.values())


def summary_lines(manifest: dict[str, Any]) -> list[str]:
    """What the terminal shows after a backfill: records per topic, and per source what is covered or missing."""
    info = manifest["backfill"]
    out = [f"window {info['window']['from']} .. {info['window']['to']}: "
           + (", ".join(f"{topic} {n}" for topic, n in manifest["topics"].items()) or "no records")]
    bybit = info["sources"]["bybit"]
    if bybit["status"].startswith("skipped"):
        out.append(f"bybit: {bybit['status']}")
    for s in bybit["series"] if not bybit["status"].startswith("skipped") else []:
        gaps = sum(m["candles"] for m in s["missing"])
        out.append(f"bybit {s['category']} {s['symbol']} {s['interval']}: {s['candles']}/{s['expected']} candles"
                   + (f", closes {s['first_close']} .. {s['last_close']}" if s["candles"] else "")
                   + (f"; missing {gaps} ({'; '.join(sorted({m['reason'] for m in s['missing']}))})" if gaps else ""))
    filings = info["sources"]["filings"]
    if filings["status"].startswith("skipped"):
        out.append(f"filings: {filings['status']}")
    else:
        out.append(f"filings ({filings['mode']}): {filings['filings']} in the window"
                   + (f", accepted {filings['first']} .. {filings['last']}" if filings["filings"] else "")
                   + (f"; {len(filings['missing'])} missing" if filings["missing"] else "")
                   + (f"; listing failed: {len(filings['listing_failed'])}" if filings["listing_failed"] else ""))
    for archive in info["sources"]["news"]["archives"]:
        out.append(f"news {archive['file']}: {archive['imported']} imported, {archive['duplicates']} duplicates, "
                   f"{archive['outside_window']} outside the window, {archive['rejected']} rejected"
                   + (f" (see {archive['rejected_file']})" if archive["rejected"] else ""))
    return out
