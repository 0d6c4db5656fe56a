"""Documents to signals with one model: chunking, token-budget batching, symbols, market context.

No I/O: the live worker and the backtest both call `SignalScorer.score`, so a backtest
exercises exactly the code path production runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from ingest.contracts import Document
from signals import metrics
from signals.batching import BatchPlan, pack_by_budget
from signals.contracts import ModelInfo, Signal
from signals.market import MarketContextStore
from signals.model import combine_chunks, to_class_probs
from signals.settings import WorkerSettings
from signals.symbols import SymbolLinker

Clock = Callable[[], int]


class ScoringBackend(Protocol):
    """What the scorer needs of a model, whatever runs it (transformers, vLLM)."""

    info: ModelInfo
    max_length: int

    def encode_chunks(self, texts: list[str], overlap: int) -> list[list[list[int]]]: ...

    def score_ids(self, batch: list[list[int]]) -> np.ndarray: ...


@dataclass(frozen=True, slots=True)
class Scored:
    """A document and the signals it produced (none when skipped by policy)."""

    document: Document
    signals: tuple[Signal, ...]


@dataclass(frozen=True, slots=True)
class ScoreStats:
    """What one `score` call cost."""

    documents: int
    chunks: int
    batches: int
    real_tokens: int
    padded_tokens: int
    seconds: float

    @property
    def padding_fraction(self) -> float:
        return 1.0 - self.real_tokens / self.padded_tokens if self.padded_tokens else 0.0


class SignalScorer:
    """Turns documents into signals; see the module docstring."""

    def __init__(
        self,
        model: ScoringBackend,
        settings: WorkerSettings,
        clock: Clock = time.time_ns,
        market: MarketContextStore | None = None,
        record_metrics: bool = True,
    ) -> None:
        self.model = model
        self.record_metrics = record_metrics  # off for a shadow scorer: the worker's metrics describe live
        self.settings = settings
        self.clock = clock
        self.market = market
        self.linker = SymbolLinker(settings.names, settings.cashtags, settings.cik_tickers, settings.max_symbols)
        self.last_stats: ScoreStats | None = None

    def symbols_for(self, doc: Document) -> tuple[str, ...]:
        """Symbols a document speaks to, after linking and the no-symbol policy."""
        symbols = self.linker(doc) if self.settings.link_symbols else doc.symbols
        if symbols:
            return symbols
        return (self.settings.market_symbol,) if self.settings.no_symbol_policy == "market" else ()

    def probabilities(self, documents: list[Document]) -> tuple[list[np.ndarray], list[int]]:
        """Per document, class probabilities (bearish, neutral, bullish) and the number of chunks used."""
        chunked = self.model.encode_chunks([d.text for d in documents], self.settings.chunk_overlap)
        pieces = [(doc_i, ids) for doc_i, chunks in enumerate(chunked) for ids in chunks]
        plan = pack_by_budget([len(ids) for _, ids in pieces], self.settings.token_budget, self.settings.max_batch,
                              self.settings.batch_overhead_tokens)
        piece_probs = np.zeros((len(pieces), 3), dtype=np.float32)
        began = time.perf_counter()
        for batch in plan.batches:
            piece_probs[list(batch)] = self.model.score_ids([pieces[i][1] for i in batch])
            self._observe_batch(batch, pieces)
        seconds = time.perf_counter() - began
        self._record(plan, len(documents), len(pieces), seconds)
        per_doc: list[list[int]] = [[] for _ in documents]
        for i, (doc_i, _) in enumerate(pieces):
            per_doc[doc_i].append(i)
        probs = [combine_chunks(piece_probs[idx], [len(pieces[i][1]) for i in idx]) for idx in per_doc]
        return probs, [len(idx) for idx in per_doc]

    def score(self, documents: list[Document]) -> list[Scored]:
        """Score documents and build their signals, in input order."""
        if not documents:
            return []
        probs, chunks = self.probabilities(documents)
        scored_at = self.clock()
        return [
            Scored(doc, tuple(self._signal(doc, sym, to_class_probs(p), n, scored_at) for sym in self.symbols_for(doc)))
            for doc, p, n in zip(documents, probs, chunks)
        ]

    def _signal(self, doc: Document, symbol: str, probs: Any, chunks: int, ts_scored: int) -> Signal:
        context = self.market.at(symbol, doc.ts_event) if self.market is not None else None
        return Signal.from_probs(
            document_ids=(doc.id,),
            symbol=symbol,
            probs=probs,
            model=self.model.info,
            ts_event=doc.ts_event,
            ts_ingest=doc.ts_ingest,
            ts_scored=ts_scored,
            chunks=chunks,
            market=context,
        )

    def _observe_batch(self, batch: tuple[int, ...], pieces: list[tuple[int, list[int]]]) -> None:
        if not self.record_metrics:
            return
        longest = max(len(pieces[i][1]) for i in batch)
        metrics.BATCH_SIZE.observe(len(batch))
        metrics.BATCH_FILL.observe(min(1.0, len(batch) * longest / self.settings.token_budget))

    def _record(self, plan: BatchPlan, documents: int, chunks: int, seconds: float) -> None:
        self.last_stats = ScoreStats(documents, chunks, len(plan.batches), plan.real_tokens, plan.padded_tokens,
                                     seconds)
        if not self.record_metrics:
            return
        metrics.SCORE_SECONDS.observe(seconds)
        metrics.TOKENS.labels("real").inc(plan.real_tokens)
        metrics.TOKENS.labels("padded").inc(plan.padded_tokens)
        metrics.SCORED_DOCUMENTS.inc(documents)
        if plan.padded_tokens:
            metrics.PADDING_FRACTION.observe(plan.padding_fraction)
