"""ProcessKafkaSink against the real embedded broker: the producer in a child process keeps KafkaSink's contract."""

from __future__ import annotations

import asyncio
import functools
import multiprocessing
import os
import pickle
import signal
import time
from multiprocessing.connection import Connection

import pytest
from kafka.errors import MessageSizeTooLargeError
from kafka.partitioner import DefaultPartitioner, murmur2
from prometheus_client import REGISTRY

from ingest.kafka import DEADLETTER_REASON, DeadLetter, ensure_topics, make_producer
from ingest.process_sink import ProcessKafkaSink, ProducerProcessDied, _Child, _KeyPartitions
from ingest.runner import IngestSettings, _until_sink_fails, make_sink
from ingest.settings import KafkaSettings, TopicSettings
from ingest.sink import KafkaSink
from tests.ingest.kafka_io import read_topic
from tests.ingest.servers import until

pytestmark = pytest.mark.integration

KEYS = [b"BTCUSDT", b"ETHUSDT", b"SOLUSDT", b"XRPUSDT", b"DOGEUSDT"]


def process_sink(kafka: KafkaSettings, topics: TopicSettings, **options: int) -> ProcessKafkaSink:
    factory = functools.partial(make_producer, kafka, max_block_ms=5_000)
    return ProcessKafkaSink(factory, topics, source="test", **options)


def failures() -> float:
    return REGISTRY.get_sample_value("finsignal_ingest_delivery_failures_total", {"source": "test"}) or 0.0


def test_make_sink_runs_the_bybit_producer_in_a_process_unless_told_otherwise(kafka_settings, topics):
    assert isinstance(make_sink(kafka_settings, topics, "bybit", 10), ProcessKafkaSink)
    assert type(make_sink(kafka_settings, topics, "news", 10)) is KafkaSink
    assert type(make_sink(kafka_settings, topics, "bybit", 10, IngestSettings(producer_process=False))) is KafkaSink
    assert isinstance(make_sink(kafka_settings, topics, "news", 10, IngestSettings(producer_process=True)),
                      ProcessKafkaSink)


def test_records_arrive_exactly_once_in_order_per_key_and_acks_settle_in_broker_order(kafka_settings, topics):
    ensure_topics(kafka_settings, topics.all())
    n = 3_000
    settled: list[tuple[int, int, int]] = []  # (partition, offset, i) in the order the futures resolved

    async def scenario() -> None:
        async with process_sink(kafka_settings, topics, batch_size=200) as sink:
            for i in range(n):
                key = KEYS[i % len(KEYS)]
                ack = await sink.publish(topics.trade, key, b"%d" % i, kind="trade", ack=i % 3 == 0)
                if ack is not None:
                    ack.add_done_callback(lambda f, i=i: settled.append((f.result().partition, f.result().offset, i)))
            await sink.flush()
            assert sink.sent == n and sink.unacknowledged == 0
            await asyncio.sleep(0)  # done-callbacks run on the next loop turn

    asyncio.run(scenario())

    records = read_topic(kafka_settings, topics.trade, n)
    values = [int(r.value) for r in records]
    assert len(values) == n and sorted(values) == list(range(n))  # every record, none twice
    for key in KEYS:
        mine = sorted((r for r in records if r.key == key), key=lambda r: r.offset)
        assert [int(r.value) for r in mine] == [i for i in range(n) if KEYS[i % len(KEYS)] == key]
    assert len(settled) == len(range(0, n, 3))
    for partition in {p for p, _, _ in settled}:
        offsets = [o for p, o, _ in settled if p == partition]
        assert offsets == sorted(offsets)  # per partition, futures resolved in the broker's order
        order = [i for p, _, i in settled if p == partition]
        assert order == sorted(order)


