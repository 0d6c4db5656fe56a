"""Strategy consumer: an async iterator over a Redis consumer group that resumes where the strategy stopped."""

from __future__ import annotations

import asyncio
import time

import pytest
from redis.asyncio import Redis

from consumers.stream import SignalStream, latest
from ingest.contracts import Document
from signals.contracts import ClassProbs, ModelInfo, Signal
from signals.keys import KEYS
from signals.redis_sink import RedisSignalSink

pytestmark = pytest.mark.integration

MODEL = ModelInfo(name="m", version="v1", content_hash="a" * 64)


def make_signal(i: int, symbol: str = "BTCUSDT") -> Signal:
    now = time.time_ns()
    doc = Document.create(kind="news", source="t", title=f"headline {i}", ts_event=now, ts_ingest=now)
    return Signal.from_probs(document_ids=(doc.id,), symbol=symbol, probs=ClassProbs(bearish=0.1, neutral=0.2,
                             bullish=0.7), model=MODEL, ts_event=now + i, ts_ingest=now, ts_scored=now)


async def take(stream: SignalStream, n: int) -> list[Signal]:
    out = []
    async for sig in stream:
        out.append(sig)
        if len(out) == n:
            stream.close()
    return out


def test_strategy_resumes_after_the_last_acknowledged_signal(redis_server, redis_client):
    sink = RedisSignalSink(redis_client, maxlen=1000, dedupe_ttl_s=600)
    sent = [make_signal(i) for i in range(10)]
    sink.publish(sent)

    async def scenario() -> tuple[list[Signal], list[Signal]]:
        client = Redis.from_url(redis_server.url)
        try:
            first = await take(SignalStream(client, "momo", ["BTCUSDT"], start="earliest", block_ms=100), 4)
            rest = await take(SignalStream(client, "momo", ["BTCUSDT"], start="earliest", block_ms=100), 6)
            return first, rest
        finally:
            await client.aclose()

    first, rest = asyncio.run(scenario())
    assert [s.id for s in first + rest] == [s.id for s in sent]


def test_republished_signal_is_not_delivered_twice(redis_server, redis_client):
    sink = RedisSignalSink(redis_client, maxlen=1000, dedupe_ttl_s=600)
    sig = make_signal(1)
    assert sink.publish([sig])[0] is not None
    assert sink.publish([sig]) == [None]  # a re-scored document after a crash adds nothing
    assert redis_client.xlen(KEYS.stream("BTCUSDT")) == 1


def test_latest_snapshot_per_symbol(redis_server, redis_client):
    sink = RedisSignalSink(redis_client, maxlen=1000, dedupe_ttl_s=600)
    sink.publish([make_signal(1, "ETHUSDT"), make_signal(2, "BTCUSDT"), make_signal(3, "BTCUSDT")])

    async def read() -> dict[str, Signal]:
        client = Redis.from_url(redis_server.url)
        try:
            return await latest(client)
        finally:
            await client.aclose()

    snap = asyncio.run(read())
    assert set(snap) == {"ETHUSDT", "BTCUSDT"}
