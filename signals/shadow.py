"""Shadow scoring: a candidate model scores the live batches on its own thread, where no strategy reads.

After the worker has published a batch's live signals and committed its offsets, it hands the batch's
documents and live signals to `ShadowScorer.submit`, which only puts them on a bounded queue: a full
queue drops the batch (counted), so the shadow can never hold up the live path. The shadow thread
scores the same documents with the same batching (one extra forward pass per live pass), publishes
to Redis under `shadow_prefix` (`shadow:signals:{SYMBOL}`, ...) and to the `signals.shadow` topic,
and compares each shadow signal with the live one for the same document and symbol:
agreement, flips per symbol, latency of each model. Any failure (load, score, publish) is logged and
counted, and the next batch is tried.

The shadow model follows `shadow_dir` like the live model follows `model_dir`: a flipped symlink
loads the new version in the background; a removed one stops shadowing.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from ingest.contracts import Document
from ingest.settings import KafkaSettings, TopicSettings
from signals import metrics
from signals.contracts import Signal
from signals.market import MarketContextStore
from signals.redis_sink import RedisSignalSink
from signals.reload import ModelWatcher
from signals.scorer import ScoringBackend, SignalScorer
from signals.settings import RedisSettings, WorkerSettings

if TYPE_CHECKING:
    from kafka import KafkaProducer

log = structlog.get_logger(__name__)

_STOP = object()


class ShadowScorer(threading.Thread):
    """The shadow thread; see the module docstring."""

    def __init__(
        self,
        path: Path,
        loader: Callable[[Path], ScoringBackend],
        *,
        settings: WorkerSettings,
        kafka: KafkaSettings,
        topics: TopicSettings,
        redis_settings: RedisSettings,
        clock: Callable[[], int] = time.time_ns,
        market: MarketContextStore | None = None,
        model: ScoringBackend | None = None,
    ) -> None:
        super().__init__(name="shadow", daemon=True)
        self.path = path
        self.loader = loader
        self.settings = settings
        self.kafka = kafka
        self.topics = topics
        self.redis_settings = redis_settings
        self.scorer: SignalScorer | None = None
        self._clock = clock
        self._market = market
        self._initial = model
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=settings.shadow_queue)
        self._recent: deque[bool] = deque(maxlen=settings.shadow_agreement_window)
        self._watcher: ModelWatcher | None = None
        self._producer: KafkaProducer | None = None
        self._sink: RedisSignalSink | None = None
        self.batches_done = 0

    @property
    def model(self) -> ScoringBackend | None:
        return self.scorer.model if self.scorer is not None else None

    def submit(self, documents: list[Document], live: list[Signal]) -> bool:
        """Queue a published live batch for shadowing; never blocks. False: dropped (queue full)."""
        if not documents:
            return True
        try:
            self._queue.put_nowait((documents, live))
            return True
        except queue.Full:
            metrics.SHADOW_DROPPED.inc()
            return False

    def stop(self, timeout: float = 30.0) -> None:
        """Drop what is queued (shadowing is best effort), finish the batch in hand, and stop."""
        with contextlib.suppress(queue.Empty):
            while True:
                self._queue.get_nowait()
        with contextlib.suppress(queue.Full):
            self._queue.put(_STOP, timeout=timeout)
        self.join(timeout)

    def run(self) -> None:
        from ingest.redis_client import sync_client
        from signals.keys import SignalKeys

        client = sync_client(self.redis_settings)
        self._sink = RedisSignalSink(client, maxlen=self.settings.stream_maxlen, dedupe_ttl_s=self.settings.dedupe_ttl_s,
                                     keys=SignalKeys(prefix=self.settings.shadow_prefix))
        try:
            self._load_initial()
            while True:
                item = self._queue.get()
                if item is _STOP:
                    break
                try:
                    self._follow_pointer()
                    if self.scorer is not None:
                        self._shadow(*item)
                except Exception as exc:  # noqa: BLE001 - whatever breaks here, the thread lives on
                    metrics.SHADOW_FAILURES.labels("internal").inc()
                    log.exception("shadow.failed", error=repr(exc))
        finally:
            if self._watcher is not None:
                self._watcher.close()
            if self._producer is not None:
                self._producer.close(timeout=10)
            client.close()

    def _load_initial(self) -> None:
        self._watcher = ModelWatcher(self.path, self.loader, self.settings.model_poll_s)
        model = self._initial
        if model is None and self.path.exists():
            try:
                model = self.loader(self.path)
            except Exception as exc:  # noqa: BLE001 - a broken shadow never stops the worker
                metrics.SHADOW_FAILURES.labels("load").inc()
                log.error("shadow.load_failed", path=str(self.path), error=repr(exc))
        self._use(model)

    def _follow_pointer(self) -> None:
        """Swap in a new shadow version, or stop shadowing when the pointer is gone."""
        assert self._watcher is not None
        if not self.path.exists():
            if self.scorer is not None:
                log.info("shadow.cleared", path=str(self.path))
                self.scorer = None
                # A fresh watcher sees the pointer come back, even to the version it had before.
                self._watcher.close()
                self._watcher = ModelWatcher(self.path, self.loader, self.settings.model_poll_s)
            return
        model = self._watcher.poll()
        if model is not None and (self.model is None or model.info != self.model.info):
            self._use(model)

    def _use(self, model: ScoringBackend | None) -> None:
        if model is None:
            self.scorer = None
            return
        self.scorer = SignalScorer(model, self.settings, self._clock, self._market, record_metrics=False)
        self._recent.clear()
        log.info("shadow.serving", name=model.info.name, version=model.info.version)

    def _shadow(self, documents: list[Document], live: list[Signal]) -> None:
        assert self.scorer is not None
        try:
            began = time.perf_counter()
            scored = self.scorer.score(documents)
            metrics.MODEL_SECONDS.labels("shadow").observe(time.perf_counter() - began)
        except Exception as exc:  # noqa: BLE001 - shadow failures are counted; live already went out
            metrics.SHADOW_FAILURES.labels("score").inc()
            log.warning("shadow.score_failed", error=repr(exc), documents=len(documents))
            return
        shadow = [sig for item in scored for sig in item.signals]
        self._compare(live, shadow)
        try:
            self._publish(shadow)
        except Exception as exc:  # noqa: BLE001
            metrics.SHADOW_FAILURES.labels("publish").inc()
            log.warning("shadow.publish_failed", error=repr(exc), signals=len(shadow))
            return
        self.batches_done += 1

    def _publish(self, signals: list[Signal]) -> None:
        assert self._sink is not None
        for entry in self._sink.publish(signals):
            metrics.SHADOW_SIGNALS.labels("published" if entry else "duplicate").inc()
        if self.topics.signals_shadow:
            if self._producer is None:
                from ingest.kafka import make_producer

                self._producer = make_producer(self.kafka)
            futures = [self._producer.send(self.topics.signals_shadow, key=s.symbol.encode(), value=s.to_bytes())
                       for s in signals]
            self._producer.flush(timeout=10)
            failed = [f for f in futures if f.failed()]
            if failed:
                raise RuntimeError(f"{len(failed)} shadow record(s) refused: {failed[0].exception!r}")

    def _compare(self, live: list[Signal], shadow: list[Signal]) -> None:
        """Agreement and flips of matched (document, symbol) pairs."""
        by_key = {(s.document_ids, s.symbol): s for s in live}
        for sig in shadow:
            other = by_key.get((sig.document_ids, sig.symbol))
            if other is None:
                continue
            agreed = other.direction is sig.direction
            metrics.SHADOW_COMPARED.inc()
            if agreed:
                metrics.SHADOW_AGREED.inc()
            else:
                metrics.SHADOW_FLIPS.labels(sig.symbol, f"{other.direction.value}->{sig.direction.value}").inc()
            self._recent.append(agreed)
        if self._recent:
            metrics.SHADOW_AGREEMENT.set(sum(self._recent) / len(self._recent))
