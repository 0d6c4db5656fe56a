"""The WebSocket gateway with real clients and a real Redis: auth, subscriptions, resume, slow clients, HTTP."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import websockets
from redis.asyncio import Redis
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidStatus

from consumers.gateway.protocol import CloseCode, Hello, SignalMessage, Subscribe, decode_server
from consumers.gateway.server import Gateway, GatewayConfigError, check_settings
from consumers.gateway.settings import GatewaySettings
from finsignal.embedded import EmbeddedRedis
from signals.redis_sink import RedisSignalSink, stream_key
from tests.consumers.helpers import make_signal, run

pytestmark = pytest.mark.integration

TOKEN = "s3cret-token"


def settings(**overrides) -> GatewaySettings:
    return GatewaySettings(**{"port": 0, "tokens": {"desk-a": TOKEN, "desk-b": "other"}, "heartbeat_s": 60.0,
                              **overrides})


@asynccontextmanager
async def gateway(url: str, **overrides) -> AsyncIterator[Gateway]:
    client = Redis.from_url(url)
    try:
        async with Gateway(client, settings(**overrides)) as gw:
            yield gw
    finally:
        await client.aclose()


async def connect(gw: Gateway, token: str | None = TOKEN, **options) -> ClientConnection:
    ws = await websockets.connect(f"ws://127.0.0.1:{gw.port}/ws", **options)
    await ws.send(Hello(token=token, client="tests").model_dump_json())
    return ws


async def expect(ws: ClientConnection, kind: str, timeout_s: float = 10.0):
    """The next message of type `kind`, skipping heartbeats."""
    while True:
        message = decode_server(await asyncio.wait_for(ws.recv(), timeout_s))
        if message.type == kind:
            return message
        assert message.type == "heartbeat", message


async def closed_with(ws: ClientConnection, timeout_s: float = 10.0) -> int | None:
    """Read until the server closes; return the close code."""
    try:
        while True:
            await asyncio.wait_for(ws.recv(), timeout_s)
    except ConnectionClosed as exc:
        return exc.rcvd.code if exc.rcvd else None


async def subscribe(ws: ClientConnection, *symbols: str, **fields):
    await ws.send(Subscribe(symbols=symbols, **fields).model_dump_json())
    return await expect(ws, "subscribed")


@pytest.fixture
def sink(redis_client) -> RedisSignalSink:
    return RedisSignalSink(redis_client, maxlen=100_000, dedupe_ttl_s=600)


def test_authenticated_client_gets_signals_of_its_symbols_in_order(redis_server, sink):
    async def scenario():
        async with gateway(redis_server.url) as gw:
            ws = await connect(gw)
            welcome = await expect(ws, "welcome")
            await subscribe(ws, "BTCUSDT", "ETHUSDT")
            sent = [make_signal(i, "BTCUSDT" if i % 2 else "ETHUSDT") for i in range(6)] + [make_signal(9, "AAPL")]
            sink.publish(sent)
            got = [await expect(ws, "signal") for _ in range(6)]
            await ws.close()
            return welcome, sent, got

    welcome, sent, got = run(scenario())

    assert welcome.client == "desk-a"
    assert all(isinstance(m, SignalMessage) and m.id for m in got)
    for sym in ("BTCUSDT", "ETHUSDT"):
        assert [m.signal for m in got if m.symbol == sym] == [s for s in sent if s.symbol == sym]


def test_bad_or_missing_token_is_refused(redis_server):
    async def scenario():
        async with gateway(redis_server.url) as gw:
            bad = await connect(gw, token="wrong")
            missing = await connect(gw, token=None)
            codes = [await closed_with(bad), await closed_with(missing)]
            with pytest.raises(InvalidStatus) as refused:
                await websockets.connect(f"ws://127.0.0.1:{gw.port}/ws",
                                         additional_headers={"Authorization": "Bearer wrong"})
            header_ok = await websockets.connect(f"ws://127.0.0.1:{gw.port}/ws",
                                                 additional_headers={"Authorization": "Bearer other"})
            await header_ok.send(Hello().model_dump_json())  # the header authenticated it
            welcome = await expect(header_ok, "welcome")
            await header_ok.close()
            return codes, refused.value.response.status_code, welcome

    codes, status, welcome = run(scenario())

    assert codes == [CloseCode.UNAUTHORIZED, CloseCode.UNAUTHORIZED]
    assert status == 401
    assert welcome.client == "desk-b"


def test_a_client_must_say_hello_first_and_in_time(redis_server):
    async def scenario():
        async with gateway(redis_server.url, auth_timeout_s=0.3) as gw:
            silent = await websockets.connect(f"ws://127.0.0.1:{gw.port}/ws")
            rude = await websockets.connect(f"ws://127.0.0.1:{gw.port}/ws")
            await rude.send(Subscribe(symbols=("BTCUSDT",)).model_dump_json())
            future = await websockets.connect(f"ws://127.0.0.1:{gw.port}/ws")
            await future.send(json.dumps({"v": 2, "type": "hello", "token": TOKEN}))
            return await closed_with(silent), await closed_with(rude), await closed_with(future)

    assert run(scenario()) == (CloseCode.AUTH_TIMEOUT, CloseCode.PROTOCOL_ERROR, CloseCode.PROTOCOL_ERROR)


def test_invalid_messages_get_an_error_and_the_connection_stays(redis_server, sink):
    async def scenario():
        async with gateway(redis_server.url, max_symbols=2) as gw:
            ws = await connect(gw)
            await expect(ws, "welcome")
            await ws.send("{not json")
            first = await expect(ws, "error")
            await ws.send(Subscribe(symbols=("A", "B", "C")).model_dump_json())
            second = await expect(ws, "error")
            await ws.send(json.dumps({"v": 1, "type": "ping", "nonce": "n1"}))
            pong = await expect(ws, "pong")
            await ws.close()
            return first, second, pong

    first, second, pong = run(scenario())

    assert first.code == "invalid_message"
    assert second.code == "too_many_symbols"
    assert pong.nonce == "n1"


def test_resume_replays_what_followed_the_stream_id_then_continues_live(redis_server, redis_client, sink):
    sent = [make_signal(i) for i in range(5)]
    sink.publish(sent)
    ids = [e[0].decode() for e in redis_client.xrange(stream_key("BTCUSDT"))]

    async def scenario():
        async with gateway(redis_server.url, max_queue=4) as gw:  # replay is paced, not taken for slowness
            ws = await connect(gw)
            await expect(ws, "welcome")
            subscribed = await subscribe(ws, "BTCUSDT", resume_from={"BTCUSDT": ids[1]})
            replayed = [await expect(ws, "signal") for _ in range(3)]
            sink.publish([make_signal(5)])
            live = await expect(ws, "signal")
            await ws.close()
            return subscribed, replayed, live

    subscribed, replayed, live = run(scenario())

    assert subscribed.positions == {"BTCUSDT": ids[1]}
    assert subscribed.truncated == ()
    assert [m.id for m in replayed] == ids[2:]
    assert [m.signal.id for m in replayed] == [s.id for s in sent[2:]]
    assert live.signal.id == make_signal(5).id


def test_resume_from_before_retained_history_is_flagged(redis_server, redis_client, sink):
    sink.publish([make_signal(i) for i in range(3)])
    oldest = redis_client.xrange(stream_key("BTCUSDT"))[0][0].decode()
    redis_client.xdel(stream_key("BTCUSDT"), oldest)  # as trimmed by MAXLEN

    async def scenario():
        async with gateway(redis_server.url) as gw:
            ws = await connect(gw)
            await expect(ws, "welcome")
            subscribed = await subscribe(ws, "BTCUSDT", resume_from={"BTCUSDT": "1-0"})
            got = [await expect(ws, "signal") for _ in range(2)]
            await ws.close()
            return subscribed, got

    subscribed, got = run(scenario())

    assert subscribed.truncated == ("BTCUSDT",)
    assert [m.signal.id for m in got] == [make_signal(1).id, make_signal(2).id]


def test_snapshot_then_unsubscribe(redis_server, sink):
    sink.publish([make_signal(1), make_signal(2, "ETHUSDT")])

    async def scenario():
        async with gateway(redis_server.url) as gw:
            ws = await connect(gw)
            await expect(ws, "welcome")
            await subscribe(ws, "BTCUSDT", "ETHUSDT", snapshot=True)
            snaps = [await expect(ws, "signal") for _ in range(2)]
            await ws.send(json.dumps({"v": 1, "type": "unsubscribe", "symbols": ["ETHUSDT"]}))
            await expect(ws, "unsubscribed")
            sink.publish([make_signal(3, "ETHUSDT"), make_signal(4, "BTCUSDT")])
            after = await expect(ws, "signal")
            await ws.close()
            return snaps, after

    snaps, after = run(scenario())

    assert {(m.symbol, m.snapshot, m.id) for m in snaps} == {("BTCUSDT", True, None), ("ETHUSDT", True, None)}
    assert after.symbol == "BTCUSDT" and after.signal.id == make_signal(4).id


def test_delivery_resumes_after_every_client_left(redis_server, sink):
    # Regression: the reader died when the last subscription went away while it waited.
    async def scenario():
        async with gateway(redis_server.url) as gw:
            first = await connect(gw)
            await expect(first, "welcome")
            await subscribe(first, "BTCUSDT")
            await first.close()
            await asyncio.sleep(0.05)
            second = await connect(gw)
            await expect(second, "welcome")
            await subscribe(second, "ETHUSDT")
            sink.publish([make_signal(1, "ETHUSDT")])
            got = await expect(second, "signal")
            health = await http_get(gw.port, "/healthz")
            await second.close()
            return got, health

    got, (status, body) = run(scenario())

    assert got.signal.id == make_signal(1, "ETHUSDT").id
    assert status == 200 and json.loads(body)["reader"] is True


def test_heartbeats_arrive_on_schedule(redis_server):
    async def scenario():
        async with gateway(redis_server.url, heartbeat_s=0.1) as gw:
            ws = await connect(gw)
            await expect(ws, "welcome")
            beats = [decode_server(await asyncio.wait_for(ws.recv(), 5)) for _ in range(2)]
            await ws.close()
            return beats

    beats = run(scenario())

    assert [b.type for b in beats] == ["heartbeat", "heartbeat"]
    assert beats[0].ts < beats[1].ts


def slow_socket(port: int) -> socket.socket:
    """A connected socket with a small receive buffer, for a client that stops reading."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    return sock


