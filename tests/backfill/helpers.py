"""A backfill against the local servers: both hosts started, settings pointed at them, a fixed clock."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from ingest.backfill.run import BackfillConfig, backfill_async
from ingest.backfill.settings import BackfillSettings
from ingest.backfill.window import Window, parse_bound
from ingest.bybit.settings import BybitSettings
from ingest.filings.settings import FilingsSettings
from tests.backfill.servers import HOUR_MS, BybitHistory, EdgarArchive, candles
from tests.ingest.servers import http_server

WINDOW = Window.parse("2024-05-01", "2024-06-30")
NOW = parse_bound("2024-07-15", end=False)  # the servers' and the backfill's clock: well after the window
USER_AGENT = "finsignal tests ops@example.com"


def bybit_server(**kwargs: Any) -> BybitHistory:
    """BTCUSDT trades all window long; ETHUSDT lists ten days in (240 hourly candles missing)."""
    rows = {"BTCUSDT": candles("BTCUSDT", WINDOW.start_ms - 50 * HOUR_MS, 2000),
            "ETHUSDT": candles("ETHUSDT", WINDOW.start_ms + 240 * HOUR_MS, 1500)}
    return BybitHistory(rows, server_ms=kwargs.pop("server_ms", NOW // 1_000_000), **kwargs)


@contextlib.asynccontextmanager
async def served(bybit: BybitHistory, edgar: EdgarArchive, **backfill: Any) -> AsyncIterator[BackfillConfig]:
    """Both servers up; yields the config of a backfill that reads only from them."""
    async with http_server({"/v5/market/kline": bybit.handle}) as burl, \
            http_server({"/{tail:.*}": edgar.handle}) as eurl:
        yield config_for(burl, eurl, **backfill)


def config_for(bybit_url: str, edgar_url: str, **backfill: Any) -> BackfillConfig:
    defaults = {"companies": ["AAPL", "789019"], "kline_chunk": 500}
    return BackfillConfig(
        backfill=BackfillSettings(edgar_data_url=edgar_url, **{**defaults, **backfill}),
        bybit=BybitSettings(rest_url=bybit_url, linear_symbols=["BTCUSDT", "ETHUSDT"], kline_intervals=["60"],
                            rate_limit_backoff_s=0.05),
        filings=FilingsSettings(user_agent=USER_AGENT, base_url=edgar_url, backoff_s=0.05,
                                tickers_url=f"{edgar_url}/files/company_tickers.json"),
    )


async def run(out: Path, config: BackfillConfig, window: Window = WINDOW, now: int = NOW, **kwargs: Any) -> dict:
    return await backfill_async(window, out, config, clock_ns=lambda: now, **kwargs)


def recording_bytes(out: Path) -> dict[str, bytes]:
    """The recording's topic files (the manifest holds the creation time, so it is compared apart)."""
    return {p.name: p.read_bytes() for p in sorted(out.glob("*.jsonl"))}
