"""Recorded documents through the worker's scoring code path, in simulated time, with no look-ahead.

The replay owns a simulated clock (`ReplayClock`) that is injected into `signals.worker.SignalScorer`:
it reads the time of the event being replayed, never the wall clock. Documents are batched as the
worker batches them: a batch opens with its first document and closes `batch_window_ms` later (the
worker's `max_wait_ms`), or as soon as it holds `max_batch_docs` documents or about `token_budget`
tokens (4 characters a token, the worker's estimate). It is scored when it closes, and that time becomes the
`ts_scored` of its signals. A signal is available to a strategy from `ts_scored` on, and everything that
went into it (its batch) is timed at or before `ts_scored`. Cutting a recording at any time T therefore
leaves every signal scored at or before T unchanged, byte for byte (tests/consumers check this property).

Market events feed the scorer's market-context store, if it has one, in the same order, so the
context attached to a signal is what the live worker would have had: data at or before its time.

As in production, a signal id already emitted (the same document recorded twice) is emitted once,
and a batch the model fails on is scored document by document so one bad document fails alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog

from consumers.backtest.config import ReplayConfig
from consumers.backtest.events import ReplayEvent
from ingest.contracts import Document
from signals.contracts import Signal

log = structlog.get_logger(__name__)


class Scorer(Protocol):
    """What the replay needs of `signals.worker.SignalScorer`."""

    def score(self, documents: list[Document]) -> list:  # list[Scored]
        ...


class MarketFeed(Protocol):
    """What the replay needs of `signals.market.MarketContextStore`."""

    def update(self, event: Any) -> None: ...


class ReplayClock:
    """Simulated time in nanoseconds; only moves forward."""

    def __init__(self, start: int = 0) -> None:
        self._now = start

    def __call__(self) -> int:
        return self._now

    def advance_to(self, ts: int) -> None:
        if ts < self._now:
            raise ValueError(f"replay clock cannot go back from {self._now} to {ts}")
        self._now = ts


@dataclass(frozen=True, slots=True)
class ScoredBatch:
    """One batch as scored at `ts_scored`: its documents, the new signals, and documents that failed."""

    ts_scored: int
    documents: tuple[Document, ...]
    signals: tuple[Signal, ...]
    failed: tuple[tuple[str, str], ...] = ()  # (document id, reason)


@dataclass
class ReplayStats:
    """Counts over one replay."""

    documents: int = 0
    market_events: int = 0
    batches: int = 0
    signals: int = 0
    duplicate_signals: int = 0
    documents_without_signal: int = 0
    failed_documents: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)


class SignalReplay:
    """Feeds replay events to a scorer in event time; see the module docstring."""

    def __init__(self, scorer: Scorer, clock: ReplayClock, config: ReplayConfig | None = None,
                 market: MarketFeed | None = None, *, token_budget: int | None = None) -> None:
        config = config or ReplayConfig()
        if config.batch_window_ms is None or config.max_batch_docs is None:
            raise ValueError("resolve the batching (ReplayConfig.resolved) before replaying")
        self.scorer = scorer
        self.clock = clock
        self.config = config
        self.market = market
        self.token_budget = token_budget
        self.stats = ReplayStats()
        self._emitted: set[str] = set()

    def run(self, events: Iterable[ReplayEvent]) -> Iterator[ScoredBatch]:
        """Replay events in the order given (which must be time order); yield each scored batch."""
        pending: list[Document] = []
        deadline: int | None = None
        chars = 0
        window_ns = self.config.batch_window_ms * 1_000_000  # type: ignore[operator]
        for ev in events:
            if deadline is not None and ev.ts >= deadline:
                yield self._flush(pending, deadline)  # the window closed before this event
                pending, deadline, chars = [], None, 0
            self.clock.advance_to(ev.ts)
            if not isinstance(ev.payload, Document):
                self.stats.market_events += 1
                if self.market is not None:
                    self.market.update(ev.payload)
                continue
            self.stats.documents += 1
            pending.append(ev.payload)
            chars += len(ev.payload.text)
            if deadline is None:
                deadline = ev.ts + window_ns
            if len(pending) >= self.config.max_batch_docs or (  # type: ignore[operator]
                    self.token_budget is not None and chars / 4 >= self.token_budget):
                yield self._flush(pending, ev.ts)
                pending, deadline, chars = [], None, 0
        if pending:
            assert deadline is not None
            yield self._flush(pending, deadline)

    def _flush(self, documents: list[Document], ts: int) -> ScoredBatch:
        self.clock.advance_to(ts)
        scored, failed = self._score(documents)
        fresh: list[Signal] = []
        for item in scored:
            if not item.signals:
                self.stats.documents_without_signal += 1
            for sig in item.signals:
                if sig.id in self._emitted:
                    self.stats.duplicate_signals += 1
                    continue
                self._emitted.add(sig.id)
                fresh.append(sig)
        self.stats.batches += 1
        self.stats.signals += len(fresh)
        self.stats.failed_documents += len(failed)
        self.stats.failures.extend(failed)
        return ScoredBatch(ts, tuple(documents), tuple(fresh), tuple(failed))

    def _score(self, documents: list[Document]) -> tuple[list, list[tuple[str, str]]]:
        """Score a batch; if the model fails on it, score one by one and report the culprits."""
        try:
            return self.scorer.score(documents), []
        except Exception as exc:  # noqa: BLE001 - as in the worker: one bad document must not fail its batch
            log.warning("replay.batch_failed", error=repr(exc), documents=len(documents))
        scored, failed = [], []
        for doc in documents:
            try:
                scored.extend(self.scorer.score([doc]))
            except Exception as exc:  # noqa: BLE001
                failed.append((doc.id, f"scoring failed: {exc!r}"))
        return scored, failed
