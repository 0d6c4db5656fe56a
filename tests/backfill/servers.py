"""Local stand-ins for the history endpoints: Bybit's `/v5/market/kline` over generated candles and an
EDGAR archive serving `tests/fixtures/backfill/edgar/` (submissions JSON, full index, index pages,
documents, company_tickers.json). Both count every request and answer scripted failures at chosen
request numbers, so a test can put a 429 or a 503 in the middle of a backfill and count what was
asked twice.
"""

from __future__ import annotations

import asyncio
import bisect
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from aiohttp import web

from tests.ingest.servers import fixture

EDGAR_ROOT = Path(__file__).resolve().parent.parent / "fixtures" / "backfill" / "edgar"
RATE_LIMITED_PAGE = fixture("edgar", "rate_limited.html").read_bytes()
HOUR_MS = 3_600_000


def candles(symbol: str, first_ms: int, count: int, step_ms: int = HOUR_MS, seed: int = 7) -> list[list[str]]:
    """Bybit kline rows `[start, open, high, low, close, volume, turnover]`, strings, a seeded random walk."""
    rng = random.Random(f"{symbol}-{seed}")
    price = Decimal("60000.0") if symbol.startswith("BTC") else Decimal("3000.00")
    tick = Decimal("0.1") if symbol.startswith("BTC") else Decimal("0.01")
    out = []
    for i in range(count):
        open_ = price
        close = (open_ * Decimal(1 + rng.gauss(0, 0.004))).quantize(tick)
        high = (max(open_, close) * Decimal(1 + abs(rng.gauss(0, 0.001)))).quantize(tick)
        low = (min(open_, close) * Decimal(1 - abs(rng.gauss(0, 0.001)))).quantize(tick)
        volume = Decimal(rng.randint(1000, 90000)) / 1000
        out.append([str(first_ms + i * step_ms), str(open_), str(high), str(low), str(close), str(volume),
                    str((volume * close).quantize(Decimal("0.0001")))])
        price = close
    return out


@dataclass
class Request:
    path: str
    query: dict[str, str]
    status: int
    headers: dict[str, str]


@dataclass
class Recorder:
    """Counts requests; answers `fail_at[n]` (an HTTP status) to the n-th request (1-based)."""

    fail_at: dict[int, int] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    on_success: Callable[[int], None] = lambda n: None  # called with the count of successful answers
    delay_s: float = 0.0  # before each answer: a slow host, so a test can interrupt mid-way

    def failure(self, request: web.Request) -> web.Response | None:
        n = len(self.requests) + 1
        status = self.fail_at.get(n)
        if status is None:
            return None
        self.requests.append(Request(request.path, dict(request.query), status, dict(request.headers)))
        if status == 429:
            return web.Response(status=429, text="Too Many Requests", headers={"Retry-After": "0"})
        return web.Response(status=status, body=RATE_LIMITED_PAGE if status == 503 else b"error",
                            content_type="text/html")

    def served(self, request: web.Request, status: int = 200) -> None:
        self.requests.append(Request(request.path, dict(request.query), status, dict(request.headers)))
        if status == 200:
            self.on_success(sum(r.status == 200 for r in self.requests))

    def ok(self) -> list[Request]:
        return [r for r in self.requests if r.status == 200]


class BybitHistory(Recorder):
    """`GET /v5/market/kline`: rows per symbol, Bybit's answer shape, newest first, at most `limit`."""

    def __init__(self, rows: dict[str, list[list[str]]], server_ms: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.rows = {symbol: sorted(r, key=lambda row: int(row[0])) for symbol, r in rows.items()}
        self.server_ms = server_ms
        self._index: dict[str, tuple[int, list[int]]] = {}

    def _starts(self, symbol: str) -> list[int]:
        """Row starts, oldest first (rebuilt when a test edits the rows)."""
        rows = self.rows.get(symbol, [])
        held = self._index.get(symbol)
        if held is None or held[0] != id(rows) or len(held[1]) != len(rows):
            held = self._index[symbol] = (id(rows), [int(r[0]) for r in rows])
        return held[1]

    async def handle(self, request: web.Request) -> web.Response:
        await asyncio.sleep(self.delay_s)
        if (failed := self.failure(request)) is not None:
            return failed
        q = request.query
        self.served(request)
        limit = min(int(q.get("limit", 200)), 1000)
        start, end = int(q.get("start", 0)), int(q.get("end", 2**62))
        rows = self.rows.get(q["symbol"], [])
        starts = self._starts(q["symbol"])
        lo, hi = bisect.bisect_left(starts, start), bisect.bisect_right(starts, min(end, self.server_ms))
        rows = [rows[i] for i in range(hi - 1, max(lo, hi - limit) - 1, -1)]  # newest first
        return web.json_response({"retCode": 0, "retMsg": "OK",
                                  "result": {"category": q["category"], "symbol": q["symbol"], "list": rows},
                                  "retExtInfo": {}, "time": self.server_ms})


class EdgarArchive(Recorder):
    """Serves the fixture tree by path (`/submissions/...`, `/Archives/...`, `/files/company_tickers.json`)."""

    def __init__(self, root: Path = EDGAR_ROOT, **kwargs) -> None:
        super().__init__(**kwargs)
        self.root = root

    async def handle(self, request: web.Request) -> web.Response:
        await asyncio.sleep(self.delay_s)
        if (failed := self.failure(request)) is not None:
            return failed
        if not request.headers.get("User-Agent", "").strip():
            self.served(request, 403)
            return web.Response(status=403, text="Undeclared Automated Tool")
        rel = "company_tickers.json" if request.path == "/files/company_tickers.json" else request.path.lstrip("/")
        path = (self.root / rel).resolve()
        if not path.is_file() or self.root not in path.parents:
            self.served(request, 404)
            return web.Response(status=404, text="Not Found")
        self.served(request)
        kind = {".json": "application/json", ".htm": "text/html", ".idx": "text/plain"}.get(path.suffix, "text/plain")
        return web.Response(body=path.read_bytes(), content_type=kind)

    def paths(self) -> list[str]:
        return [r.path for r in self.ok()]
