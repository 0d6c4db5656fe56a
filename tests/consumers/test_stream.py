"""Strategy SDK against a real Redis: acknowledgement after the handler, resume, reclaim, dedupe, snapshots."""

from __future__ import annotations

import os
import signal as signal_module
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from redis.asyncio import Redis

from consumers.stream import SignalStream, latest
from signals.contracts import Signal
from signals.keys import KEYS
from signals.redis_sink import RedisSignalSink, stream_key
from tests.conftest import eventually
from tests.consumers.helpers import make_signal, run

pytestmark = pytest.mark.integration


@pytest.fixture
def sink(redis_client) -> RedisSignalSink:
    return RedisSignalSink(redis_client, maxlen=10_000, dedupe_ttl_s=600)


def pending(redis_client, group: str, symbol: str = "BTCUSDT") -> int:
    return redis_client.xpending(stream_key(symbol), group)["pending"]


async def collect(url: str, n: int, strategy: str = "momo", **options) -> list[Signal]:
    """Run a stream in callback form until `n` signals are handled."""
    client = Redis.from_url(url)
    got: list[Signal] = []
    stream = SignalStream(client, strategy, options.pop("symbols", ["BTCUSDT"]), start="earliest", block_ms=50,
                          **options)

    def handle(sig: Signal) -> None:
        got.append(sig)
        if len(got) == n:
            stream.close()

    try:
        await stream.run(handle)
    finally:
        await client.aclose()
    return got


def test_callback_form_acknowledges_each_signal_after_its_handler(redis_server, redis_client, sink):
    sent = [make_signal(i) for i in range(5)]
    sink.publish(sent)
    seen_pending: list[int] = []

    async def scenario() -> list[Signal]:
        client = Redis.from_url(redis_server.url)
        got: list[Signal] = []
        stream = SignalStream(client, "momo", ["BTCUSDT"], start="earliest", block_ms=50)

        async def handle(sig: Signal) -> None:  # async handlers are awaited before the acknowledgement
            info = await client.xpending(stream_key("BTCUSDT"), "momo")
            seen_pending.append(info["pending"])
            got.append(sig)
            if len(got) == len(sent):
                stream.close()

        try:
            assert await stream.run(handle) == len(sent)
        finally:
            await client.aclose()
        return got

    got = run(scenario())

    assert [s.id for s in got] == [s.id for s in sent]
    # The whole batch was read at once; each handler still saw its own signal unacknowledged.
    assert seen_pending == [5, 4, 3, 2, 1]
    assert pending(redis_client, "momo") == 0


def test_handler_error_leaves_the_signal_pending_and_a_restart_resumes_from_it(redis_server, redis_client, sink):
    sent = [make_signal(i) for i in range(5)]
    sink.publish(sent)

    async def crash_on_third() -> list[Signal]:
        client = Redis.from_url(redis_server.url)
        got: list[Signal] = []

        def handle(sig: Signal) -> None:
            if len(got) == 2:
                raise RuntimeError("strategy bug")
            got.append(sig)

        try:
            with pytest.raises(RuntimeError, match="strategy bug"):
                await SignalStream(client, "momo", ["BTCUSDT"], consumer="c1", start="earliest",
                                   block_ms=50).run(handle)
        finally:
            await client.aclose()
        return got

    handled = run(crash_on_third())
    assert pending(redis_client, "momo") == 3  # the failed one and the two read with it

    resumed = run(collect(redis_server.url, 3, consumer="c1"))

    assert [s.id for s in handled + resumed] == [s.id for s in sent]
    assert pending(redis_client, "momo") == 0


def test_error_callback_can_acknowledge_and_go_on(redis_server, redis_client, sink):
    sink.publish([make_signal(i) for i in range(3)])
    errors: list[str] = []

    async def scenario() -> int:
        client = Redis.from_url(redis_server.url)
        stream = SignalStream(client, "momo", ["BTCUSDT"], start="earliest", block_ms=50)
        calls = 0

        def handle(sig: Signal) -> None:
            nonlocal calls
            calls += 1
            if calls == 3:
                stream.close()
            if calls == 1:
                raise ValueError("bad signal for this strategy")

        def on_error(exc: Exception, sig: Signal) -> bool:
            errors.append(f"{type(exc).__name__}:{sig.id}")
            return True

        try:
            return await stream.run(handle, on_error=on_error)
        finally:
            await client.aclose()

    assert run(scenario()) == 3
    assert len(errors) == 1 and errors[0].startswith("ValueError:")
    assert pending(redis_client, "momo") == 0