def test_failures_and_dead_letters_come_back_to_the_parent_and_the_sink_goes_on(kafka_settings, topics):
    ensure_topics(kafka_settings, topics.all())
    before = failures()

    async def scenario() -> None:
        async with process_sink(kafka_settings, topics) as sink:
            too_big = await sink.publish(topics.news, b"k", bytes(2 * 1024 * 1024), ack=True)
            with pytest.raises(MessageSizeTooLargeError):  # raised by send() in the child, the same type here
                await asyncio.wait_for(too_big, 30)
            await sink.dead_letter(DeadLetter(reason="malformed JSON", stage="bybit.ws", source_topic="wss://x"),
                                   b"\xff{not json", b"key")
            ok = await sink.publish(topics.news, b"k", b"fine", ack=True)
            metadata = await asyncio.wait_for(ok, 30)
            assert metadata.topic == topics.news and metadata.offset == 0

    asyncio.run(scenario())
    assert failures() - before == 1
    [letter] = read_topic(kafka_settings, topics.deadletter, 1)
    assert (letter.key, letter.value) == (b"key", b"\xff{not json")
    assert dict(letter.headers)[DEADLETTER_REASON] == b"malformed JSON"
    assert [r.value for r in read_topic(kafka_settings, topics.news, 1)] == [b"fine"]


def test_close_delivers_everything_queued_and_in_flight(kafka_settings, topics):
    ensure_topics(kafka_settings, topics.all())
    n = 2_000

    async def scenario() -> int:
        sink = await process_sink(kafka_settings, topics, queue_size=500).start()
        for i in range(n):
            await sink.publish(topics.orderbook, KEYS[i % 2], b"%d" % i)
        pid = sink.producer_pid
        await sink.close()  # no flush first: close itself must deliver what is queued and in flight
        return pid

    pid = asyncio.run(scenario())
    assert sorted(int(r.value) for r in read_topic(kafka_settings, topics.orderbook, n)) == list(range(n))
    with pytest.raises(ProcessLookupError):  # the child exited and was reaped
        os.kill(pid, 0)


def test_a_killed_producer_process_fails_the_sink_with_one_clear_error_instead_of_hanging(kafka_settings, topics):
    ensure_topics(kafka_settings, topics.all())
    before = failures()

    async def scenario() -> None:
        sink = await process_sink(kafka_settings, topics).start()
        delivered = await sink.publish(topics.trade, b"k", b"before", ack=True)
        await asyncio.wait_for(delivered, 30)
        os.kill(sink.producer_pid, signal.SIGSTOP)  # hold it so the next records stay unacknowledged
        waiting = [await sink.publish(topics.trade, b"k", b"%d" % i, ack=True) for i in range(20)]
        await until(lambda: sink.unacknowledged == 20)
        os.kill(sink.producer_pid, signal.SIGKILL)

        error = await asyncio.wait_for(sink.wait_failed(), 10)
        assert isinstance(error, ProducerProcessDied)
        message = str(error)
        assert f"pid {sink.producer_pid}" in message and "exit code -9" in message and "'test'" in message
        assert "\n" not in message
        for future in waiting:
            with pytest.raises(ProducerProcessDied):
                await asyncio.wait_for(future, 5)
        with pytest.raises(ProducerProcessDied):
            await sink.publish(topics.trade, b"k", b"after")
        started = time.monotonic()
        await sink.close(timeout_s=5)
        assert time.monotonic() - started < 5

    asyncio.run(scenario())
    assert failures() - before == 20


def test_the_supervisor_stops_a_source_whose_producer_process_died(kafka_settings, topics):
    async def scenario() -> None:
        sink = await process_sink(kafka_settings, topics).start()
        idle_source = asyncio.Event().wait()  # a source with nothing to publish would never notice by itself
        os.kill(sink.producer_pid, signal.SIGKILL)
        with pytest.raises(ProducerProcessDied, match="kafka producer process"):
            await asyncio.wait_for(_until_sink_fails(idle_source, sink), 10)
        await sink.close(timeout_s=5)

    asyncio.run(scenario())


