"""The scoring worker: documents from Kafka, signals to Redis, offsets committed last.

The loop reads top to bottom:

1. poll records from `news` and `filings`; validate each, and queue a malformed one to
   `deadletter` with its reason and original bytes;
2. hold valid documents until a token budget's worth is pending or the oldest has waited
   `max_wait_ms`; then flush:
3. score them (chunked, sorted by length, packed to the token budget) on a scoring thread while
   this thread keeps polling with every partition paused, so a slow batch never costs the group
   a rebalance;
4. publish the signals to Redis (idempotent by signal id) and wait for its reply, retrying with
   backoff while Redis is away;
5. queue the audit copies on `signals` and flush the producer;
6. commit the offsets of everything polled so far;
7. only then, hand the batch to the shadow model's thread (if one is configured; `signals.shadow`)
   and the published signals to the drift monitor (`signals.drift`): neither can delay step 4.

A crash anywhere before step 6 redelivers those records; the deterministic signal id makes the
second publish a no-op, so readers see each signal once.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from ingest.contracts import ContractError, Document, decode_document, decode_market_event
from ingest.kafka import DeadLetter, ensure_topics, make_producer, send_dead_letter
from ingest.redis_client import sync_client
from ingest.settings import KafkaSettings, TopicSettings
from signals import metrics
from signals.contracts import Signal
from signals.drift import DRIFT_KEY, DriftMonitor, Observation, Reference
from signals.market import MarketContextStore
from signals.progress import Progress
from signals.redis_sink import RedisSignalSink
from signals.reload import ModelWatcher
from signals.registry import REFERENCE
from signals.scorer import Scored, ScoringBackend, SignalScorer
from signals.shadow import ShadowScorer
from signals.settings import RedisSettings, WorkerSettings

if TYPE_CHECKING:
    from kafka import KafkaConsumer, KafkaProducer
    from kafka.consumer.fetcher import ConsumerRecord

log = structlog.get_logger(__name__)

Clock = Callable[[], int]

__all__ = ["Scored", "SignalScorer", "Worker"]


@dataclass
class _Pending:
    """Valid documents waiting for their batch, and every record polled since the last commit."""

    items: list[tuple[Document, ConsumerRecord, float]] = field(default_factory=list)
    polled: dict[tuple[str, int], int] = field(default_factory=dict)  # (topic, partition) -> next offset
    chars: int = 0
    deliveries: list[Any] = field(default_factory=list)  # dead-letter and audit sends to verify before commit

    def add_record(self, rec: ConsumerRecord) -> None:
        key = (rec.topic, rec.partition)
        self.polled[key] = max(self.polled.get(key, -1), rec.offset + 1)

    def oldest_age(self, now: float) -> float:
        return now - self.items[0][2] if self.items else 0.0


class DeliveryError(RuntimeError):
    """A dead letter or audit copy the broker refused: the batch is not committed, and will be redelivered."""


class _Stopping(Exception):
    """Stop was asked while Redis was unreachable: leave without committing; Kafka redelivers."""


class Worker:
    """Consumes documents in a consumer group and publishes their signals; see the module docstring."""

    def __init__(
        self,
        model: ScoringBackend,
        *,
        kafka: KafkaSettings | None = None,
        topics: TopicSettings | None = None,
        redis_settings: RedisSettings | None = None,
        settings: WorkerSettings | None = None,
        clock: Clock = time.time_ns,
        model_loader: Callable[[Path], ScoringBackend] | None = None,
    ) -> None:
        self.kafka = kafka or KafkaSettings()
        self.topics = topics or TopicSettings()
        self.redis_settings = redis_settings or RedisSettings()
        self.settings = settings or WorkerSettings()
        self.market = MarketContextStore(self.settings.vol_window_s) if self.settings.market_context else None
        self.scorer = SignalScorer(model, self.settings, clock, self.market)
        self.clock = clock
        self._model_loader = model_loader
        self._stop = threading.Event()
        self._consumer: KafkaConsumer | None = None
        self._producer: KafkaProducer | None = None
        self._sink: RedisSignalSink | None = None
        self._pending = _Pending()
        self._scoring = ThreadPoolExecutor(max_workers=1, thread_name_prefix="score")
        self.shadow: ShadowScorer | None = None
        self.drift = DriftMonitor(window=self.settings.drift_window, warmup=self.settings.drift_warmup,
                                  min_signals=self.settings.drift_min_signals,
                                  psi_alert=self.settings.drift_psi_alert, ks_alpha=self.settings.drift_ks_alpha)
        self._reset_drift(model)
        self.worker_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._redis: Any = None
        self._drift_written = 0.0
        self.progress = Progress(self.settings.summary_interval_s)
        metrics.MODEL_INFO.labels(model.info.name, model.info.version).set(1)

    @property
    def model(self) -> ScoringBackend:
        return self.scorer.model

    def stop(self) -> None:
        """Ask the loop to flush what it holds, commit, and return."""
        self._stop.set()

    def run(self) -> None:
        """Run until `stop()`; publishes and commits what it holds, then closes cleanly."""
        from kafka import KafkaConsumer
        from kafka.coordinator.assignors.cooperative_sticky import CooperativeStickyAssignor

        ensure_topics(self.kafka, self.topics.all())
        self._producer = make_producer(self.kafka)
        client = sync_client(self.redis_settings)
        self._redis = client
        self._sink = RedisSignalSink(client, maxlen=self.settings.stream_maxlen, dedupe_ttl_s=self.settings.dedupe_ttl_s)
        self._consumer = KafkaConsumer(
            self.topics.news,
            self.topics.filings,
            **self.kafka.client_options(),
            group_id=self.settings.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=self.settings.max_pending,
            session_timeout_ms=self.kafka.session_timeout_ms,
            heartbeat_interval_ms=self.kafka.heartbeat_interval_ms,
            max_poll_interval_ms=self.kafka.max_poll_interval_ms,
            fetch_max_wait_ms=self.kafka.fetch_max_wait_ms,
            # A worker joining or leaving moves only the partitions that must move.
            partition_assignment_strategy=(CooperativeStickyAssignor,),
        )
        import scipy.stats  # noqa: F401 - the drift KS test's import, paid at start rather than in a flush

        feed = self._start_market_feed()
        watcher = self._watcher()
        self.shadow = self._start_shadow()
        log.info("worker.started", group=self.settings.group_id, model=self.model.info.version,
                 token_budget=self.settings.token_budget, max_wait_ms=self.settings.max_wait_ms)
        try:
            while not self._stop.is_set():
                if watcher is not None:
                    self._maybe_swap(watcher)
                self._poll_once()
                if self._due():
                    self.flush()
            self.flush()
        except _Stopping:
            log.warning("worker.stopped_uncommitted", reason="Redis unreachable at stop; records will be redelivered")
        finally:
            if feed is not None:
                feed.stop()
            if watcher is not None:
                watcher.close()
            if self.shadow is not None:
                self.shadow.stop()
            self._scoring.shutdown(wait=True)
            self._consumer.close(autocommit=False)
            self._producer.close(timeout=10)
            client.close()
            log.info("worker.stopped")

    def _poll_once(self) -> None:
        assert self._consumer is not None
        timeout = self.settings.poll_timeout_ms
        if self._pending.items:  # wake up in time for the oldest document's deadline
            left = self.settings.max_wait_ms / 1000 - self._pending.oldest_age(time.monotonic())
            timeout = max(0, min(timeout, int(left * 1000)))
        batch = self._consumer.poll(timeout_ms=timeout)
        now = time.monotonic()
        for records in batch.values():
            for rec in records:
                self._accept(rec, now)
        self._update_lag()
        self.progress.maybe_log(self.model.info.version)

    def _accept(self, rec: ConsumerRecord, now: float) -> None:
        metrics.DOCUMENTS.labels(rec.topic).inc()
        self.progress.documents += 1
        self._pending.add_record(rec)
        if not rec.value:
            self._dead_letter(rec, "empty record value", stage="validate")
            return
        try:
            doc = decode_document(rec.value)
        except ContractError as exc:
            self._dead_letter(rec, str(exc), stage="validate")
            return
        self._pending.items.append((doc, rec, now))
        self._pending.chars += len(doc.text)

    def _due(self) -> bool:
        """Flush when a budget's worth is pending, the oldest waited long enough, or only dead letters wait."""
        pending = self._pending
        if not pending.polled:
            return False
        if not pending.items:
            return True
        # ~4 characters a token: a cheap estimate; the exact count is taken when packing.
        return (
            pending.chars / 4 >= self.settings.token_budget
            or len(pending.items) >= self.settings.max_pending
            or pending.oldest_age(time.monotonic()) * 1000 >= self.settings.max_wait_ms
        )

    def flush(self) -> None:
        """Score what is pending, publish, and commit everything polled so far."""
        pending, self._pending = self._pending, _Pending()
        if not pending.polled:
            return
        assert self._producer is not None
        now = time.monotonic()
        for _, _, arrived in pending.items:
            metrics.QUEUE_WAIT_SECONDS.observe(now - arrived)
        scored = self._score_while_polling(pending.items)
        signals = [sig for item in scored for sig in item.signals]
        for item in scored:
            if not item.signals:
                metrics.SKIPPED.labels("no_symbol").inc()
                self.progress.skipped += 1
                log.info("worker.skipped", document_id=item.document.id, reason="no symbol")
        self._publish(signals)
        if self.settings.audit_topic:
            for sig in signals:
                pending.deliveries.append(
                    self._producer.send(self.topics.signals, key=sig.symbol.encode(), value=sig.to_bytes()))
        self._producer.flush()  # dead letters and audit copies are durable before we commit
        try:
            self._check_deliveries(pending.deliveries + self._pending.deliveries)
        except DeliveryError as exc:
            # Nothing is committed; read the batch again. Redis drops the re-published signals by id.
            metrics.COMMITS.labels("withheld").inc()
            log.error("worker.delivery_failed", error=str(exc))
            self._rewind(pending.polled)
            self._idle(1.0)
            return
        self._commit(pending.polled)
        done = self.clock()
        for sig in signals:
            metrics.END_TO_END_SECONDS.observe(max(0, done - sig.ts_ingest) / 1e9)
        self._after_commit([doc for doc, _, _ in pending.items], scored, signals)

    def _after_commit(self, documents: list[Document], scored: list[Scored], signals: list[Signal]) -> None:
        """Live is out and committed: hand the batch to the shadow thread and the signals to drift."""
        if self.shadow is not None:
            self.shadow.submit(documents, signals)
        if not signals:
            return
        sources = {item.document.id: item.document.source for item in scored}
        self.drift.observe(Observation.of(sig, sources.get(sig.document_ids[0], "")) for sig in signals)
        self._export_drift()

    def _score_while_polling(self, items: list[tuple[Document, ConsumerRecord, float]]) -> list[Scored]:
        """Score on the scoring thread; meanwhile poll with all partitions paused to stay in the group."""
        if not items:
            return []
        assert self._consumer is not None
        future = self._scoring.submit(self._score_isolating_failures, items)
        paused = list(self._consumer.assignment())
        self._consumer.pause(*paused)
        try:
            while not future.done():
                self._consumer.poll(timeout_ms=20)
        finally:
            self._consumer.resume(*[tp for tp in paused if tp in self._consumer.assignment()])
        return future.result()

    def _score_isolating_failures(self, items: list[tuple[Document, ConsumerRecord, float]]) -> list[Scored]:
        """Score the batch; if the model fails on it, score one by one and dead-letter the culprits."""
        try:
            began = time.perf_counter()
            scored = self.scorer.score([doc for doc, _, _ in items])
            metrics.MODEL_SECONDS.labels("live").observe(time.perf_counter() - began)
            return scored
        except Exception as exc:  # noqa: BLE001 - a model failure must not take valid neighbours down
            log.warning("worker.batch_failed", error=repr(exc), documents=len(items))
        scored: list[Scored] = []
        for doc, rec, _ in items:
            try:
                scored.extend(self.scorer.score([doc]))
            except Exception as exc:  # noqa: BLE001
                self._dead_letter(rec, f"scoring failed: {exc!r}", stage="score")
        return scored

    def _publish(self, signals: list[Signal]) -> None:
        """Publish to Redis, retrying with capped backoff; stays in the group while Redis is away."""
        assert self._sink is not None
        delay = 0.1
        while True:
            try:
                results = self._sink.publish(signals)
                break
            except Exception as exc:  # noqa: BLE001 - any Redis failure means: not acknowledged, retry
                if self._stop.is_set():
                    raise _Stopping from exc
                metrics.PUBLISH_RETRIES.inc()
                log.warning("worker.publish_failed", error=repr(exc), retry_in_s=delay, signals=len(signals))
                self._idle(delay)
                delay = min(delay * 2, 5.0)
        for sig, entry in zip(signals, results):
            metrics.SIGNALS.labels("published" if entry else "duplicate").inc()
            self.progress.signals += bool(entry)
            log.debug("signal.published", signal_id=sig.id, symbol=sig.symbol, document_ids=sig.document_ids,
                      entry=entry)

    def _rewind(self, polled: dict[tuple[str, int], int]) -> None:
        """Seek the polled partitions back to their committed offsets so the batch is read again."""
        from kafka import TopicPartition

        assert self._consumer is not None
        self._pending = _Pending()  # what was polled after the batch is read again too
        for topic, partition in polled:
            tp = TopicPartition(topic, partition)
            if tp not in self._consumer.assignment():
                continue  # moved to another member, which starts from the committed offset anyway
            committed = self._consumer.committed(tp)
            if committed is None:
                self._consumer.seek_to_beginning(tp)
            else:
                self._consumer.seek(tp, committed)

    def _check_deliveries(self, futures: list[Any]) -> None:
        """Every dead letter and audit copy acknowledged, or raise before anything is committed."""
        failed = [f for f in futures if f.failed()]
        if failed:
            raise DeliveryError(f"{len(failed)} record(s) refused by the broker, first: {failed[0].exception!r}; "
                                "offsets not committed")

    def _idle(self, seconds: float) -> None:
        """Wait without fetching: partitions paused, poll() keeps the membership alive."""
        assert self._consumer is not None
        assignment = list(self._consumer.assignment())
        self._consumer.pause(*assignment)
        try:
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline and not self._stop.is_set():
                self._consumer.poll(timeout_ms=min(100, int(seconds * 1000)))
        finally:
            self._consumer.resume(*[tp for tp in assignment if tp in self._consumer.assignment()])

    def _commit(self, polled: dict[tuple[str, int], int]) -> None:
        from kafka import OffsetAndMetadata, TopicPartition
        from kafka.errors import CommitFailedError, KafkaError

        assert self._consumer is not None
        offsets = {TopicPartition(t, p): OffsetAndMetadata(off, "", -1) for (t, p), off in polled.items()}
        try:
            self._consumer.commit(offsets)
            metrics.COMMITS.labels("ok").inc()
        except (CommitFailedError, KafkaError) as exc:
            # Partitions moved to another member mid-batch: it re-scores them and the ids dedupe.
            metrics.COMMITS.labels("failed").inc()
            log.warning("worker.commit_failed", error=str(exc))

    def _update_lag(self) -> None:
        assert self._consumer is not None
        total = None
        for tp in self._consumer.assignment():
            high = self._consumer.highwater(tp)
            if high is not None:
                lag = max(0, high - self._consumer.position(tp))
                metrics.CONSUMER_LAG.labels(tp.topic, str(tp.partition)).set(lag)
                total = (total or 0) + lag
        self.progress.lag = total

    def _dead_letter(self, rec: ConsumerRecord, reason: str, stage: str) -> None:
        assert self._producer is not None
        metrics.DEADLETTERS.labels(stage).inc()
        self.progress.deadletters += 1
        letter = DeadLetter(reason=reason, stage=stage, source_topic=rec.topic,
                            source_partition=rec.partition, source_offset=rec.offset)
        # Dead letters of a batch being scored land in the next batch's list; flush() checks both.
        self._pending.deliveries.append(send_dead_letter(self._producer, self.topics, letter, rec.value, rec.key))

    def _watcher(self) -> ModelWatcher | None:
        directory = self.settings.model_dir
        if directory is None or self._model_loader is None or self.settings.model_poll_s <= 0:
            return None
        return ModelWatcher(Path(directory), self._model_loader, self.settings.model_poll_s)

    def _maybe_swap(self, watcher: ModelWatcher) -> None:
        model = watcher.poll()
        if model is None or model.info == self.model.info:
            return
        old = self.model.info
        self.flush()  # what was polled under the old model is scored by it
        self.scorer.model = model
        self._reset_drift(model)
        metrics.MODEL_INFO.labels(old.name, old.version).set(0)
        metrics.MODEL_INFO.labels(model.info.name, model.info.version).set(1)
        log.info("model.swapped", old=old.version, new=model.info.version)

    def _start_shadow(self) -> ShadowScorer | None:
        if self.settings.shadow_dir is None:
            return None
        from signals.backends import load_backend

        loader = self._model_loader or (lambda path: load_backend(path, self.settings))
        shadow = ShadowScorer(Path(self.settings.shadow_dir), loader, settings=self.settings, kafka=self.kafka,
                              topics=self.topics, redis_settings=self.redis_settings, clock=self.clock,
                              market=self.market)
        shadow.start()
        return shadow

    def _reset_drift(self, model: ScoringBackend) -> None:
        """Drift starts over for a new model: from its promotion reference, or a fresh warm-up."""
        reference = None
        directory = getattr(model, "directory", None)
        if self.settings.drift_reference == "promotion" and directory is not None:
            try:
                reference = Reference.load(Path(directory) / REFERENCE)
            except (OSError, ValueError, KeyError) as exc:
                log.warning("drift.reference_unreadable", path=str(directory), error=repr(exc))
        self.drift.reset(model.info.version, reference)
        metrics.DRIFT_PSI.clear()
        metrics.DRIFT_REFERENCE.clear()
        log.info("drift.reference", model=model.info.version,
                 origin=reference.origin if reference else "warmup", signals=len(reference.observations)
                 if reference else self.settings.drift_warmup)

    def _export_drift(self) -> None:
        """Drift figures to the gauges, and every drift_publish_s to Redis for `finsignal model drift`."""
        figures = self.drift.figures()
        metrics.DRIFT_WINDOW.set(len(self.drift.window))
        if self.drift.reference is not None:
            metrics.DRIFT_REFERENCE.labels(self.drift.reference.origin).set(len(self.drift.reference.observations))
        if figures is not None:
            for source, row in figures.psi.items():
                for feature, value in row.items():
                    metrics.DRIFT_PSI.labels(feature, source).set(value)
            metrics.DRIFT_KS_STATISTIC.set(figures.ks_statistic or 0.0)
            metrics.DRIFT_KS_PVALUE.set(figures.ks_pvalue if figures.ks_pvalue is not None else 1.0)
        now = time.monotonic()
        if self._redis is None or now - self._drift_written < self.settings.drift_publish_s:
            return
        self._drift_written = now
        snapshot = {"worker": self.worker_id, "group": self.settings.group_id, "ts_unix": time.time(),
                    "model": self.model.info.model_dump(mode="json"), "warming": self.drift.warming,
                    "warmup": self.settings.drift_warmup, "window": len(self.drift.window),
                    "figures": figures.to_json() if figures is not None else None}
        ttl = max(60, int(self.settings.drift_publish_s * 12))
        try:
            self._redis.set(f"{DRIFT_KEY}:{self.worker_id}", json.dumps(snapshot), ex=ttl)
        except Exception as exc:  # noqa: BLE001 - a monitoring write never holds up scoring
            log.warning("drift.snapshot_failed", error=repr(exc))

    def _start_market_feed(self) -> MarketFeed | None:
        if self.market is None:
            return None
        feed = MarketFeed(self.kafka, self.topics, self.market, self.settings.market_lookback)
        feed.start()
        return feed


