"""Kline backfill over REST: Bybit's paging, and HTTP 403 / 429 / 503 answered with back-off, not hot retries."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest
from prometheus_client import REGISTRY

from ingest.bybit.rest import BybitRest
from ingest.bybit.settings import BybitSettings
from ingest.limits import RateLimiter
from tests.ingest.servers import KlineServer, http_server

S = 1716999960000


def rows(n: int) -> list[list[str]]:
    return [[str(S + i * 60_000), "100.5", "101.25", "99.75", "100.00", "12.5", "1256.25"] for i in range(n)]


async def fetch(server: KlineServer, start: int, end: int, **overrides) -> tuple[list, list[tuple[bytes, str]],
                                                                                 RateLimiter]:
    letters: list[tuple[bytes, str]] = []

    async def dead(raw: bytes, reason: str) -> None:
        letters.append((raw, reason))

    async with http_server({"/v5/market/kline": server.handle}) as base:
        settings = BybitSettings(rest_url=base, **overrides)
        limiter = RateLimiter(settings.rest_max_calls, settings.rest_period_s)
        async with aiohttp.ClientSession() as session:
            rest = BybitRest(session, settings, limiter, dead, clock=lambda: 1)
            klines = await rest.klines("linear", "BTCUSDT", "1", start, end)
    return klines, letters, limiter


def test_pages_backwards_from_end_with_end_set_to_earliest_start_minus_one():
    data = rows(2500)
    server = KlineServer(data, server_ms=S + 2500 * 60_000 + 5)
    klines, letters, _ = asyncio.run(fetch(server, S, S + 2499 * 60_000))
    assert [k.start // 1_000_000 for k in klines] == [int(r[0]) for r in data]  # all, oldest first, once each
    assert all(k.closed for k in klines) and not letters
    assert len(server.requests) == 3
    assert all(q["category"] == "linear" and q["limit"] == "1000" and q["interval"] == "1" for q in server.requests)
    ends = [int(q["end"]) for q in server.requests]
    assert ends[0] == S + 2499 * 60_000
    assert ends[1] == S + 1500 * 60_000 - 1 and ends[2] == S + 500 * 60_000 - 1  # earliest start - 1


def test_open_candle_in_row_zero_is_returned_as_not_closed():
    data = rows(10)
    server = KlineServer(data, server_ms=S + 9 * 60_000 + 30_000)  # the last candle is half-way
    klines, _, _ = asyncio.run(fetch(server, S, S + 9 * 60_000))
    assert [k.closed for k in klines] == [True] * 9 + [False]


@pytest.mark.parametrize("status, reason, pause", [(403, "ban", 0.3), (429, "rate_limit", 0.2),
                                                   (503, "http_error", 0.0)])
def test_throttling_answers_pause_the_shared_limiter_and_retry(status, reason, pause):
    before = REGISTRY.get_sample_value("finsignal_ingest_backoffs_total", {"source": "bybit", "reason": reason}) or 0
    server = KlineServer(rows(3), server_ms=S + 10 * 60_000, failures=[status])
    klines, _, limiter = asyncio.run(fetch(server, S, S + 2 * 60_000, ban_backoff_s=0.3, rate_limit_backoff_s=0.2))
    assert len(klines) == 3 and len(server.requests) == 2
    after = REGISTRY.get_sample_value("finsignal_ingest_backoffs_total", {"source": "bybit", "reason": reason})
    assert after == before + 1
    if pause:  # the retry waited at least the pause; measured on the server's clock, a lower bound only
        assert server.request_times[1] - server.request_times[0] >= pause * 0.9


def test_a_malformed_page_is_dead_lettered_and_retried():
    class Garbage(KlineServer):
        served = False

        async def handle(self, request):
            if not self.served:
                self.served = True
                self.requests.append(dict(request.query))
                from aiohttp import web

                return web.Response(text='{"retCode":0,"result":{"list":[["17', content_type="application/json")
            return await super().handle(request)

    server = Garbage(rows(2), server_ms=S + 10 * 60_000)
    klines, letters, _ = asyncio.run(fetch(server, S, S + 60_000))
    assert len(klines) == 2
    assert letters and letters[0][0].startswith(b'{"retCode"') and "kline response" in letters[0][1]


def test_bad_rows_are_dead_lettered_and_the_rest_kept():
    data = rows(3)
    data[1] = [data[1][0], "100", "90", "99", "100", "1", "1"]  # high below open
    server = KlineServer(data, server_ms=S + 10 * 60_000)
    klines, letters, _ = asyncio.run(fetch(server, S, S + 2 * 60_000))
    assert len(klines) == 2 and len(letters) == 1 and json.loads(letters[0][0]) == data[1]
