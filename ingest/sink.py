"""The asyncio side of Kafka: a bounded queue in front of a producer that lives in its own thread.

kafka-python's `send()` can block the calling thread (waiting for metadata, up to
`max_block_ms`), and its constructor blocks on bootstrap. Neither may run on the
event loop, which also reads the WebSocket and answers pings. So every send goes
through a bounded `asyncio.Queue`; one drain task hands batches to a single
dedicated thread that owns the producer.

kafka-python 3.x no longer bounds its record accumulator (`buffer_memory` is gone),
so the producer thread bounds it itself: it hands a record to `send()` only while
fewer than `max_in_flight_bytes` are unacknowledged, and waits for acks otherwise.
When the broker is slow that thread waits, the queue fills, `publish()` waits, and
the source is read more slowly: memory stays bounded by `queue_size` records plus
`max_in_flight_bytes`, and per-key order is kept because there is one thread.

`ingest.process_sink.ProcessKafkaSink` keeps this queue, budget and contract and moves the
producer into a child process; the hooks `_open`, `_send_batch`, `_flush_producer` and
`_close_producer` are what it replaces, all called in the sink's one thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog

from ingest.kafka import DeadLetter, dead_letter_record
from ingest.metrics import DEAD_LETTERS, DELIVERY_FAILURES, MESSAGES, QUEUE_DEPTH
from ingest.settings import TopicSettings

if TYPE_CHECKING:
    from kafka import KafkaProducer

log = structlog.get_logger(__name__)


@dataclass(slots=True)
class _Job:
    """One record for the producer: where it goes, its bytes, and who waits for its acknowledgement."""

    kind: str
    ack: asyncio.Future | None
    size: int  # what it counts against `max_in_flight_bytes`
    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] | None = None


class SinkClosed(RuntimeError):
    """`publish` after `close`."""


class _Abandoned(Exception):
    """`close` gave up waiting for a broker that does not acknowledge."""


class KafkaSink:
    """Publish to Kafka from asyncio without ever blocking the loop; backpressure instead of memory growth."""

    def __init__(self, producer_factory: Callable[[], KafkaProducer], topics: TopicSettings, *, source: str,
                 queue_size: int = 10_000, batch_size: int = 1_000, max_in_flight_bytes: int = 32 * 1024 * 1024
                 ) -> None:
        if queue_size < 1 or batch_size < 1 or max_in_flight_bytes < 1:
            raise ValueError("queue_size, batch_size and max_in_flight_bytes must be >= 1")
        self.max_in_flight_bytes = max_in_flight_bytes
        self._in_flight_bytes = 0
        self.max_in_flight_seen = 0  # high-water mark of unacknowledged bytes, for benchmarks and tests
        self._credit = threading.Condition()
        self._waiting_for_credit = 0
        self._abandon = threading.Event()
        self.topics = topics
        self.source = source
        self._factory = producer_factory
        self._queue_size = queue_size
        self._batch_size = batch_size
        self._linger_s = 0.0  # wait this long for a batch to fill when it starts small (subclasses)
        self._queue: asyncio.Queue[_Job] | None = None
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"kafka-{source}")
        self._producer: KafkaProducer | None = None
        self._drain: asyncio.Task | None = None
        self._started = False  # the producer exists (`_open` returned)
        self._closed = False
        self.failure: BaseException | None = None  # the producer can no longer deliver (its process died)
        self._failed: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.sent = 0  # records handed to the producer (dead letters included)

    async def start(self) -> KafkaSink:
        """Create the producer in its thread (it blocks on bootstrap) and start draining."""
        self._loop = asyncio.get_running_loop()
        self._queue = asyncio.Queue(self._queue_size)
        self._failed = asyncio.Event()
        await self._loop.run_in_executor(self._thread, self._open)
        self._started = True
        self._drain = asyncio.create_task(self._drain_forever(), name=f"kafka-sink-{self.source}")
        return self

    async def __aenter__(self) -> KafkaSink:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def pending(self) -> int:
        """Records queued and not yet handed to the producer."""
        return self._queue.qsize() if self._queue else 0

    async def publish(self, topic: str, key: bytes | None, value: bytes, *, kind: str = "message",
                      headers: list[tuple[str, bytes]] | None = None, ack: bool = False) -> asyncio.Future | None:
        """Queue one record, waiting while the queue is full.

        With `ack=True` returns a future resolved when Kafka acknowledged the record (or failed
        with the error): use it where something is recorded as done only once it is durable.
        """
        if self._closed or self._queue is None or self._loop is None or self.failure is not None:
            raise self.failure or SinkClosed(f"kafka sink {self.source!r} is not running")
        future = self._loop.create_future() if ack else None
        await self._queue.put(_Job(kind, future, len(value) + len(key or b""), topic, key, value, headers))
        return future

    async def wait_failed(self) -> BaseException:
        """Return `failure` once the producer can no longer deliver; for a supervisor to stop the source."""
        assert self._failed is not None, "start() first"
        await self._failed.wait()
        assert self.failure is not None
        return self.failure

    async def dead_letter(self, letter: DeadLetter, raw: bytes | None, key: bytes | None = None) -> None:
        """Send a refused payload, untouched, to the dead-letter topic with the reason in its headers."""
        if self._closed or self._queue is None or self._loop is None or self.failure is not None:
            raise self.failure or SinkClosed(f"kafka sink {self.source!r} is not running")
        DEAD_LETTERS.labels(self.source, letter.stage).inc()
        topic, value, headers = dead_letter_record(self.topics, letter, raw)
        await self._queue.put(_Job("deadletter", None, len(value) + len(key or b"") + 512, topic, key, value, headers))

    async def flush(self, timeout_s: float = 30.0) -> None:
        """Wait until every queued record was handed to the producer and acknowledged."""
        if self._queue is None or self._loop is None or not self._started:
            return
        await asyncio.wait_for(self._queue.join(), timeout_s)
        await self._loop.run_in_executor(self._thread, self._flush_producer, timeout_s)

    async def close(self, timeout_s: float = 30.0) -> None:
        """Deliver what is queued, then stop the producer and its thread; idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._drain is not None and not self._drain.done():
                try:
                    await asyncio.wait_for(self._queue.join(), timeout_s)  # type: ignore[union-attr]
                except asyncio.TimeoutError:
                    # The broker does not keep up: give up on what is left rather than hang the shutdown.
                    self._abandon.set()
                    log.error("kafka.sink_abandoned", source=self.source, queued=self.pending,
                              in_flight_bytes=self._in_flight_bytes, timeout_s=timeout_s)
        finally:
            if self._drain is not None:
                self._drain.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._drain
            if self._started and self._loop is not None:
                await self._loop.run_in_executor(self._thread, self._close_producer, timeout_s)
            self._thread.shutdown(wait=True)
            QUEUE_DEPTH.labels(self.source).set(0)

    # -- the producer: these run in the sink's thread -------------------------------------------------------

    def _open(self) -> None:
        self._producer = self._factory()

    def _flush_producer(self, timeout_s: float) -> None:
        assert self._producer is not None
        self._producer.flush(timeout_s)

    def _close_producer(self, timeout_s: float) -> None:
        """Flush and close; a broker that does not acknowledge in time costs the unsent records, not a hang."""
        from kafka.errors import KafkaTimeoutError

        assert self._producer is not None
        try:
            self._producer.close(timeout_s)
        except KafkaTimeoutError:
            log.error("kafka.close_timeout", source=self.source, timeout_s=timeout_s,
                      in_flight_bytes=self._in_flight_bytes)
            # kafka-python's close() raises from its flush before reaching its own force-close.
            sender = getattr(self._producer, "_sender", None)
            if sender is not None:
                sender.force_close()

    async def _drain_forever(self) -> None:
        assert self._queue is not None and self._loop is not None
        queue = self._queue
        while True:
            batch = [await queue.get()]
            if self._linger_s and queue.qsize() < self._batch_size - 1:
                await asyncio.sleep(self._linger_s)
            while len(batch) < self._batch_size and not queue.empty():
                batch.append(queue.get_nowait())
            QUEUE_DEPTH.labels(self.source).set(queue.qsize())
            try:
                await self._loop.run_in_executor(self._thread, self._send_batch, batch)
            finally:
                for _ in batch:
                    queue.task_done()

    def _send_batch(self, batch: list[_Job]) -> None:
        """In the producer thread: hand each record to kafka-python, blocking here (not on the loop) if full."""
        from kafka.errors import KafkaTimeoutError

        assert self._producer is not None
        counts: dict[str, int] = {}
        for i, job in enumerate(batch):
            try:
                self._take_credit(job.size)
            except _Abandoned:
                for left in batch[i:]:
                    self._resolve(left.ack, SinkClosed("abandoned at shutdown: the broker did not keep up"))
                DELIVERY_FAILURES.labels(self.source).inc(len(batch) - i)
                log.error("kafka.records_abandoned", source=self.source, records=len(batch) - i)
                break
            while True:
                try:
                    future = self._producer.send(job.topic, key=job.key, value=job.value, headers=job.headers)
                    break
                except KafkaTimeoutError as exc:
                    # Buffer still full after max_block_ms: the broker is slow or away. Keep the record and
                    # keep blocking; the bounded queue upstream is what slows the source meanwhile.
                    log.warning("kafka.send_blocked", source=self.source, error=str(exc))
                except Exception as exc:  # noqa: BLE001 - e.g. record too large: report it, keep the sink alive
                    DELIVERY_FAILURES.labels(self.source).inc()
                    log.error("kafka.send_failed", source=self.source, kind=job.kind, error=repr(exc))
                    self._resolve(job.ack, exc)
                    future = None
                    break
            if future is None:
                self._return_credit(job.size)
                continue
            counts[job.kind] = counts.get(job.kind, 0) + 1
            future.add_both(self._settled, job)  # one callback for both outcomes: fewer per-record registrations
        self.sent += sum(counts.values())
        for kind, n in counts.items():
            if kind != "deadletter":
                MESSAGES.labels(self.source, kind).inc(n)

    def _take_credit(self, size: int) -> None:
        """Wait until `size` more unacknowledged bytes fit the budget (one record always fits an idle budget)."""
        with self._credit:
            while self._in_flight_bytes and self._in_flight_bytes + size > self.max_in_flight_bytes:
                if self._abandon.is_set():
                    raise _Abandoned
                self._waiting_for_credit += 1
                try:
                    self._credit.wait(0.2)
                finally:
                    self._waiting_for_credit -= 1
            self._in_flight_bytes += size
            self.max_in_flight_seen = max(self.max_in_flight_seen, self._in_flight_bytes)

    def _return_credit(self, size: int) -> None:
        with self._credit:
            self._in_flight_bytes -= size
            if self._waiting_for_credit:  # a notify per acknowledged record costs the I/O thread when nobody waits
                self._credit.notify_all()

    def _settled(self, job: _Job, result: Any) -> None:
        """In kafka-python's I/O thread: a record was acknowledged (metadata) or failed (the exception)."""
        self._return_credit(job.size)
        if isinstance(result, BaseException):
            self._on_error(job, result)
        elif job.ack is not None:
            self._resolve(job.ack, None, result)

    def _on_error(self, job: _Job, exc: BaseException) -> None:
        DELIVERY_FAILURES.labels(self.source).inc()
        if not self._abandon.is_set():  # after giving up, close() has already said how much was lost
            log.error("kafka.delivery_failed", source=self.source, kind=job.kind, error=repr(exc))
        self._resolve(job.ack, exc)

    def _resolve(self, ack: asyncio.Future | None, exc: BaseException | None, result: Any = None) -> None:
        if ack is None or self._loop is None:
            return

        def settle() -> None:
            if ack.done():
                return
            if exc is None:
                ack.set_result(result)
            else:
                ack.set_exception(exc)

        self._loop.call_soon_threadsafe(settle)
