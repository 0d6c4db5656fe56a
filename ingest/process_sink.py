"""`KafkaSink` with kafka-python in a child process: the source's loop and the producer on two cores.

In one interpreter the event loop (WebSocket frames, parsing, the book, encoding) and kafka-python
(`send()`: serialization, partitioning, the accumulator; its I/O thread) share one GIL, so a busy
source runs at well under a bare producer's rate. Here the sink's thread hands already-encoded
records to a child process (spawned, not forked: no inherited locks or sockets) in batches over a
pipe, and the child's producer (`ingest.kafka.make_producer`: idempotent, acks=all) sends them.

Protocol, both ways pickled so one pipe message carries many records:

- parent -> child: `(first_seq, [(topic, key, value) | (topic, key, value, headers, want_metadata), ...])`,
  the records numbered consecutively from `first_seq`, or a control tuple `("flush", token, timeout_s)` /
  `("close", None, timeout_s)`.
- child -> parent: a list of settled records: `seq` (acknowledged), `(seq, "ok", metadata)` (acknowledged,
  the caller wants the metadata), `(seq, "send" | "delivery", exception)` (failed), and controls
  `(None, "ready" | "fatal" | "flushed" | "closed", detail)`. Each partition's records come back in the
  order they were sent; a control comes after every record settled before it was handled.

The contract is `KafkaSink`'s: the same bounded queue, and bytes count against `max_in_flight_bytes`
from the moment they are handed to the child until the parent has read their acknowledgement, so
the records in the pipe and in the child's accumulator are inside the bound. Ack futures, metrics
and delivery errors are settled in the parent, after the broker acknowledged, in each partition's
order. The child dying (killed, out of memory) closes its end of the pipe: the parent fails every
unacknowledged record and every later `publish` with `ProducerProcessDied`, never waits on it.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import multiprocessing
import pickle
import signal
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

import structlog

from ingest.metrics import DELIVERY_FAILURES, MESSAGES
from ingest.settings import TopicSettings
from ingest.sink import KafkaSink, SinkClosed, _Abandoned, _Job

if TYPE_CHECKING:
    from kafka import KafkaProducer

log = structlog.get_logger(__name__)

_DUMP = pickle.HIGHEST_PROTOCOL
_ACK_INTERVAL_S = 0.002  # how often an idle child looks for settled records while some are in flight
_SETTLE_EVERY = 256  # and a busy one, in records sent
_LIVE: weakref.WeakSet[ProcessKafkaSink] = weakref.WeakSet()  # started and not closed, for `_reap_at_exit`


class ProducerProcessDied(RuntimeError):
    """The child process that owned the Kafka producer exited without being asked to."""


class ProcessKafkaSink(KafkaSink):
    """A `KafkaSink` whose producer runs in a child process; same API, same bounds, same ack semantics.

    `producer_factory` must be picklable (a module-level function or a `functools.partial` of one): it
    is called in the child. Startup costs a fresh interpreter (about a second) besides the bootstrap.
    """

    def __init__(self, producer_factory: Callable[[], KafkaProducer], topics: TopicSettings, *, source: str,
                 queue_size: int = 10_000, batch_size: int = 1_000, max_in_flight_bytes: int = 32 * 1024 * 1024,
                 start_timeout_s: float = 120.0, log_level: str | None = None, linger_s: float = 0.002) -> None:
        super().__init__(producer_factory, topics, source=source, queue_size=queue_size, batch_size=batch_size,
                         max_in_flight_bytes=max_in_flight_bytes)
        # A pipe message costs both processes a wake-up and a system call whatever it carries: a source
        # slower than the child would otherwise send a few records at a time (kafka-python lingers 5 ms too).
        self._linger_s = linger_s
        self.start_timeout_s = start_timeout_s
        self._log_level = log_level
        self._process: Any = None  # multiprocessing's SpawnProcess
        self._requests: Connection | None = None  # parent -> child; written only by the sink's thread
        self._results: Connection | None = None  # child -> parent; read only by the reader thread
        self._reader: threading.Thread | None = None
        self._pending: dict[int, _Job] = {}  # handed to the child, not yet settled; insertion = send order
        self._next_seq = 0  # records are numbered in the order written, so a message carries only the first
        self._tokens = itertools.count()
        self._controls: dict[int, list[Any]] = {}  # token -> [Event, error or None]
        self._closed_by_request = threading.Event()
        self._death = threading.Lock()

    @property
    def producer_pid(self) -> int | None:
        """The child's process id (for CPU and memory accounting), None before `start`."""
        return self._process.pid if self._process is not None else None

    @property
    def unacknowledged(self) -> int:
        """Records handed to the child and not yet acknowledged or failed."""
        return len(self._pending)

    # -- the sink's thread -----------------------------------------------------------------------------------

    def _open(self) -> None:
        """Spawn the child, wait until its producer bootstrapped (or raise what its factory raised)."""
        ctx = multiprocessing.get_context("spawn")
        requests_r, requests_w = ctx.Pipe(duplex=False)
        results_r, results_w = ctx.Pipe(duplex=False)
        self._process = ctx.Process(target=_child_main, args=(self._factory, requests_r, results_w, self._log_level),
                                    name=f"kafka-producer-{self.source}", daemon=True)
        self._process.start()
        # Only the child holds these ends now: its exit is an EOF here and a broken pipe for writes.
        requests_r.close()
        results_w.close()
        self._requests, self._results = requests_w, results_r
        deadline = time.monotonic() + self.start_timeout_s
        while not results_r.poll(0.2):
            if not self._process.is_alive():
                self._process.join(5)
                raise ProducerProcessDied(f"kafka producer process {self._describe()} exited while starting")
            if time.monotonic() > deadline:
                self._process.kill()
                self._process.join(5)
                raise ProducerProcessDied(f"kafka producer process {self._describe()} did not start "
                                          f"within {self.start_timeout_s}s")
        try:
            [(_, what, detail)] = pickle.loads(results_r.recv_bytes())
        except EOFError:
            self._process.join(5)
            raise ProducerProcessDied(f"kafka producer process {self._describe()} exited while starting") from None
        if what == "fatal":
            self._process.join(10)
            raise detail
        self._reader = threading.Thread(target=self._read_results, name=f"kafka-{self.source}-acks", daemon=True)
        self._reader.start()
        _LIVE.add(self)
        log.info("kafka.producer_process_started", source=self.source, pid=self._process.pid)

    def _send_batch(self, batch: list[_Job]) -> None:
        """Take credit for the records, register them, and write them to the child in as few messages as fit."""
        if self.failure is not None:
            self._fail_jobs(batch, self.failure)
            return
        first, wire = self._next_seq, []
        written: list[_Job] = []
        if self._try_credit(sum(job.size for job in batch)):  # the usual case: the whole batch fits
            wire = [self._register(job) for job in batch]
            written = batch
        else:
            for i, job in enumerate(batch):
                if not self._try_credit(job.size, idle_ok=True):
                    if wire:  # let the child work on what is in hand while we wait for acknowledgements
                        self._write((first, wire))
                        first, wire = self._next_seq, []
                    try:
                        self._take_credit(job.size)
                    except _Abandoned:
                        left = batch[i:]
                        self._fail_jobs(left, self.failure or SinkClosed("abandoned at shutdown: the broker did "
                                                                         "not keep up"))
                        if self.failure is None:
                            log.error("kafka.records_abandoned", source=self.source, records=len(left))
                        break
                wire.append(self._register(job))
                written.append(job)
        if wire:
            self._write((first, wire))
        if self.failure is not None:
            return
        counts: dict[str, int] = {}
        for job in written:
            counts[job.kind] = counts.get(job.kind, 0) + 1
        self.sent += len(written)
        for kind, n in counts.items():
            if kind != "deadletter":
                MESSAGES.labels(self.source, kind).inc(n)

    def _register(self, job: _Job) -> tuple:
        """Number the record (the child numbers a message's records from its first) and take its bytes off the job."""
        seq = self._next_seq
        self._next_seq = seq + 1
        self._pending[seq] = job
        if job.headers is None and job.ack is None:  # the common case: three fields to pickle, not five
            record: tuple = (job.topic, job.key, job.value)
        else:
            record = (job.topic, job.key, job.value, job.headers, job.ack is not None)
        job.key = job.value = job.headers = None  # the child holds them now; the job keeps its size and future
        return record

    def _write(self, message: object) -> None:
        assert self._requests is not None
        try:
            self._requests.send_bytes(pickle.dumps(message, _DUMP))
        except (OSError, ValueError) as exc:  # broken pipe: the child is gone
            self._died(f"writing to it failed: {exc!r}")

    def _try_credit(self, size: int, idle_ok: bool = False) -> bool:
        """Take `size` bytes of the budget if they fit now; `idle_ok` lets one record exceed an idle budget."""
        with self._credit:
            if self._in_flight_bytes + size > self.max_in_flight_bytes and not (idle_ok and not self._in_flight_bytes):
                return False
            self._in_flight_bytes += size
            self.max_in_flight_seen = max(self.max_in_flight_seen, self._in_flight_bytes)
            return True

    def _flush_producer(self, timeout_s: float) -> None:
        if self.failure is not None:
            raise self.failure
        error = self._control("flush", timeout_s, timeout_s + 10.0)
        if error is not None:
            raise error

    def _close_producer(self, timeout_s: float) -> None:
        """Ask the child to flush and close (it force-closes after `timeout_s`), then reap it; never hangs."""
        process = self._process
        if process is None:
            return
        try:
            if self.failure is None:
                self._control("close", timeout_s, timeout_s + 15.0)
        except (ProducerProcessDied, TimeoutError) as exc:
            log.error("kafka.producer_process_close_failed", source=self.source, error=str(exc))
        finally:
            process.join(10)
            if process.exitcode is None:
                process.kill()
                process.join(5)
            if self._reader is not None:
                self._reader.join(10)
            left = self._fail_pending(SinkClosed("the producer process closed before acknowledging"))
            if left and self.failure is None:
                DELIVERY_FAILURES.labels(self.source).inc(left)
                log.error("kafka.records_abandoned", source=self.source, records=left)
            for conn in (self._requests, self._results):
                if conn is not None:
                    conn.close()
            _LIVE.discard(self)

    def _control(self, op: str, timeout_s: float, wait_s: float) -> BaseException | None:
        """Send a control request and wait for its reply (it comes after every ack settled before it)."""
        token = next(self._tokens)
        done = threading.Event()
        self._controls[token] = [done, None]
        self._write((op, token, timeout_s))
        deadline = time.monotonic() + wait_s
        while not done.wait(0.2):
            if self.failure is not None:
                raise self.failure
            if time.monotonic() > deadline:
                raise TimeoutError(f"kafka producer process {self._describe()} did not answer {op!r} in {wait_s}s")
        return self._controls.pop(token)[1]

    # -- the reader thread --------------------------------------------------------------------------------

    def _read_results(self) -> None:
        assert self._results is not None
        try:
            while True:
                items = pickle.loads(self._results.recv_bytes())
                if self._settle(items):
                    return
        except (EOFError, OSError) as exc:
            if not self._closed_by_request.is_set():
                self._died(f"its pipe closed ({type(exc).__name__})")
        except Exception as exc:  # noqa: BLE001 - a bug here must not leave the source waiting for acks forever
            log.exception("kafka.producer_results_failed", source=self.source)
            self._died(f"reading its results failed: {exc!r}")

    def _settle(self, items: list) -> bool:
        """Settle a message's records in order; True once the child said it closed."""
        pending = self._pending
        freed = 0
        done: list[tuple[Any, BaseException | None, Any]] = []
        controls = []
        for item in items:
            if item.__class__ is int:  # acknowledged, nobody wants the metadata: the common case
                job = pending.pop(item, None)
                if job is None:  # already failed: the child died while this message was on its way
                    continue
                freed += job.size
                if job.ack is not None:
                    done.append((job.ack, None, None))
                continue
            seq, what, detail = item
            if seq is None:
                controls.append((what, detail))
                continue
            job = pending.pop(seq, None)
            if job is None:
                continue
            freed += job.size
            if what == "ok":
                done.append((job.ack, None, detail))
            else:
                DELIVERY_FAILURES.labels(self.source).inc()
                if not self._abandon.is_set():
                    event = "kafka.send_failed" if what == "send" else "kafka.delivery_failed"
                    log.error(event, source=self.source, kind=job.kind, error=repr(detail))
                if job.ack is not None:
                    done.append((job.ack, detail, None))
        if freed:
            self._return_credit(freed)
        if done and self._loop is not None:
            self._loop.call_soon_threadsafe(_settle_futures, done)
        closed = False
        for what, detail in controls:
            if what == "closed":
                self._closed_by_request.set()
                closed = True
            token, error = detail
            waiter = self._controls.get(token)
            if waiter is not None:
                waiter[1] = error
                waiter[0].set()
        return closed

    # -- the child's death --------------------------------------------------------------------------------

    def _died(self, how: str) -> None:
        """Record the child's death once: one error line, every unacknowledged record and waiter failed."""
        with self._death:
            if self.failure is None:
                process = self._process
                process.join(2)
                n = len(self._pending)
                self.failure = ProducerProcessDied(
                    f"kafka producer process {self._describe()} of source {self.source!r} died ({how}); "
                    f"{n} records were not acknowledged")
                DELIVERY_FAILURES.labels(self.source).inc(n)
                log.error("kafka.producer_process_died", source=self.source, pid=process.pid,
                          exit_code=process.exitcode, unacknowledged=n, how=how)
                self._abandon.set()  # a sender waiting for credit gives up
                if self._loop is not None and self._failed is not None:
                    with contextlib.suppress(RuntimeError):  # the loop already ended
                        self._loop.call_soon_threadsafe(self._failed.set)
        self._fail_pending(self.failure)
        for waiter in list(self._controls.values()):
            waiter[0].set()
        with self._credit:
            self._credit.notify_all()

    def _fail_pending(self, exc: BaseException) -> int:
        """Fail every record still waiting for an acknowledgement; returns how many there were."""
        jobs = []
        while True:
            try:
                jobs.append(self._pending.popitem()[1])  # atomic: the reader thread may pop concurrently
            except KeyError:
                break
        if jobs:
            self._return_credit(sum(job.size for job in jobs))
            self._fail_jobs(jobs, exc, count=False)
        return len(jobs)

    def _fail_jobs(self, jobs: list[_Job], exc: BaseException, count: bool = True) -> None:
        if count:
            DELIVERY_FAILURES.labels(self.source).inc(len(jobs))
        failed = [(job.ack, exc, None) for job in jobs if job.ack is not None]
        if failed and self._loop is not None:
            self._loop.call_soon_threadsafe(_settle_futures, failed)

    def _describe(self) -> str:
        process = self._process
        code = process.exitcode if process is not None else None
        return (f"{process.name} (pid {process.pid}" + (f", exit code {code})" if code is not None else ")")
                if process is not None else "(not started)")