def test_in_flight_bytes_across_the_process_boundary_stay_bounded_while_nothing_is_acknowledged(kafka_settings,
                                                                                                topics):
    ensure_topics(kafka_settings, topics.all())
    size, bound, queue_size, n = 1_000, 50_000, 20, 500

    async def scenario() -> None:
        sink = await process_sink(kafka_settings, topics, queue_size=queue_size, batch_size=10,
                                  max_in_flight_bytes=bound).start()
        os.kill(sink.producer_pid, signal.SIGSTOP)  # no acknowledgement comes back, as from a stalled broker
        published = 0

        async def source() -> None:
            nonlocal published
            for i in range(n):
                await sink.publish(topics.trade, KEYS[i % 3], b"%09d" % i + bytes(size - 9))
                published += 1

        task = asyncio.create_task(source())
        try:
            await until(lambda: sink.pending == queue_size)
            for _ in range(20):  # the loop keeps turning while the source waits
                await asyncio.sleep(0.01)
            assert not task.done()
            assert sink.max_in_flight_seen <= bound and sink.unacknowledged <= bound // size
            assert published <= bound // size + queue_size + 10 + 1  # in flight + queued + one batch in hand
        finally:
            os.kill(sink.producer_pid, signal.SIGCONT)
        await asyncio.wait_for(task, 60)
        await sink.flush()
        assert sink.max_in_flight_seen <= bound
        await sink.close()

    asyncio.run(scenario())
    records = read_topic(kafka_settings, topics.trade, n)
    assert sorted(int(r.value[:9]) for r in records) == list(range(n))


LEAVE_WITHOUT_CLOSE = """
import asyncio, functools, sys
from ingest.kafka import make_producer
from ingest.process_sink import ProcessKafkaSink
from ingest.settings import KafkaSettings, TopicSettings

async def main():
    sink = ProcessKafkaSink(functools.partial(make_producer, KafkaSettings(bootstrap=sys.argv[1])), TopicSettings(),
                            source="test")
    await sink.start()
    await sink.publish(sys.argv[2], b"k", b"left behind")
    await asyncio.sleep(0.1)  # handed to the child, not flushed, never closed

asyncio.run(main())
"""


def test_an_interpreter_that_never_closed_its_sink_still_exits_and_the_child_delivers(kafka_settings, topics):
    import subprocess
    import sys

    ensure_topics(kafka_settings, topics.all())
    done = subprocess.run([sys.executable, "-c", LEAVE_WITHOUT_CLOSE, kafka_settings.bootstrap, topics.news],
                          capture_output=True, timeout=60, cwd=os.getcwd())
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert [r.value for r in read_topic(kafka_settings, topics.news, 1)] == [b"left behind"]


def test_keyed_records_land_on_the_partition_kafka_pythons_default_partitioner_picks(kafka_settings, topics):
    ensure_topics(kafka_settings, topics.all())
    keys = [b"key-%d" % i for i in range(40)]  # enough keys to reach every one of the 3 partitions

    async def scenario() -> None:
        async with process_sink(kafka_settings, topics) as sink:
            for key in keys:
                await sink.publish(topics.trade, key, key)
            await sink.flush()

    asyncio.run(scenario())
    records = read_topic(kafka_settings, topics.trade, len(keys))
    assert {r.partition for r in records} == {0, 1, 2}
    for record in records:
        assert record.partition == (murmur2(record.key) & 0x7FFFFFFF) % 3


# -- the child's parts, with hand-written stubs (no broker, no process) ----------------------------------------


class StubFuture:
    """What `_Child` reads of kafka-python's FutureRecordMetadata."""

    def __init__(self) -> None:
        self.is_done, self.exception, self.value = False, None, None

    def succeed(self, value: object = None) -> None:
        self.is_done, self.value = True, value

    def fail(self, exc: BaseException) -> None:
        self.is_done, self.exception = True, exc