class MarketFeed(threading.Thread):
    """Reads the `market.bybit.*` topics into a context store: all partitions, no group, recent records."""

    def __init__(self, kafka: KafkaSettings, topics: TopicSettings, store: MarketContextStore, lookback: int) -> None:
        super().__init__(name="market-feed", daemon=True)
        self.kafka = kafka
        self.topics = [topics.kline, topics.trade, topics.ticker]
        self.store = store
        self.lookback = lookback
        self._stop_event = threading.Event()

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=10)

    def run(self) -> None:
        from kafka import KafkaConsumer, TopicPartition

        consumer = KafkaConsumer(**self.kafka.client_options(), enable_auto_commit=False,
                                 fetch_max_wait_ms=self.kafka.fetch_max_wait_ms)
        try:
            parts = [TopicPartition(t, p) for t in self.topics for p in consumer.partitions_for_topic(t) or ()]
            consumer.assign(parts)
            ends = consumer.end_offsets(parts)
            starts = consumer.beginning_offsets(parts)
            for tp in parts:
                consumer.seek(tp, max(starts[tp], ends[tp] - self.lookback))
            while not self._stop_event.is_set():
                for records in consumer.poll(timeout_ms=200).values():
                    for rec in records:
                        self._take(rec)
        except Exception:  # noqa: BLE001 - context is best effort; scoring goes on without it
            log.exception("market_feed.failed")
        finally:
            consumer.close()

    def _take(self, rec: Any) -> None:
        try:
            event = decode_market_event(rec.value)
        except ContractError as exc:
            log.warning("market_feed.invalid", topic=rec.topic, offset=rec.offset, error=str(exc))
            return
        self.store.update(event)
        metrics.MARKET_EVENTS.labels(event.type).inc()