@atexit.register
def _reap_at_exit() -> None:
    """A sink never closed: end its child before multiprocessing's own exit hook waits for it.

    The child ignores SIGTERM (see `_child_main`), so that hook's terminate-and-join would wait
    forever on a child still reading its pipe. Closing the pipe makes it deliver what it holds and exit.
    """
    for sink in list(_LIVE):
        process, requests = sink._process, sink._requests
        if requests is not None:
            with contextlib.suppress(OSError):
                requests.close()
        if process is not None:
            process.join(10)
            if process.exitcode is None:
                process.kill()
                process.join(5)


def _settle_futures(done: list[tuple[Any, BaseException | None, Any]]) -> None:
    """On the loop: resolve ack futures in the order the broker settled their records."""
    for future, exc, result in done:
        if future.done():
            continue
        if exc is None:
            future.set_result(result)
        else:
            future.set_exception(exc)


# -- the child process ------------------------------------------------------------------------------------------


def _portable(exc: BaseException) -> BaseException:
    """The exception itself if it survives pickling, else a RuntimeError carrying its repr."""
    try:
        pickle.loads(pickle.dumps(exc, _DUMP))
        return exc
    except Exception:  # noqa: BLE001 - any pickling failure: the message is what matters
        return RuntimeError(repr(exc))