class StubProducer:
    """A producer whose sends stay pending until the test settles their futures."""

    def __init__(self, partitions: int = 3) -> None:
        self.config = {"partitioner": DefaultPartitioner()}
        self.partition_count = partitions
        self.sent: list[tuple[str, bytes | None, int | None, StubFuture]] = []
        self.metadata_asks = 0

    def partitions_for(self, topic: str) -> set[int]:
        self.metadata_asks += 1
        return set(range(self.partition_count))

    def send(self, topic: str, key: bytes | None = None, value: bytes | None = None,
             headers: list | None = None, partition: int | None = None) -> StubFuture:
        future = StubFuture()
        self.sent.append((topic, key, partition, future))
        return future


def shipped(results: Connection) -> list:
    items: list = []
    while results.poll(0):
        items += pickle.loads(results.recv_bytes())
    return items


def test_the_child_reports_each_partitions_records_in_order_and_a_stalled_one_holds_back_only_its_own():
    # Arrange: a, b, c go to two partitions (keys chosen by their hash), sent as records 10, 11, 12
    results, child_end = multiprocessing.Pipe(duplex=False)
    producer = StubProducer()
    child = _Child(producer, child_end)
    [(_, k1), (_, k2)] = _first_keys_per_partition(2)
    child._send_all(10, [("t", k1, b"a"), ("t", k2, b"b"), ("t", k1, b"c", None, True)])
    (_, _, _, a), (_, _, _, b), (_, _, _, c) = producer.sent

    # Act / Assert: c settles before a (same partition): nothing of that partition goes back yet
    c.succeed("metadata of c")
    b.fail(MessageSizeTooLargeError("too big"))
    child._ship()
    [(seq, what, error)] = shipped(results)
    assert (seq, what) == (11, "delivery") and isinstance(error, MessageSizeTooLargeError)
    a.succeed()
    child._ship()
    assert shipped(results) == [10, (12, "ok", "metadata of c")]
    assert not child._waiting()


def test_the_child_passes_the_cached_default_partition_and_forgets_it_when_partitions_change():
    producer = StubProducer(partitions=3)
    partitions = _KeyPartitions.for_producer(producer)
    assert partitions is not None
    keys = [b"BTCUSDT", b"ETHUSDT", b"SOLUSDT", b"k-1", b"k-2"]
    cluster = StubCluster(3)
    for key in keys * 3:
        assert partitions("t", key) == DefaultPartitioner().partition("t", key, key, None, None, cluster)
    asks = producer.metadata_asks
    partitions.refresh()
    assert producer.metadata_asks == asks + 1  # one look per topic per refresh, none per record

    producer.partition_count = cluster.count = 5
    partitions.refresh()
    for key in keys:
        assert partitions("t", key) == DefaultPartitioner().partition("t", key, key, None, None, cluster)


def test_the_child_leaves_partitioning_to_a_producer_with_its_own_partitioner():
    producer = StubProducer()
    producer.config["partitioner"] = object()
    assert _KeyPartitions.for_producer(producer) is None


class StubCluster:
    """What DefaultPartitioner reads of kafka-python's ClusterMetadata."""

    def __init__(self, count: int) -> None:
        self.count = count

    def topics(self) -> set[str]:
        return {"t"}

    def partitions_for_topic(self, topic: str) -> set[int]:
        return set(range(self.count))

    def available_partitions_for_topic(self, topic: str) -> set[int]:
        return set(range(self.count))


def _first_keys_per_partition(n: int) -> list[tuple[int, bytes]]:
    """`n` keys that the default partitioner puts on `n` different partitions of three."""
    found: dict[int, bytes] = {}
    for i in range(100):
        key = b"key-%d" % i
        found.setdefault((murmur2(key) & 0x7FFFFFFF) % 3, key)
    return sorted(found.items())[:n]
