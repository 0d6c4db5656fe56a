"""Builders shared by the consumer tests: signals with chosen times, and running a coroutine with a deadline."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from ingest.contracts import Document
from signals.contracts import ClassProbs, ModelInfo, Signal

MODEL = ModelInfo(name="m", version="v1", content_hash="a" * 64)
BASE_NS = 1_800_000_000_000_000_000

T = TypeVar("T")


def make_signal(i: int, symbol: str = "BTCUSDT", *, ts_event: int | None = None, bullish: float = 0.7) -> Signal:
    """Signal number `i` for `symbol`; distinct `i` give distinct ids."""
    ts = BASE_NS + i * 1_000_000_000 if ts_event is None else ts_event
    doc = Document.create(kind="news", source="t", title=f"headline {i} {symbol}", ts_event=ts, ts_ingest=ts)
    rest = round(1.0 - bullish, 6)
    probs = ClassProbs(bearish=round(rest / 2, 6), neutral=round(rest - round(rest / 2, 6), 6), bullish=bullish)
    return Signal.from_probs(document_ids=(doc.id,), symbol=symbol, probs=probs, model=MODEL, ts_event=ts,
                             ts_ingest=ts, ts_scored=ts)


def run(coro: Coroutine[Any, Any, T], timeout_s: float = 30.0) -> T:
    """Run a coroutine to completion, failing the test if it takes longer than `timeout_s`."""
    return asyncio.run(asyncio.wait_for(coro, timeout_s))
