"""`finsignal gateway`: signals from the Redis streams to WebSocket clients, protocol in `protocol.py`.

One reader task follows the streams of every subscribed symbol (XREAD) and hands each entry to the
subscribers' bounded queues without waiting for any of them; one writer task per client drains its
queue into its socket. A client whose queue overflows is disconnected with close code 4429 (slow
consumer), so a slow client never slows the reader, and therefore never the others.

A client resuming from a stream id is first replayed what followed that id (XRANGE, paced by its own
queue), then joins the live fan-out; entries are delivered once, in stream order, per symbol.

Authentication is a token, at the handshake (`Authorization: Bearer ...`) or in the `hello` message;
tokens are compared in constant time and never logged. Browser Origins are checked against a list.
The same port answers `GET /healthz` (Redis reachable: 200, else 503) and `GET /metrics` (Prometheus).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import random
import signal as signal_module
import socket
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import urlsplit

import structlog
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.asyncio import Redis
from redis.exceptions import RedisError
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from consumers.gateway import metrics
from consumers.gateway.protocol import (
    CloseCode,
    ContractError,
    ErrorMessage,
    Heartbeat,
    Hello,
    Ping,
    Pong,
    Subscribe,
    Subscribed,
    Unsubscribe,
    Unsubscribed,
    Welcome,
    decode_client,
    signal_frame,
)
from consumers.gateway.settings import GatewaySettings
from consumers.stream_reads import StreamReads
from ingest.redis_client import async_client
from signals.contracts import decode_signal
from signals.keys import KEYS, SignalKeys

log = structlog.get_logger(__name__)

ANONYMOUS = "anonymous"


class GatewayConfigError(ValueError):
    """Settings the gateway refuses to start with; the message says what to set."""


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _sid(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


@dataclass
class _Subscription:
    cursor: tuple[int, int]  # last entry queued to this client
    live: bool  # False while a resume is being replayed


@dataclass(eq=False)
class _Client:
    ws: ServerConnection
    name: str
    queue: asyncio.Queue[tuple[str, int | None, str]]
    subs: dict[str, _Subscription] = field(default_factory=dict)
    closed: bool = False
    writer: asyncio.Task | None = None
    room: asyncio.Event = field(default_factory=asyncio.Event)  # set when the queue is at most half full

    def clear(self) -> None:
        """Drop what is queued and release anyone waiting for room."""
        while not self.queue.empty():
            self.queue.get_nowait()
        self.room.set()

    @property
    def remote(self) -> str:
        addr = self.ws.remote_address
        return f"{addr[0]}:{addr[1]}" if addr else "?"


class Gateway:
    """The WebSocket gateway; use as `async with Gateway(redis, settings) as gw:` (see `gw.port`)."""

    def __init__(self, redis: Redis, settings: GatewaySettings | None = None, *,
                 clock: Callable[[], int] = time.time_ns, keys: SignalKeys = KEYS) -> None:
        self.redis = redis  # one server, a Sentinel master or a Cluster (`ingest.redis_client.async_client`)
        self.keys = keys
        self._reads = StreamReads(redis)
        self.settings = settings or GatewaySettings()
        self.clock = clock
        check_settings(self.settings)
        self._server: Server | None = None
        self._clients: set[_Client] = set()
        self._subscribers: dict[str, set[_Client]] = {}
        self._cursors: dict[str, str] = {}  # symbol -> last entry id the reader has seen
        self._changed = asyncio.Event()
        self._tasks: set[asyncio.Task] = set()
        # connection -> client name, from the handshake header; weak: a handshake may still fail after it
        self._preauth: weakref.WeakKeyDictionary[ServerConnection, str] = weakref.WeakKeyDictionary()
        self._redis_ok = True
        self._reader: asyncio.Task | None = None
        self._sent = {kind: metrics.MESSAGES.labels(kind) for kind in
                      ("welcome", "subscribed", "unsubscribed", "signal", "heartbeat", "pong", "error")}

    # -- lifecycle ------------------------------------------------------------------------------------

    async def start(self) -> Gateway:
        s = self.settings
        origins: list[Any] | None
        if "*" in s.allowed_origins:
            origins = None
        else:
            origins = [*s.allowed_origins, *([None] if s.allow_missing_origin else [])]
        self._server = await serve(
            self._handle, s.host, s.port, process_request=self._process_request, origins=origins,
            ping_interval=s.ping_interval_s, ping_timeout=s.ping_timeout_s, close_timeout=s.close_timeout_s,
            max_size=s.max_message_bytes, write_limit=s.write_limit, compression="deflate" if s.compression else None,
            server_header="finsignal-gateway",
        )
        self._reader = self._spawn(self._read_loop(), "reader")
        self._spawn(self._heartbeat_loop(), "heartbeat")
        log.info("gateway.started", host=s.host, port=self.port, path=s.path, clients=sorted(s.tokens) or None,
                 anonymous=s.allow_anonymous)
        return self

    @property
    def port(self) -> int:
        assert self._server is not None, "start() first"
        return self._server.sockets[0].getsockname()[1]

    @property
    def clients(self) -> int:
        return len(self._clients)

    async def stop(self) -> None:
        """Close every connection with 1001 (going away) and stop reading."""
        if self._server is not None:
            self._server.close()  # close code 1001 to every client
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._reads.cancel()
        log.info("gateway.stopped")

    async def __aenter__(self) -> Gateway:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _spawn(self, coro: Any, name: str) -> asyncio.Task:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- HTTP side: health, metrics, handshake checks -------------------------------------------------

    async def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path = urlsplit(request.path).path
        if path == "/healthz":
            return await self._health()
        if path == "/metrics":
            return _response(HTTPStatus.OK, generate_latest(), CONTENT_TYPE_LATEST)
        if path != self.settings.path:
            return _response(HTTPStatus.NOT_FOUND, b"not found\n")
        if self.settings.send_buffer_bytes is not None:
            sock = connection.transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.settings.send_buffer_bytes)
        if len(self._clients) >= self.settings.max_clients:
            metrics.HANDSHAKES.labels("too_many_clients").inc()
            return _response(HTTPStatus.SERVICE_UNAVAILABLE, b"too many clients\n")
        header = request.headers.get("Authorization")
        if header is not None:
            scheme, _, token = header.partition(" ")
            name = self.authenticate(token.strip()) if scheme.lower() == "bearer" else None
            if name is None:
                metrics.HANDSHAKES.labels("unauthorized").inc()
                log.warning("gateway.unauthorized", remote=_remote(connection), at="handshake")
                return _response(HTTPStatus.UNAUTHORIZED, b"invalid token\n")
            self._preauth[connection] = name
        return None

    async def _health(self) -> Response:
        try:
            await asyncio.wait_for(self.redis.ping(), timeout=2.0)
            redis_ok = True
        except (RedisError, OSError, asyncio.TimeoutError):
            redis_ok = False
        reader_ok = self._reader is not None and not self._reader.done()
        healthy = redis_ok and reader_ok
        body = {"status": "ok" if healthy else "unavailable", "redis": redis_ok, "reader": reader_ok,
                "clients": len(self._clients), "symbols": len(self._cursors)}
        status = HTTPStatus.OK if healthy else HTTPStatus.SERVICE_UNAVAILABLE
        return _response(status, (json.dumps(body) + "\n").encode(), "application/json")

    def authenticate(self, token: str | None) -> str | None:
        """The client name a token belongs to (constant-time comparison), `anonymous` if allowed, else None."""
        if token:
            found = None
            for name, secret in self.settings.tokens.items():
                if hmac.compare_digest(token.encode(), secret.get_secret_value().encode()):
                    found = name  # no early exit: the time taken does not depend on which token matched
            if found is not None:
                return found
            return None
        return ANONYMOUS if self.settings.allow_anonymous else None

    # -- one connection -------------------------------------------------------------------------------

    async def _handle(self, ws: ServerConnection) -> None:
        name = self._preauth.pop(ws, None)
        hello = await self._hello(ws)
        if hello is None:
            return
        if name is None:
            name = self.authenticate(hello.token)
            if name is None:
                metrics.HANDSHAKES.labels("unauthorized").inc()
                log.warning("gateway.unauthorized", remote=_remote(ws), client=hello.client, at="hello")
                await ws.close(CloseCode.UNAUTHORIZED, "invalid or missing token")
                return
        metrics.HANDSHAKES.labels("accepted").inc()
        client = _Client(ws, name, asyncio.Queue(self.settings.max_queue))
        self._clients.add(client)
        metrics.CLIENTS.set(len(self._clients))
        client.writer = self._spawn(self._write(client), f"writer-{name}")
        log.info("gateway.connected", client=name, remote=client.remote, agent=hello.client)
        self._offer(client, Welcome(client=name, heartbeat_s=self.settings.heartbeat_s,
                                    max_queue=self.settings.max_queue).model_dump_json(), None, "welcome")
        reason = "client_closed"
        try:
            async for raw in ws:
                await self._on_message(client, raw)
                if client.closed:
                    break
        except ConnectionClosed:
            pass
        except Exception:  # noqa: BLE001 - one broken connection must not take the gateway down
            log.exception("gateway.connection_failed", client=name)
            reason = "internal_error"
            await ws.close(CloseCode.INTERNAL_ERROR, "internal error")
        finally:
            if not client.closed:
                self._drop(client, reason)

    async def _hello(self, ws: ServerConnection) -> Hello | None:
        """The first message, which must be a valid hello; closes the connection otherwise."""
        try:
            raw = await asyncio.wait_for(ws.recv(), timeout=self.settings.auth_timeout_s)
        except asyncio.TimeoutError:
            metrics.HANDSHAKES.labels("auth_timeout").inc()
            await ws.close(CloseCode.AUTH_TIMEOUT, "no hello in time")
            return None
        except ConnectionClosed:
            return None
        try:
            message = decode_client(raw)
        except ContractError as exc:
            metrics.HANDSHAKES.labels("protocol_error").inc()
            await ws.close(CloseCode.PROTOCOL_ERROR, _reason(f"expected hello (protocol v1): {exc}"))
            return None
        if not isinstance(message, Hello):
            metrics.HANDSHAKES.labels("protocol_error").inc()
            await ws.close(CloseCode.PROTOCOL_ERROR, "the first message must be hello")
            return None
        return message

    async def _on_message(self, client: _Client, raw: str | bytes) -> None:
        try:
            message = decode_client(raw)
        except ContractError as exc:
            self._error(client, "invalid_message", str(exc))
            return
        if isinstance(message, Subscribe):
            await self._subscribe(client, message)
        elif isinstance(message, Unsubscribe):
            self._unsubscribe(client, message.symbols)
            self._offer(client, Unsubscribed(symbols=message.symbols).model_dump_json(), None, "unsubscribed")
        elif isinstance(message, Ping):
            self._offer(client, Pong(nonce=message.nonce).model_dump_json(), None, "pong")
        else:
            self._error(client, "unexpected_hello", "already authenticated")

    def _error(self, client: _Client, code: str, message: str) -> None:
        self._offer(client, ErrorMessage(code=code, message=message[:1000]).model_dump_json(), None, "error")

    # -- subscriptions --------------------------------------------------------------------------------

    async def _subscribe(self, client: _Client, message: Subscribe) -> None:
        new = [s for s in dict.fromkeys(message.symbols) if s not in client.subs]
        if len(client.subs) + len(new) > self.settings.max_symbols:
            self._error(client, "too_many_symbols", f"at most {self.settings.max_symbols} symbols per client")
            return
        try:
            truncated = await self._resume_check(message)
            for sym in new:
                live = await self._follow(sym)
                start = message.resume_from.get(sym)
                client.subs[sym] = _Subscription(_sid(start) if start else _sid(live), live=start is None)
                self._subscribers.setdefault(sym, set()).add(client)
        except RedisError as exc:
            log.warning("gateway.subscribe_failed", client=client.name, error=repr(exc))
            self._unsubscribe(client, new)
            self._error(client, "unavailable", "signal store unavailable, retry")
            return
        metrics.SUBSCRIPTIONS.set(sum(len(c.subs) for c in self._clients))
        positions = {s: "{}-{}".format(*client.subs[s].cursor) for s in message.symbols}
        self._offer(client, Subscribed(symbols=message.symbols, positions=positions,
                                       truncated=truncated).model_dump_json(), None, "subscribed")
        if message.snapshot:
            await self._snapshot(client, message.symbols)
        for sym in new:
            if not client.subs[sym].live:
                await self._replay(client, sym)

    async def _follow(self, symbol: str) -> str:
        """Make the reader follow a symbol's stream; return the entry id live delivery starts after."""
        if symbol not in self._cursors:
            newest = await self.redis.xrevrange(self.keys.stream(symbol), count=1)
            self._cursors[symbol] = _text(newest[0][0]) if newest else "0-0"
            self._changed.set()
        return self._cursors[symbol]

    async def _resume_check(self, message: Subscribe) -> tuple[str, ...]:
        """Symbols whose resume point is older than the oldest entry still retained."""
        truncated = []
        for sym, start in message.resume_from.items():
            oldest = await self.redis.xrange(self.keys.stream(sym), count=1)
            if oldest and _sid(_text(oldest[0][0])) > _sid(start) and start != "0-0":
                truncated.append(sym)
        return tuple(truncated)

    async def _replay(self, client: _Client, symbol: str) -> None:
        """Send what followed the resume point, paced by the client's queue, then go live."""
        key = self.keys.stream(symbol)
        half = max(1, self.settings.max_queue // 2)
        while (sub := client.subs.get(symbol)) is not None and not client.closed and not sub.live:
            entries = await self.redis.xrange(key, min="({}-{}".format(*sub.cursor), count=self.settings.read_count)
            if not entries:
                sub.live = True  # nothing between here and live delivery: no await since the last read
                return
            for entry_id, fields in entries:
                # Keep half the queue for live traffic (other symbols, heartbeats): a client that is
                # catching up is paced here, not taken for a slow consumer.
                while client.queue.qsize() >= half and not client.closed:
                    client.room.clear()
                    await client.room.wait()
                if client.closed or symbol not in client.subs:
                    return
                entry = _text(entry_id)
                sub.cursor = _sid(entry)
                frame = self._frame(symbol, entry, fields)
                if frame is not None:
                    self._offer(client, frame, sub.cursor[0], "signal")

    async def _snapshot(self, client: _Client, symbols: tuple[str, ...]) -> None:
        pipe = self.redis.pipeline(transaction=False)  # one GET per symbol: each in its own Cluster slot
        for sym in symbols:
            pipe.get(self.keys.latest(sym))
        values = await pipe.execute()
        for sym, raw in zip(symbols, values):
            if raw is None:
                continue
            try:
                decode_signal(raw)
            except ContractError:
                continue
            self._offer(client, signal_frame(sym, None, _text(raw), snapshot=True), None, "signal")

    def _unsubscribe(self, client: _Client, symbols: tuple[str, ...] | list[str]) -> None:
        for sym in symbols:
            client.subs.pop(sym, None)
            subscribers = self._subscribers.get(sym)
            if subscribers is not None:
                subscribers.discard(client)
                if not subscribers:
                    del self._subscribers[sym]
                    self._cursors.pop(sym, None)
                    self._changed.set()

    # -- fan-out --------------------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        """Follow every subscribed stream, forever: a failed read is logged and retried with capped backoff."""
        backoff = 0.1
        while True:
            try:
                await self._read_once()
                self._redis_ok, backoff = True, 0.1
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the reader must outlive any one failure
                self._redis_ok = False
                metrics.REDIS_ERRORS.inc()
                log.warning("gateway.redis_read_failed", error=repr(exc), retry_in_s=backoff)
                await asyncio.sleep(backoff * random.uniform(0.5, 1.0))
                backoff = min(backoff * 2, 5.0)

    async def _read_once(self) -> None:
        """One blocking read over the followed streams; re-issued early when the set of streams changes."""
        while not self._cursors:
            self._changed.clear()
            await self._changed.wait()
        self._changed.clear()
        streams = {self.keys.stream(s): c for s, c in self._cursors.items()}
        read = asyncio.ensure_future(self._reads.read(streams, count=self.settings.read_count,
                                                      block_ms=self.settings.read_block_ms))
        read.add_done_callback(_retrieve)  # an abandoned read's failure is of no interest
        changed = asyncio.ensure_future(self._changed.wait())
        try:
            done, _ = await asyncio.wait({read, changed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            changed.cancel()
            if not read.done():
                # A symbol was added or dropped (or we are stopping): nothing read is lost, the
                # cursors did not move.
                read.cancel()
                self._reads.cancel()
        if read not in done:
            await asyncio.wait({read})  # neither raises its outcome nor swallows our own cancellation
            return
        for stream, entries in read.result() or []:
            symbol = self.keys.symbol_of(stream)
            if symbol not in self._cursors:
                continue  # unsubscribed meanwhile
            for entry_id, fields in entries:
                entry = _text(entry_id)
                self._cursors[symbol] = entry
                self._dispatch(symbol, entry, fields)

    def _frame(self, symbol: str, entry_id: str, fields: dict | None) -> str | None:
        """The signal frame of one entry, validated; None (counted, logged) when the entry is not a signal."""
        raw = (fields or {}).get(b"signal") or (fields or {}).get("signal")
        try:
            decode_signal(raw or b"")
        except ContractError as exc:
            metrics.ENTRIES.labels("invalid").inc()
            log.error("gateway.invalid_entry", symbol=symbol, entry=entry_id, error=str(exc))
            return None
        metrics.ENTRIES.labels("ok").inc()
        return signal_frame(symbol, entry_id, _text(raw))

    def _dispatch(self, symbol: str, entry_id: str, fields: dict | None) -> None:
        """Queue one entry to every live subscriber; never waits."""
        frame = self._frame(symbol, entry_id, fields)
        if frame is None:
            return
        sid = _sid(entry_id)
        for client in list(self._subscribers.get(symbol, ())):
            sub = client.subs.get(symbol)
            if sub is None or not sub.live or sid <= sub.cursor:
                continue
            sub.cursor = sid
            self._offer(client, frame, sid[0], "signal")

    def _offer(self, client: _Client, frame: str, entry_ms: int | None, kind: str) -> None:
        if client.closed:
            return
        try:
            client.queue.put_nowait((frame, entry_ms, kind))
        except asyncio.QueueFull:
            self._evict(client, CloseCode.SLOW_CONSUMER,
                        f"slow consumer: more than {self.settings.max_queue} messages queued", "slow_consumer")

    async def _write(self, client: _Client) -> None:
        ws, sent, clock, queue = client.ws, self._sent, self.clock, client.queue
        half = max(1, self.settings.max_queue // 2)
        try:
            while True:
                frame, entry_ms, kind = await queue.get()
                if queue.qsize() < half:
                    client.room.set()
                await ws.send(frame)
                sent[kind].inc()
                if entry_ms is not None:
                    metrics.DELIVERY_SECONDS.observe(max(0.0, clock() / 1e9 - entry_ms / 1e3))
        except ConnectionClosed:
            pass

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.heartbeat_s)
            frame = Heartbeat(ts=self.clock()).model_dump_json()
            for client in list(self._clients):
                self._offer(client, frame, None, "heartbeat")

    # -- disconnection --------------------------------------------------------------------------------

    def _drop(self, client: _Client, reason: str) -> None:
        """Forget a client: subscriptions, queue, writer."""
        client.closed = True
        self._unsubscribe(client, list(client.subs))
        self._clients.discard(client)
        if client.writer is not None:
            client.writer.cancel()
        client.clear()
        metrics.CLIENTS.set(len(self._clients))
        metrics.SUBSCRIPTIONS.set(sum(len(c.subs) for c in self._clients))
        metrics.DISCONNECTS.labels(reason).inc()
        log.info("gateway.disconnected", client=client.name, remote=client.remote, reason=reason)

    def _evict(self, client: _Client, code: CloseCode, message: str, reason: str) -> None:
        """Disconnect a client now, without waiting for it: the close handshake runs in the background."""
        if client.closed:
            return
        self._drop(client, reason)
        log.warning("gateway.evicted", client=client.name, remote=client.remote, code=int(code), reason=message)
        self._spawn(self._close(client.ws, code, message), f"close-{client.name}")

    async def _close(self, ws: ServerConnection, code: CloseCode, message: str) -> None:
        # A stuck client may never drain its socket: bound the closing handshake, then abort.
        try:
            await asyncio.wait_for(ws.close(code, message), timeout=self.settings.close_timeout_s)
        except asyncio.TimeoutError:
            ws.transport.abort()


def _retrieve(future: asyncio.Future) -> None:
    """Mark a finished future's exception as seen, so that dropping it logs nothing."""
    if not future.cancelled():
        future.exception()


def check_settings(settings: GatewaySettings) -> None:
    """Refuse settings that would serve signals to anyone by accident."""
    if not settings.tokens and not settings.allow_anonymous:
        raise GatewayConfigError(
            "no client tokens: set FINSIGNAL_GATEWAY_TOKENS='{\"client-name\": \"token\"}' "
            "(or FINSIGNAL_GATEWAY_ALLOW_ANONYMOUS=true on a trusted network)")
    if not settings.path.startswith("/") or settings.path in ("/healthz", "/metrics"):
        raise GatewayConfigError(f"gateway path {settings.path!r} must start with / and not be /healthz or /metrics")


def _response(status: HTTPStatus, body: bytes, content_type: str = "text/plain; charset=utf-8") -> Response:
    headers = Headers([("Content-Type", content_type), ("Content-Length", str(len(body))), ("Connection", "close")])
    return Response(status.value, status.phrase, headers, body)


def _remote(ws: ServerConnection) -> str:
    addr = ws.remote_address
    return f"{addr[0]}:{addr[1]}" if addr else "?"


def _reason(text: str) -> str:
    """A close reason fits in 123 bytes."""
    encoded = text.encode()[:120]
    return encoded.decode(errors="ignore")


def serve_forever(host: str | None = None, port: int | None = None) -> None:
    """Run the gateway against FINSIGNAL_REDIS_URL until SIGINT or SIGTERM."""
    from ingest.reachability import check_redis
    from signals.settings import RedisSettings

    overrides = {k: v for k, v in {"host": host, "port": port}.items() if v is not None}
    settings = GatewaySettings(**overrides)
    check_settings(settings)
    redis_settings = RedisSettings()
    if not redis_settings.url:
        raise GatewayConfigError("FINSIGNAL_REDIS_URL is not set; point it at the Redis the worker publishes to "
                                 "(e.g. redis://localhost:6379/0)")
    # Serving while the signal store is away would look healthy to an orchestrator and answer nothing:
    # refuse to start, as a database client would. Once running, a Redis outage is retried (see /healthz).
    check_redis(redis_settings)

    async def main() -> None:
        client = async_client(redis_settings)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal_module.SIGINT, signal_module.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            async with Gateway(client, settings):
                await stop.wait()
        finally:
            await client.aclose()

    asyncio.run(main())