def _child_main(factory: Callable[[], KafkaProducer], requests: Connection, results: Connection,
                log_level: str | None) -> None:
    """The child: build the producer, send what arrives, ship settlements back until asked to close."""
    # Ctrl-C and a service manager's SIGTERM reach the whole process group: the parent decides when this ends.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    from finsignal.log import configure_logging

    configure_logging(log_level)
    try:
        producer = factory()
    except Exception as exc:  # noqa: BLE001 - bootstrap failed: the parent raises it from start()
        _reply(results, [(None, "fatal", _portable(exc))])
        return
    _reply(results, [(None, "ready", None)])
    _Child(producer, results).serve(requests)


def _reply(results: Connection, items: list) -> bool:
    """Send one message to the parent; False once it is gone."""
    try:
        results.send_bytes(pickle.dumps(items, _DUMP))
        return True
    except (OSError, ValueError):
        return False


class _Child:
    """The child's main thread: hands records to kafka-python and reports them back once settled.

    No callback and no thread hop per record (in kafka-python a callback costs two lock round trips
    and a partial to register, and a call from its I/O thread to run): the futures are kept in send
    order, one queue per partition, and collected from each queue's head between pipe messages, every
    `_SETTLE_EVERY` records, and every `_ACK_INTERVAL_S` while idle. A partition's records settle in
    its order; a partition whose broker stalls holds back only its own acknowledgements.
    """

    def __init__(self, producer: KafkaProducer, results: Connection) -> None:
        self.producer = producer
        self.results = results
        self.partitions = _KeyPartitions.for_producer(producer)
        self.unsettled: dict[tuple[str, int] | None, deque[tuple[int, Any, bool]]] = {}

    def serve(self, requests: Connection) -> None:
        """Until the parent says close or goes away: send, flush, and ship settlements as they come."""
        while True:
            if self._waiting() and not requests.poll(_ACK_INTERVAL_S):
                self._ship()
                continue
            try:
                message = pickle.loads(requests.recv_bytes())
            except (EOFError, OSError):  # the parent is gone: deliver what we hold if we can, then go
                with contextlib.suppress(Exception):
                    self.producer.close(5)
                return
            if message[0].__class__ is int:
                self._send_all(*message)
                self._ship()
                continue
            op, token, timeout_s = message
            if op == "flush":
                error = None
                try:
                    self.producer.flush(timeout_s)
                except Exception as exc:  # noqa: BLE001 - e.g. KafkaTimeoutError: the parent's flush raises it
                    error = _portable(exc)
                self._ship([(None, "flushed", (token, error))])
            elif op == "close":
                _close(self.producer, timeout_s)
                self._ship([(None, "closed", (token, None))])
                return

    def _send_all(self, seq: int, records: list[tuple]) -> None:
        """Send a batch of records numbered from `seq`, keeping each future in its partition's queue."""
        if self.partitions is not None:
            self.partitions.refresh()
        for i, record in enumerate(records, seq):
            if len(record) == 3:
                topic, key, value = record
                headers, want_metadata = None, False
            else:
                topic, key, value, headers, want_metadata = record
            future, where = self._send(i, topic, key, value, headers)
            if future is not None:
                queue = self.unsettled.get(where)
                if queue is None:
                    queue = self.unsettled[where] = deque()
                queue.append((i, future, want_metadata))
            if i % _SETTLE_EVERY == 0:
                self._ship()

    def _send(self, seq: int, topic: str, key: bytes | None, value: bytes | None,
              headers: list[tuple[str, bytes]] | None) -> tuple[Any, tuple[str, int] | None]:
        """kafka-python's future and the queue it belongs to, or (None, None) once the failure was reported."""
        from kafka.errors import KafkaTimeoutError

        while True:
            try:
                partition = self.partitions(topic, key) if self.partitions is not None and key is not None else None
                future = self.producer.send(topic, key=key, value=value, headers=headers, partition=partition)
            except KafkaTimeoutError as exc:  # metadata not there after max_block_ms: keep trying
                log.warning("kafka.send_blocked", error=str(exc))
                continue
            except Exception as exc:  # noqa: BLE001 - e.g. record too large: the parent reports it
                self._ship([(seq, "send", _portable(exc))])
                return None, None
            return future, (topic, partition) if partition is not None else None

    def _waiting(self) -> bool:
        return any(self.unsettled.values())

    def _ship(self, extra: list | None = None) -> None:
        """Send the parent every record settled at the head of its queue, then `extra`, in one message."""
        items: list = []
        for queue in self.unsettled.values():
            while queue and queue[0][1].is_done:
                seq, future, want_metadata = queue.popleft()
                if future.exception is not None:
                    items.append((seq, "delivery", _portable(future.exception)))
                elif want_metadata:
                    items.append((seq, "ok", future.value))
                else:
                    items.append(seq)
        if extra:
            items += extra
        if items:
            _reply(self.results, items)


