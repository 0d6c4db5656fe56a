"""The scoring worker: documents from Kafka, signals to Redis, offsets committed last.

One pass of the loop reads top to bottom:

1. poll a batch of records from `news` and `filings`;
2. validate each; a malformed one is queued to `deadletter` with its reason and bytes;
3. score the valid documents, shortest first, in batches of `max_batch`;
4. publish the signals to Redis (idempotent by signal id) and wait for its reply;
5. queue the audit copies on the `signals` topic and flush the producer;
6. commit the batch's offsets.

A crash anywhere before step 6 redelivers the batch; the deterministic signal id
makes the second publish a no-op, so readers see each signal once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog

from ingest.contracts import ContractError, Document, decode_document
from ingest.kafka import DeadLetter, ensure_topics, make_producer, send_dead_letter
from ingest.settings import KafkaSettings, TopicSettings
from signals import metrics
from signals.contracts import Signal
from signals.model import SentimentModel, to_class_probs
from signals.redis_sink import RedisSignalSink
from signals.settings import RedisSettings, WorkerSettings

if TYPE_CHECKING:
    from kafka import KafkaConsumer, KafkaProducer
    from kafka.consumer.fetcher import ConsumerRecord

log = structlog.get_logger(__name__)

Clock = Callable[[], int]


@dataclass(frozen=True, slots=True)
class Scored:
    """A document and the signals it produced (none when skipped by policy)."""

    document: Document
    signals: tuple[Signal, ...]


class SignalScorer:
    """Turns documents into signals with one model; no I/O, so backtests reuse it as is."""

    def __init__(self, model: SentimentModel, settings: WorkerSettings, clock: Clock = time.time_ns) -> None:
        self.model = model
        self.settings = settings
        self.clock = clock

    def symbols_for(self, doc: Document) -> tuple[str, ...]:
        """Symbols a document speaks to, after the no-symbol policy."""
        if doc.symbols:
            return doc.symbols
        return (self.settings.market_symbol,) if self.settings.no_symbol_policy == "market" else ()

    def score(self, documents: list[Document]) -> list[Scored]:
        """Score documents (sorted by length, batched by `max_batch`) and build their signals, in input order."""
        if not documents:
            return []
        ids = self.model.encode([d.text for d in documents])
        order = sorted(range(len(documents)), key=lambda i: len(ids[i]))
        probs: list[Any] = [None] * len(documents)
        for start in range(0, len(order), self.settings.max_batch):
            chunk = order[start : start + self.settings.max_batch]
            began = time.perf_counter()
            rows = self.model.score_ids([ids[i] for i in chunk])
            metrics.SCORE_SECONDS.observe(time.perf_counter() - began)
            metrics.BATCH_SIZE.observe(len(chunk))
            for i, row in zip(chunk, rows):
                probs[i] = to_class_probs(row)
        scored_at = self.clock()
        return [
            Scored(doc, tuple(self._signal(doc, sym, p, scored_at) for sym in self.symbols_for(doc)))
            for doc, p in zip(documents, probs)
        ]

    def _signal(self, doc: Document, symbol: str, probs: Any, ts_scored: int) -> Signal:
        return Signal.from_probs(
            document_ids=(doc.id,),
            symbol=symbol,
            probs=probs,
            model=self.model.info,
            ts_event=doc.ts_event,
            ts_ingest=doc.ts_ingest,
            ts_scored=ts_scored,
        )


class Worker:
    """Consumes documents in a consumer group and publishes their signals; see the module docstring."""

    def __init__(
        self,
        model: SentimentModel,
        *,
        kafka: KafkaSettings | None = None,
        topics: TopicSettings | None = None,
        redis_settings: RedisSettings | None = None,
        settings: WorkerSettings | None = None,
        clock: Clock = time.time_ns,
    ) -> None:
        self.kafka = kafka or KafkaSettings()
        self.topics = topics or TopicSettings()
        self.redis_settings = redis_settings or RedisSettings()
        self.settings = settings or WorkerSettings()
        self.scorer = SignalScorer(model, self.settings, clock)
        self.clock = clock
        self._stop = threading.Event()
        self._consumer: KafkaConsumer | None = None
        self._producer: KafkaProducer | None = None
        self._sink: RedisSignalSink | None = None
        metrics.MODEL_INFO.labels(model.info.name, model.info.version).set(1)

    def stop(self) -> None:
        """Ask the loop to finish its current batch and return."""
        self._stop.set()

    def run(self) -> None:
        """Run until `stop()`; commits what was published and closes cleanly."""
        import redis
        from kafka import KafkaConsumer

        ensure_topics(self.kafka, self.topics.all())
        self._producer = make_producer(self.kafka)
        client = redis.Redis.from_url(self.redis_settings.url, **self.redis_settings.client_options())
        self._sink = RedisSignalSink(
            client, maxlen=self.settings.stream_maxlen, dedupe_ttl_s=self.settings.dedupe_ttl_s
        )
        self._consumer = KafkaConsumer(
            self.topics.news,
            self.topics.filings,
            **self.kafka.client_options(),
            group_id=self.settings.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=self.settings.max_batch,
            session_timeout_ms=self.kafka.session_timeout_ms,
            heartbeat_interval_ms=self.kafka.heartbeat_interval_ms,
            max_poll_interval_ms=self.kafka.max_poll_interval_ms,
            fetch_max_wait_ms=self.kafka.fetch_max_wait_ms,
        )
        log.info("worker.started", group=self.settings.group_id, model=self.scorer.model.info.version)
        try:
            while not self._stop.is_set():
                batch = self._consumer.poll(timeout_ms=self.settings.poll_timeout_ms)
                records = [rec for recs in batch.values() for rec in recs]
                if records:
                    self.process(records)
        finally:
            self._consumer.close(autocommit=False)
            self._producer.close(timeout=10)
            client.close()
            log.info("worker.stopped")

    def process(self, records: list[ConsumerRecord]) -> None:
        """Validate, score, publish, then commit one polled batch."""
        assert self._producer is not None and self._consumer is not None
        valid: list[tuple[Document, ConsumerRecord]] = []
        for rec in records:
            metrics.DOCUMENTS.labels(rec.topic).inc()
            if not rec.value:
                self._dead_letter(rec, "empty record value", stage="validate")
                continue
            try:
                valid.append((decode_document(rec.value), rec))
            except ContractError as exc:
                self._dead_letter(rec, str(exc), stage="validate")
        scored = self._score_isolating_failures(valid)
        signals = [sig for item in scored for sig in item.signals]
        for item in scored:
            if not item.signals:
                metrics.SKIPPED.labels("no_symbol").inc()
                log.info("worker.skipped", document_id=item.document.id, reason="no symbol")
        self._publish(signals)
        if self.topics.signals and self.settings.audit_topic:
            for sig in signals:
                self._producer.send(self.topics.signals, key=sig.symbol.encode(), value=sig.to_bytes())
        self._producer.flush()  # dead letters and audit copies are durable before we commit
        self._commit(records)
        now = self.clock()
        for sig in signals:
            metrics.END_TO_END_SECONDS.observe(max(0, now - sig.ts_ingest) / 1e9)

    def _score_isolating_failures(self, valid: list[tuple[Document, ConsumerRecord]]) -> list[Scored]:
        """Score the batch; if the model fails on it, score one by one and dead-letter the culprits."""
        try:
            return self.scorer.score([doc for doc, _ in valid])
        except Exception as exc:  # noqa: BLE001 - a model failure must not take valid neighbours down
            log.warning("worker.batch_failed", error=repr(exc), documents=len(valid))
        scored: list[Scored] = []
        for doc, rec in valid:
            try:
                scored.extend(self.scorer.score([doc]))
            except Exception as exc:  # noqa: BLE001
                self._dead_letter(rec, f"scoring failed: {exc!r}", stage="score")
        return scored

    def _publish(self, signals: list[Signal]) -> None:
        """Publish to Redis, retrying with capped backoff; stays in the group while Redis is away."""
        assert self._sink is not None and self._consumer is not None
        delay = 0.1
        while True:
            try:
                results = self._sink.publish(signals)
                break
            except Exception as exc:  # noqa: BLE001 - any Redis failure means: not acknowledged, retry
                if self._stop.is_set():
                    raise
                metrics.PUBLISH_RETRIES.inc()
                log.warning("worker.publish_failed", error=repr(exc), retry_in_s=delay, signals=len(signals))
                self._idle(delay)
                delay = min(delay * 2, 5.0)
        for sig, entry in zip(signals, results):
            metrics.SIGNALS.labels("published" if entry else "duplicate").inc()
            log.debug("signal.published", signal_id=sig.id, symbol=sig.symbol, document_ids=sig.document_ids, entry=entry)

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
            self._consumer.resume(*assignment)

    def _commit(self, records: Iterable[ConsumerRecord]) -> None:
        from kafka import OffsetAndMetadata, TopicPartition
        from kafka.errors import CommitFailedError

        assert self._consumer is not None
        offsets: dict[TopicPartition, int] = {}
        for rec in records:
            tp = TopicPartition(rec.topic, rec.partition)
            offsets[tp] = max(offsets.get(tp, -1), rec.offset + 1)
        try:
            self._consumer.commit({tp: OffsetAndMetadata(off, "", -1) for tp, off in offsets.items()})
            metrics.COMMITS.labels("ok").inc()
        except CommitFailedError as exc:
            # Partitions moved to another member mid-batch; it re-scores them and the ids dedupe.
            metrics.COMMITS.labels("failed").inc()
            log.warning("worker.commit_failed", error=str(exc))

    def _dead_letter(self, rec: ConsumerRecord, reason: str, stage: str) -> None:
        assert self._producer is not None
        metrics.DEADLETTERS.labels(stage).inc()
        letter = DeadLetter(reason=reason, stage=stage, source_topic=rec.topic,
                            source_partition=rec.partition, source_offset=rec.offset)
        send_dead_letter(self._producer, self.topics, letter, rec.value, rec.key)