def test_slow_client_is_disconnected_with_4429_and_the_others_get_everything(redis_server, sink):
    async def scenario():
        async with gateway(redis_server.url, max_queue=16, write_limit=4096, send_buffer_bytes=16384,
                           close_timeout_s=20) as gw:
            fast = await connect(gw)
            slow = await connect(gw, sock=slow_socket(gw.port), max_queue=1)
            await expect(fast, "welcome")
            await expect(slow, "welcome")
            await subscribe(fast, "BTCUSDT")
            await subscribe(slow, "BTCUSDT")  # then it stops reading
            sent, received = [], []
            for batch in range(200):
                signals = [make_signal(batch * 10 + i) for i in range(10)]
                sink.publish(signals)
                sent += signals
                received += [await expect(fast, "signal") for _ in signals]
                if gw.clients == 1:
                    break
            evicted_after = len(sent)
            sink.publish([make_signal(10_000)])
            sent.append(make_signal(10_000))
            received.append(await expect(fast, "signal"))
            code = await closed_with(slow)  # it reads again: what was in flight, then the close frame
            await fast.close()
            return sent, received, evicted_after, code

    sent, received, evicted_after, code = run(scenario(), timeout_s=120)

    assert evicted_after < 2000, "the slow client was never disconnected"
    assert code == CloseCode.SLOW_CONSUMER
    assert [m.signal.id for m in received] == [s.id for s in sent]