class _KeyPartitions:
    """The partition of a keyed record as kafka-python's `DefaultPartitioner` picks it, cached per key.

    kafka-python re-hashes the key (pure-Python murmur2) and re-sorts the partition list on every
    `send()`; a source publishes a few keys (symbols) many times, so this asks once per key and
    passes the partition explicitly. The cache is dropped when a topic's partition count changes.
    """

    _MAX_KEYS = 10_000  # keys that are ids (news, filings) would otherwise grow it without end

    def __init__(self, producer: KafkaProducer) -> None:
        self.producer = producer
        self.cache: dict[tuple[str, bytes], int] = {}
        self.counts: dict[str, int] = {}  # topic -> partitions when its keys were cached

    @classmethod
    def for_producer(cls, producer: KafkaProducer) -> _KeyPartitions | None:
        """A cache for `producer`, or None when it has its own partitioner (its choice may not be a hash)."""
        from kafka.partitioner import DefaultPartitioner

        return cls(producer) if type(producer.config["partitioner"]) is DefaultPartitioner else None

    def __call__(self, topic: str, key: bytes) -> int:
        partition = self.cache.get((topic, key))
        if partition is None:
            from kafka.partitioner import murmur2

            if len(self.cache) >= self._MAX_KEYS:
                self.cache.clear()
            partitions = sorted(self.producer.partitions_for(topic))  # waits for metadata like send() does
            self.counts[topic] = len(partitions)
            partition = self.cache[(topic, key)] = partitions[(murmur2(key) & 0x7FFFFFFF) % len(partitions)]
        return partition

    def refresh(self) -> None:
        """Forget every key of a topic whose partition count changed since (once per pipe message)."""
        for topic, count in self.counts.items():
            if len(self.producer.partitions_for(topic)) != count:
                self.cache.clear()
                self.counts.clear()
                return


def _close(producer: KafkaProducer, timeout_s: float) -> None:
    from kafka.errors import KafkaTimeoutError

    try:
        producer.close(timeout_s)
    except KafkaTimeoutError:
        log.error("kafka.close_timeout", timeout_s=timeout_s)
        sender = getattr(producer, "_sender", None)  # close() raises from its flush before its own force-close
        if sender is not None:
            sender.force_close()
