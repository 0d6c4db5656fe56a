"""Local stand-ins for Bybit, feed hosts and EDGAR on 127.0.0.1, replaying recorded payloads.

They implement just enough of each protocol to exercise the real clients: Bybit's
subscribe/ack/ping exchange per category and its kline paging semantics, conditional
GETs for feeds, scripted HTTP failures (403, 429, 503) for all of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import websockets
from aiohttp import web

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "ingest"


def fixture(*parts: str) -> Path:
    return FIXTURES.joinpath(*parts)


async def until(check: Callable[[], object], timeout_s: float = 20.0, interval_s: float = 0.02) -> object:
    """Async `eventually`: poll `check` until truthy, fail with its last value after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    last: object = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        await asyncio.sleep(interval_s)
    raise AssertionError(f"condition not met within {timeout_s}s; last: {last!r}")


# -- Bybit WebSocket ---------------------------------------------------------------------------------------


class BybitWsServer:
    """Serves `*.frames` sections, one per connection, after acknowledging the expected subscriptions."""

    def __init__(self, frames: Path, category: str, expect: list[str], *, resnapshot: Path | None = None,
                 refuse: Callable[[str], bool] = lambda arg: False) -> None:
        self.category = category
        self.expect = set(expect)
        self.refuse = refuse
        self.resnapshot = resnapshot.read_text().strip() if resnapshot else None
        acks = json.loads(fixture("bybit", "acks.json").read_text())
        self.ack = acks[category if category in ("spot", "option") else "linear"]
        self.refused_ack = acks["refused"]
        self.sections: list[list[str]] = [[]]
        for line in frames.read_text().splitlines():
            if line == "@disconnect":
                self.sections.append([])
            elif line:
                self.sections[-1].append(line)
        self.received: list[dict[str, Any]] = []
        self.connections = 0
        self.sent_sections = 0
        self._server: Any = None
        self.url = ""

    async def __aenter__(self) -> BybitWsServer:
        self._server = await websockets.serve(self._handle, "127.0.0.1", 0)
        port = next(iter(self._server.sockets)).getsockname()[1]
        self.url = f"ws://127.0.0.1:{port}/v5/public/{{category}}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()
        await self._server.wait_closed()

    def requests(self, op: str) -> list[dict[str, Any]]:
        return [m for m in self.received if m.get("op") == op]

    async def _handle(self, ws: Any) -> None:
        assert ws.request.path == f"/v5/public/{self.category}", ws.request.path
        index = self.connections
        self.connections += 1
        section = self.sections[min(index, len(self.sections) - 1)] if index < len(self.sections) else []
        state = {"acked": set(), "unsubscribed": set(), "resubscribed": asyncio.Event()}
        reader = asyncio.create_task(self._read(ws, state))
        try:
            await until(lambda: self.expect <= state["acked"], timeout_s=10)
            for line in section:
                if line == "@resubscribed":
                    await asyncio.wait_for(state["resubscribed"].wait(), 10)
                elif line == "@hold":
                    await ws.wait_closed()
                else:
                    await ws.send(line)
            self.sent_sections += 1
            if index < len(self.sections) - 1:
                ws.transport.abort()  # a dropped connection, as a network fault looks: no close frame
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, websockets.ConnectionClosed):
                await reader

    async def _read(self, ws: Any, state: dict[str, Any]) -> None:
        async for raw in ws:
            msg = json.loads(raw)
            self.received.append(msg)
            op = msg.get("op")
            if op == "ping":
                await ws.send(json.dumps({**self.ack["pong"], **({"req_id": msg["req_id"]}
                                                                   if "req_id" in self.ack["pong"] else {})}))
            elif op == "unsubscribe":
                state["unsubscribed"].update(msg["args"])
                await ws.send(json.dumps({**self.ack["subscribe"], "op": "unsubscribe", "req_id": msg["req_id"]}))
            elif op == "subscribe" and self.category == "option":
                # Options answer by topics, without the request id: {"type": "COMMAND_RESP", "data": {...}}.
                failed = [a for a in msg["args"] if self.refuse(a)]
                ok = [a for a in msg["args"] if not self.refuse(a)]
                await ws.send(json.dumps({**self.ack["subscribe"],
                                          "data": {"failTopics": failed, "successTopics": ok}}))
                state["acked"].update(msg["args"])
            elif op == "subscribe":
                if any(self.refuse(a) for a in msg["args"]):
                    await ws.send(json.dumps({**self.refused_ack, "req_id": msg["req_id"]}))
                    state["acked"].update(a for a in msg["args"] if len(msg["args"]) == 1)
                    continue
                await ws.send(json.dumps({**self.ack["subscribe"], "req_id": msg["req_id"]}))
                state["acked"].update(msg["args"])
                again = [a for a in msg["args"] if a in state["unsubscribed"] and a.startswith("orderbook.")]
                if again and self.resnapshot:
                    await ws.send(self.resnapshot)
                    state["resubscribed"].set()


# -- Bybit REST ------------------------------------------------------------------------------------------------


@dataclass
class KlineServer:
    """`GET /v5/market/kline` over a list of rows, with Bybit's paging semantics and scripted failures."""

    rows: list[list[str]]  # any order; [start, open, high, low, close, volume, turnover]
    server_ms: int
    failures: list[int] = field(default_factory=list)  # HTTP statuses answered before serving
    requests: list[dict[str, str]] = field(default_factory=list)
    request_times: list[float] = field(default_factory=list)
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append(dict(request.query))
        self.request_times.append(time.monotonic())
        if self.failures:
            status = self.failures.pop(0)
            text = {403: "403 Forbidden: access too frequent", 429: "Too Many Requests",
                    503: "Service Unavailable"}.get(status, "error")
            return web.Response(status=status, text=text)
        q = request.query
        if "category" not in q:
            return web.json_response({"retCode": 10001, "retMsg": "params error: category is required",
                                      "result": {}, "retExtInfo": {}, "time": self.server_ms})
        limit = min(int(q.get("limit", 200)), 1000)
        start, end = int(q.get("start", 0)), int(q.get("end", 2**62))
        rows = sorted((r for r in self.rows if start <= int(r[0]) <= end), key=lambda r: -int(r[0]))[:limit]
        return web.json_response({"retCode": 0, "retMsg": "OK",
                                  "result": {"category": q["category"], "symbol": q["symbol"], "list": rows},
                                  "retExtInfo": {}, "time": self.server_ms})


@contextlib.asynccontextmanager
async def http_server(routes: dict[str, Callable]):
    """An aiohttp server on 127.0.0.1; yields its base URL."""
    app = web.Application()
    for path, handler in routes.items():
        app.router.add_get(path, handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


# -- feeds and EDGAR -----------------------------------------------------------------------------------------


@dataclass
class Page:
    """A static document served with validators, after scripted failures."""

    body: bytes
    content_type: str
    etag: str | None = None
    last_modified: str | None = None
    failures: list[int] = field(default_factory=list)
    hits: list[dict[str, str]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        self.hits.append(dict(request.headers))
        if self.failures:
            status = self.failures.pop(0)
            body = fixture("edgar", "rate_limited.html").read_bytes() if status == 503 else b"error"
            return web.Response(status=status, body=body, content_type="text/html",
                                headers={"Retry-After": "0"} if status == 429 else None)
        if self.etag and request.headers.get("If-None-Match") == self.etag:
            return web.Response(status=304)
        headers = {}
        if self.etag:
            headers["ETag"] = self.etag
        if self.last_modified:
            headers["Last-Modified"] = self.last_modified
        return web.Response(body=self.body, headers={**headers, "Content-Type": self.content_type})
