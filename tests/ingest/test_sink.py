"""KafkaSink with a hand-written producer stand-in: the loop never blocks, memory stays bounded, acks arrive."""

from __future__ import annotations

import asyncio
import threading

import pytest
from kafka.future import Future

from ingest.kafka import DEADLETTER_REASON, DeadLetter
from ingest.settings import TopicSettings
from ingest.sink import KafkaSink, SinkClosed
from tests.ingest.servers import until


class SlowProducer:
    """Accepts records and acknowledges them only when told to, like a broker that stopped answering."""

    def __init__(self, block_send: threading.Event | None = None) -> None:
        self.sent: list[tuple[str, bytes | None, bytes, list | None]] = []
        self.pending: list[Future] = []
        self.block_send = block_send
        self.lock = threading.Lock()

    def send(self, topic, key=None, value=None, headers=None):
        if self.block_send is not None:
            self.block_send.wait()  # kafka-python blocking in send(), e.g. waiting for metadata
        future = Future()
        with self.lock:
            self.sent.append((topic, key, value, headers))
            self.pending.append(future)
        return future

    def ack_all(self) -> None:
        with self.lock:
            pending, self.pending = self.pending, []
        for i, future in enumerate(pending):
            future.success(i)

    def flush(self, timeout=None) -> None:
        self.ack_all()

    def close(self, timeout=None) -> None:
        self.ack_all()


def test_a_blocked_send_does_not_block_the_event_loop():
    release = threading.Event()
    producer = SlowProducer(block_send=release)

    async def scenario() -> int:
        sink = await KafkaSink(lambda: producer, TopicSettings(), source="t", queue_size=10).start()
        await sink.publish("x", b"k", b"v")
        ticks = 0
        for _ in range(50):  # the producer thread is stuck in send(); the loop must keep running
            await asyncio.sleep(0)
            ticks += 1
        assert producer.sent == []
        release.set()
        await sink.close()
        return ticks

    assert asyncio.run(scenario()) == 50
    assert producer.sent == [("x", b"k", b"v", None)]


def test_unacknowledged_bytes_and_queue_are_bounded_and_the_source_waits():
    producer = SlowProducer()

    async def scenario() -> None:
        sink = await KafkaSink(lambda: producer, TopicSettings(), source="t", queue_size=5,
                               max_in_flight_bytes=10 * 1000, batch_size=2).start()
        published = 0

        async def source() -> None:
            nonlocal published
            for i in range(100):
                await sink.publish("x", None, bytes(1000))
                published += 1

        task = asyncio.create_task(source())
        await until(lambda: len(producer.sent) == 10 and sink.pending == 5)
        for _ in range(20):
            await asyncio.sleep(0.005)
        # the broker acknowledged nothing: 10 records in flight, 5 queued, at most one batch in hand
        assert not task.done()
        assert len(producer.sent) == 10 and sink.max_in_flight_seen <= 10 * 1000
        assert sink.pending <= 5 and published <= 10 + 5 + 2 + 1
        producer.ack_all()  # the broker recovers: the source resumes
        while not task.done() or len(producer.sent) < 100:
            producer.ack_all()
            await asyncio.sleep(0.001)
        await sink.close()
        assert len(producer.sent) == 100 and sink.max_in_flight_seen <= 10 * 1000

    asyncio.run(scenario())


def test_ack_futures_resolve_on_acknowledgement_and_fail_on_errors():
    producer = SlowProducer()

    async def scenario() -> None:
        sink = await KafkaSink(lambda: producer, TopicSettings(), source="t").start()
        ok = await sink.publish("x", b"k", b"v", ack=True)
        bad = await sink.publish("x", b"k", b"w", ack=True)
        while len(producer.pending) < 2:
            await asyncio.sleep(0.001)
        first, second = producer.pending
        first.success("meta")
        second.failure(RuntimeError("broker said no"))
        assert await ok == "meta"
        with pytest.raises(RuntimeError, match="broker said no"):
            await bad
        await sink.close()
        with pytest.raises(SinkClosed):
            await sink.publish("x", None, b"late")

    asyncio.run(scenario())


def test_dead_letters_keep_the_raw_bytes_and_carry_the_reason():
    producer = SlowProducer()
    topics = TopicSettings(deadletter="dl")

    async def scenario() -> None:
        sink = await KafkaSink(lambda: producer, topics, source="t").start()
        await sink.dead_letter(DeadLetter(reason="malformed JSON", stage="bybit.ws", source_topic="wss://x"),
                               b"\xff{not json", b"key")
        await sink.close()

    asyncio.run(scenario())
    [(topic, key, value, headers)] = producer.sent
    assert (topic, key, value) == ("dl", b"key", b"\xff{not json")
    assert dict(headers)[DEADLETTER_REASON] == b"malformed JSON"


def test_close_gives_up_on_a_broker_that_never_acknowledges_instead_of_hanging():
    producer = SlowProducer()

    async def scenario() -> None:
        sink = await KafkaSink(lambda: producer, TopicSettings(), source="t", queue_size=5,
                               max_in_flight_bytes=2_000).start()
        ack = None
        for i in range(6):
            future = await sink.publish("x", None, bytes(1000), ack=True)
            ack = ack or future
        await until(lambda: len(producer.sent) == 2)
        await sink.close(timeout_s=0.2)  # returns: the two in flight stay with the producer, the rest is dropped
        assert len(producer.sent) == 2

    asyncio.run(scenario())