KILLABLE_CONSUMER = textwrap.dedent("""
    import asyncio, sys, time
    from redis.asyncio import Redis
    from consumers.stream import SignalStream

    async def main(url, marker):
        client = Redis.from_url(url)
        stream = SignalStream(client, "momo", ["BTCUSDT"], consumer="crashy", start="earliest", block_ms=50,
                              claim_min_idle_ms=None)
        async def handle(sig):
            with open(marker, "a") as fh:
                fh.write(sig.id + "\\n")
            if sum(1 for _ in open(marker)) == 2:
                await asyncio.sleep(3600)  # stuck mid-handler until killed
        await stream.run(handle)

    asyncio.run(main(sys.argv[1], sys.argv[2]))
""")


def test_consumer_killed_mid_handler_has_its_signals_claimed_by_another(redis_server, redis_client, sink,
                                                                         tmp_path: Path):
    sent = [make_signal(i) for i in range(6)]
    sink.publish(sent)
    marker = tmp_path / "handled.txt"
    proc = subprocess.Popen([sys.executable, "-c", KILLABLE_CONSUMER, redis_server.url, str(marker)],
                            env={**os.environ, "FINSIGNAL_LOG_LEVEL": "WARNING"})
    try:
        eventually(lambda: marker.is_file() and len(marker.read_text().split()) == 2, timeout_s=30)
    finally:
        proc.send_signal(signal_module.SIGKILL)
        proc.wait(10)
    in_flight = marker.read_text().split()[1]
    # Killed with the first signal acknowledged, the second mid-handler, four more read but not handled.
    assert pending(redis_client, "momo") == 5

    rescued = run(collect(redis_server.url, 5, consumer="rescuer", claim_min_idle_ms=100, claim_interval_s=0.05))

    assert rescued[0].id == in_flight
    assert [s.id for s in rescued] == [s.id for s in sent[1:]]
    assert pending(redis_client, "momo") == 0
    consumers = {c["name"].decode(): c["pending"] for c in redis_client.xinfo_consumers(stream_key("BTCUSDT"), "momo")}
    assert consumers == {"crashy": 0, "rescuer": 0}


def test_live_consumer_does_not_claim_entries_that_are_not_idle_long_enough(redis_server, redis_client, sink):
    sink.publish([make_signal(i) for i in range(3)])
    # Another consumer read them a moment ago and is still working on them.
    redis_client.xgroup_create(stream_key("BTCUSDT"), "momo", id="0")
    redis_client.xreadgroup("momo", "busy", {stream_key("BTCUSDT"): ">"}, count=10)
    sink.publish([make_signal(10)])

    got = run(collect(redis_server.url, 1, consumer="other", claim_min_idle_ms=600_000, claim_interval_s=0.05))

    assert [s.id for s in got] == [make_signal(10).id]
    busy = {c["name"].decode(): c["pending"] for c in redis_client.xinfo_consumers(stream_key("BTCUSDT"), "momo")}
    assert busy["busy"] == 3


def test_duplicate_signal_ids_are_acknowledged_and_dropped(redis_server, redis_client, sink):
    first, second, third = make_signal(1), make_signal(2), make_signal(3)
    key = stream_key("BTCUSDT")
    for sig in (first, first, second, first, third):  # re-published after the sink's dedupe window expired
        redis_client.xadd(key, {"id": sig.id, "signal": sig.model_dump_json()})

    got = run(collect(redis_server.url, 3))

    assert [s.id for s in got] == [first.id, second.id, third.id]
    assert pending(redis_client, "momo") == 0


def test_unreadable_entries_are_acknowledged_not_delivered(redis_server, redis_client, sink):
    key = stream_key("BTCUSDT")
    redis_client.xadd(key, {"id": "x", "signal": b'{"not": "a signal"}'})
    sink.publish([make_signal(1)])

    got = run(collect(redis_server.url, 1))

    assert [s.id for s in got] == [make_signal(1).id]
    assert pending(redis_client, "momo") == 0


def test_pending_entry_deleted_from_the_stream_is_claimed_and_skipped(redis_server, redis_client, sink):
    sent = [make_signal(i) for i in range(3)]
    sink.publish(sent)
    key = stream_key("BTCUSDT")
    redis_client.xgroup_create(key, "momo", id="0")
    entries = redis_client.xreadgroup("momo", "gone", {key: ">"}, count=10)[0][1]
    redis_client.xdel(key, entries[0][0])  # trimmed by MAXLEN while pending

    got = run(collect(redis_server.url, 2, consumer="rescuer", claim_min_idle_ms=0, claim_interval_s=0.05))

    assert [s.id for s in got] == [s.id for s in sent[1:]]
    assert pending(redis_client, "momo") == 0


