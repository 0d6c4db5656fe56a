"""ProcessKafkaSink against the real embedded broker: the producer in a child process keeps KafkaSink's contract."""

from __future__ import annotations

import asyncio
import functools
import os
import signal
import time

import pytest
from kafka.errors import MessageSizeTooLargeError
from prometheus_client import REGISTRY

from ingest.kafka import DEADLETTER_REASON, DeadLetter, ensure_topics, make_producer
from ingest.process_sink import ProcessKafkaSink, ProducerProcessDied
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