def test_browser_origins_are_checked(redis_server):
    async def scenario():
        async with gateway(redis_server.url, allowed_origins=["https://desk.example.com"]) as gw:
            with pytest.raises(InvalidStatus) as refused:
                await websockets.connect(f"ws://127.0.0.1:{gw.port}/ws", origin="https://evil.example.com")
            ok = await connect(gw, origin="https://desk.example.com")
            welcome = await expect(ok, "welcome")
            await ok.close()
            return refused.value.response.status_code, welcome

    status, welcome = run(scenario())

    assert status == 403
    assert welcome.client == "desk-a"


async def http_get(port: int, path: str) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def test_health_and_metrics_endpoints(redis_server):
    async def scenario():
        async with gateway(redis_server.url) as gw:
            ws = await connect(gw)
            await expect(ws, "welcome")
            health = await http_get(gw.port, "/healthz")
            prom = await http_get(gw.port, "/metrics")
            missing = await http_get(gw.port, "/nope")
            await ws.close()
            return health, prom, missing

    (h_status, h_body), (m_status, m_body), (n_status, _) = run(scenario())

    assert h_status == 200 and json.loads(h_body) == {"status": "ok", "redis": True, "reader": True, "clients": 1,
                                                     "symbols": 0}
    assert m_status == 200
    assert b"finsignal_gateway_clients 1.0" in m_body
    assert b'finsignal_gateway_handshakes_total{outcome="accepted"}' in m_body
    assert n_status == 404


def test_health_reports_a_lost_redis():
    async def scenario(url: str, server: EmbeddedRedis):
        async with gateway(url) as gw:
            server.kill()
            return await http_get(gw.port, "/healthz")

    with EmbeddedRedis() as server:
        status, body = run(scenario(server.url, server))

    assert status == 503
    assert json.loads(body)["redis"] is False


def test_gateway_refuses_to_start_without_tokens():
    with pytest.raises(GatewayConfigError, match="FINSIGNAL_GATEWAY_TOKENS"):
        check_settings(GatewaySettings())
    check_settings(GatewaySettings(allow_anonymous=True))


def test_token_never_appears_in_logs_or_reprs(redis_server, capsys):
    async def scenario():
        async with gateway(redis_server.url) as gw:
            bad = await connect(gw, token="wrong-secret-value")
            await closed_with(bad)
            good = await connect(gw)
            await expect(good, "welcome")
            await good.close()

    run(scenario())

    out = capsys.readouterr()
    assert "wrong-secret-value" not in out.out + out.err
    assert TOKEN not in out.out + out.err
    assert TOKEN not in repr(settings()) and TOKEN not in repr(Hello(token=TOKEN))