def test_poison_signal_goes_to_the_dead_letter_stream_after_max_deliveries(redis_server, redis_client, sink):
    poison, good = make_signal(1), make_signal(2)
    sink.publish([poison, good])

    async def always_fails() -> None:
        client = Redis.from_url(redis_server.url)

        def handle(sig: Signal) -> None:
            raise RuntimeError("cannot handle")

        try:
            with pytest.raises(RuntimeError):
                await SignalStream(client, "momo", ["BTCUSDT"], consumer="c1", start="earliest", block_ms=50,
                                   max_deliveries=2).run(handle)
        finally:
            await client.aclose()

    for _ in range(2):
        run(always_fails())
    got = run(collect(redis_server.url, 1, consumer="c1", max_deliveries=2))

    assert [s.id for s in got] == [good.id]
    letters = redis_client.xrange("finsignal:deadletter:momo")
    assert len(letters) == 1
    assert Signal.model_validate_json(letters[0][1][b"signal"]).id == poison.id
    assert letters[0][1][b"attempts"] == b"2"
    assert not redis_client.keys("finsignal:attempts:*")  # no counter left behind
    assert pending(redis_client, "momo") == 0


def test_each_strategy_group_gets_every_signal(redis_server, redis_client, sink):
    sent = [make_signal(i) for i in range(4)]
    sink.publish(sent)

    a = run(collect(redis_server.url, 4, strategy="alpha"))
    b = run(collect(redis_server.url, 4, strategy="beta"))

    assert [s.id for s in a] == [s.id for s in b] == [s.id for s in sent]


def test_patterns_follow_symbols_that_appear_later(redis_server, redis_client, sink):
    sink.publish([make_signal(1, "BTCUSDT"), make_signal(2, "AAPL")])

    async def scenario() -> list[Signal]:
        client = Redis.from_url(redis_server.url)
        got: list[Signal] = []
        stream = SignalStream(client, "crypto", patterns=["*USDT"], start="earliest", block_ms=50,
                              rediscover_s=0.05)

        async def handle(sig: Signal) -> None:
            got.append(sig)
            if len(got) == 1:
                sink.publish([make_signal(3, "ETHUSDT"), make_signal(4, "MSFT")])
            if len(got) == 2:
                stream.close()

        try:
            await stream.run(handle)
        finally:
            await client.aclose()
        return got

    got = run(scenario())

    assert [(s.symbol, s.id) for s in got] == [("BTCUSDT", make_signal(1, "BTCUSDT").id),
                                               ("ETHUSDT", make_signal(3, "ETHUSDT").id)]


def test_latest_value_hash_keeps_the_newest_signal_by_event_time(redis_server, redis_client, sink):
    newer = make_signal(2, ts_event=1_800_000_000_000_000_512)
    older = make_signal(1, ts_event=1_800_000_000_000_000_256)  # differs below double precision
    sink.publish([newer])
    sink.publish([older])  # a late re-score of an older document

    async def read() -> dict[str, Signal]:
        client = Redis.from_url(redis_server.url)
        try:
            return await latest(client, ["BTCUSDT"])
        finally:
            await client.aclose()

    assert run(read())["BTCUSDT"].id == newer.id
    assert redis_client.xlen(stream_key("BTCUSDT")) == 2  # both are still delivered in the stream
    sink.publish([make_signal(3, ts_event=1_800_000_000_000_001_000)])
    assert Signal.model_validate_json(redis_client.get(KEYS.latest("BTCUSDT"))).id == make_signal(3).id


def test_stream_snapshot_holds_the_newest_handled_signal_per_symbol(redis_server, redis_client, sink):
    sink.publish([make_signal(5, "BTCUSDT"), make_signal(1, "BTCUSDT"), make_signal(2, "ETHUSDT")])

    async def scenario() -> dict[str, Signal]:
        client = Redis.from_url(redis_server.url)
        stream = SignalStream(client, "momo", ["BTCUSDT", "ETHUSDT"], start="earliest", block_ms=50)
        n = 0
        async for _ in stream:
            n += 1
            if n == 3:
                stream.close()
        await client.aclose()
        return stream.snapshot

    snap = run(scenario())

    assert {sym: s.id for sym, s in snap.items()} == {"BTCUSDT": make_signal(5, "BTCUSDT").id,
                                                      "ETHUSDT": make_signal(2, "ETHUSDT").id}
