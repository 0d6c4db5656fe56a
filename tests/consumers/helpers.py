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


class BatchSensitiveModel:
    """A hand-written stand-in for SentimentModel whose scores depend on every text in the batch.

    Any document that shares a batch with another changes that one's probabilities, so a replay that
    let a later document into an earlier signal's batch would show in the signal's bytes.
    """

    info = ModelInfo(name="batch-sensitive", version="stub1", content_hash="b" * 64)
    max_length = 64

    def encode_chunks(self, texts: list[str], overlap: int) -> list[list[list[int]]]:
        return [[[ord(c) % 97 + 1 for c in text[: self.max_length]]] for text in texts]

    def score_ids(self, batch: list[list[int]]) -> Any:
        import numpy as np

        context = sum(sum(ids) for ids in batch) + 7 * len(batch)
        rows = []
        for ids in batch:
            a, b = (sum(ids) * 31 + context) % 1000 + 1, (len(ids) * 17 + context) % 1000 + 1
            rows.append([a, 500.0, b])
        probs = np.asarray(rows, dtype=np.float32)
        return probs / probs.sum(axis=1, keepdims=True)


class ContrarianModel:
    """Wraps a model and swaps its bullish and bearish probabilities: every long becomes a short."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.max_length = inner.max_length
        self.info = ModelInfo(name="contrarian", version="c1", content_hash="c" * 64)

    def encode_chunks(self, texts: list[str], overlap: int) -> list[list[list[int]]]:
        return self.inner.encode_chunks(texts, overlap)

    def score_ids(self, batch: list[list[int]]) -> Any:
        return self.inner.score_ids(batch)[:, ::-1].copy()
