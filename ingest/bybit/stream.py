"""One Bybit v5 public WebSocket connection per category, kept alive and subscribed.

- Subscribes with a `req_id` per request and matches the acknowledgements, whose
  shape differs by category (spot: `ret_msg: "subscribe"`; linear/inverse: `ret_msg: ""`),
  by that id. Options answer without the id (`type: "COMMAND_RESP"` listing `successTopics`
  and `failTopics`): matched by topics. Spot accepts at most 10 args per request, so
  requests are chunked.
- Sends `{"op": "ping"}` every `ping_interval_s` (Bybit drops idle connections);
  both pong shapes (spot echoes `op: "ping"` with `ret_msg: "pong"`, linear/inverse
  answer `op: "pong"`) count as life.
- Reconnects with capped, jittered exponential back-off when the socket closes, stays
  silent past `silence_timeout_s`, or a subscription is not acknowledged in time; then
  resubscribes everything and tells the handler, which drops book and ticker state
  and backfills klines over REST.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import random
from typing import Any, Protocol

import orjson
import structlog
import websockets
from websockets.exceptions import ConnectionClosed, ConnectionClosedOK, InvalidHandshake, InvalidURI

from ingest.bybit.settings import BybitSettings
from ingest.limits import Backoff
from ingest.metrics import ERRORS, RECONNECTS, RESUBSCRIBES

log = structlog.get_logger(__name__)


def loads(raw: bytes) -> Any:
    """Parse one frame: orjson (~3x faster on the hot path), the standard library for what orjson refuses.

    Frames orjson refuses (invalid UTF-8, lone surrogate escapes, broken JSON) get the standard parser's
    answer and error. One difference stays: an integer past 64 bits becomes a float, which the parsers
    refuse as a price or time (Bybit sends numbers as strings and times well inside 64 bits).
    """
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return json.loads(raw)


class StreamHandler(Protocol):
    """What a connection reports to."""

    async def on_connect(self, category: str, reconnect: bool) -> None: ...

    async def on_data(self, category: str, msg: dict[str, Any], raw: bytes, conn: BybitConnection) -> None: ...

    async def on_invalid(self, category: str, raw: bytes, reason: str) -> None: ...


class _Stale(Exception):
    """The connection is alive on paper but not serving us: reconnect."""


class BybitConnection:
    """The WebSocket of one category (spot, linear or inverse) and its subscriptions."""

    def __init__(self, category: str, topics: list[str], handler: StreamHandler, settings: BybitSettings,
                 rng: random.Random | None = None) -> None:
        self.category = category
        self.url = settings.ws_endpoint(category)
        self.topics = list(dict.fromkeys(topics))
        self.handler = handler
        self.settings = settings
        self.connections = 0
        self.rejected: dict[str, str] = {}  # topic -> the venue's reason; not retried
        self._backoff = Backoff(settings.reconnect_base_s, settings.reconnect_cap_s, rng=rng)
        self._ids = itertools.count(1)
        self._pending: dict[str, tuple[str, list[str], float]] = {}
        self._ws: Any = None
        self._last_rx = 0.0
        self._stale: str | None = None

    @property
    def chunk(self) -> int:
        return self.settings.args_per_subscribe_spot if self.category == "spot" else self.settings.args_per_subscribe

    async def run(self, stop: asyncio.Event) -> None:
        """Connect, subscribe and dispatch until `stop` is set, reconnecting as needed."""
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            opened_at = None
            try:
                async with websockets.connect(self.url, ping_interval=None, open_timeout=10, close_timeout=2,
                                              max_size=2**23, max_queue=64) as ws:
                    opened_at = loop.time()
                    self.connections += 1
                    if self.connections > 1:
                        RECONNECTS.labels("bybit").inc()
                    log.info("bybit.connected", category=self.category, url=self.url, connection=self.connections)
                    await self._session(ws, stop)
            except (ConnectionClosed, InvalidHandshake, InvalidURI, OSError, TimeoutError, _Stale) as exc:
                log.warning("bybit.disconnected", category=self.category, error=repr(exc), reason=self._stale)
            finally:
                self._ws = None
            if stop.is_set():
                break
            if opened_at is not None and loop.time() - opened_at >= self.settings.stable_after_s:
                self._backoff.reset()
            delay = self._backoff.next_delay()
            log.info("bybit.reconnecting", category=self.category, in_s=round(delay, 3),
                     attempt=self._backoff.attempt)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)

    async def _session(self, ws: Any, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        self._ws = ws
        self._pending.clear()
        self._stale = None
        self._last_rx = loop.time()
        await self.handler.on_connect(self.category, reconnect=self.connections > 1)
        topics = [t for t in self.topics if t not in self.rejected]
        for i in range(0, len(topics), self.chunk):
            await self._request("subscribe", topics[i:i + self.chunk])
        watchdog = asyncio.create_task(self._watchdog(ws, stop), name=f"bybit-watchdog-{self.category}")
        try:
            while True:
                try:
                    raw = await ws.recv(decode=False)  # bytes as sent: the JSON parser checks UTF-8 itself
                except ConnectionClosedOK:
                    break
                self._last_rx = loop.time()
                await self._dispatch(raw)
        finally:
            watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watchdog
        if self._stale and not stop.is_set():
            raise _Stale(self._stale)

    async def _watchdog(self, ws: Any, stop: asyncio.Event) -> None:
        """Ping on schedule, close a silent or unacknowledging connection, close on stop."""
        loop = asyncio.get_running_loop()
        tick = min(1.0, self.settings.ping_interval_s, self.settings.ack_timeout_s)
        next_ping = loop.time() + self.settings.ping_interval_s
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), tick)
            if stop.is_set():
                await ws.close(1000, "stopping")
                return
            now = loop.time()
            if now >= next_ping:
                await ws.send(json.dumps({"req_id": self._next_id(), "op": "ping"}))
                next_ping = now + self.settings.ping_interval_s
            late = [rid for rid, (_, _, sent) in self._pending.items() if now - sent > self.settings.ack_timeout_s]
            if late:
                self._stale = f"no ack for {late} within {self.settings.ack_timeout_s}s"
            elif now - self._last_rx > self.settings.silence_timeout_s:
                self._stale = f"silent for {now - self._last_rx:.1f}s"
            if self._stale:
                ERRORS.labels("bybit", "stale_connection").inc()
                log.warning("bybit.stale", category=self.category, reason=self._stale)
                await ws.close(1011, "stale")
                return

    async def _command_response(self, msg: dict[str, Any]) -> None:
        """The option stream's answer: `data.successTopics` / `data.failTopics`, no request id to match."""
        data = msg.get("data") if isinstance(msg.get("data"), dict) else {}
        ok = {t for t in data.get("successTopics") or () if isinstance(t, str)}
        failed = {t for t in data.get("failTopics") or () if isinstance(t, str)}
        answered = ok | failed
        for req_id, (op, args, _) in list(self._pending.items()):
            if args and set(args) <= answered:
                del self._pending[req_id]
                refused = [a for a in args if a in failed]
                if not refused:
                    log.debug("bybit.acked", category=self.category, op=op, args=args)
                    continue
                ERRORS.labels("bybit", f"{op}_refused").inc()
                log.error("bybit.request_refused", category=self.category, op=op, args=refused,
                          reason=str(msg.get("ret_msg") or "failTopics"))
                if op == "subscribe":
                    for topic in refused:
                        self.rejected[topic] = str(msg.get("ret_msg") or "refused (failTopics)")

    def _next_id(self) -> str:
        return f"{self.category}-{next(self._ids)}"

    async def _request(self, op: str, args: list[str]) -> None:
        if self._ws is None:
            return
        req_id = self._next_id()
        self._pending[req_id] = (op, args, asyncio.get_running_loop().time())
        await self._ws.send(json.dumps({"req_id": req_id, "op": op, "args": args}))

    async def resubscribe(self, topic: str, reason: str) -> None:
        """Unsubscribe and subscribe again: Bybit answers a subscription with a fresh snapshot."""
        RESUBSCRIBES.labels("bybit").inc()
        log.warning("bybit.resubscribe", category=self.category, topic=topic, reason=reason)
        await self._request("unsubscribe", [topic])
        await self._request("subscribe", [topic])

    async def _dispatch(self, raw: bytes) -> None:
        try:
            msg = loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            await self.handler.on_invalid(self.category, raw, f"malformed JSON: {exc}")
            return
        if not isinstance(msg, dict):
            await self.handler.on_invalid(self.category, raw, "message is not a JSON object")
        elif "topic" in msg:
            await self.handler.on_data(self.category, msg, raw, self)
        elif "op" in msg:
            await self._control(msg)
        elif msg.get("type") == "COMMAND_RESP":
            await self._command_response(msg)
        else:
            await self.handler.on_invalid(self.category, raw, "neither a topic push nor an op reply")

    async def _control(self, msg: dict[str, Any]) -> None:
        op = msg.get("op")
        if op in ("pong", "ping"):
            return  # liveness is any frame; both pong shapes land here
        req_id = str(msg.get("req_id", ""))
        pending = self._pending.pop(req_id, None)
        if pending is None:
            log.debug("bybit.unmatched_reply", category=self.category, msg=msg)
            return
        sent_op, args, _ = pending
        if msg.get("success") is True:
            log.debug("bybit.acked", category=self.category, op=sent_op, args=args)
            return
        reason = str(msg.get("ret_msg", "refused"))
        ERRORS.labels("bybit", f"{sent_op}_refused").inc()
        log.error("bybit.request_refused", category=self.category, op=sent_op, args=args, reason=reason)
        if sent_op != "subscribe":
            return
        if len(args) > 1:  # one bad arg refuses the whole request: find it by asking one at a time
            for topic in args:
                await self._request("subscribe", [topic])
        else:
            self.rejected[args[0]] = reason
