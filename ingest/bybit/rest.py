"""REST kline backfill (`GET /v5/market/kline`), paged backwards the way Bybit serves it.

Bybit returns at most 1000 rows a request, newest first, the first row usually the
candle still open. To cover [start, end] we ask for the newest page, then move
`end` to one millisecond before the earliest start received, until the page is
short or reaches `start`. Rows are de-duplicated by start and returned oldest
first. One `RateLimiter` (600 calls / 5 s per IP) covers every call; HTTP 403 is
an IP ban and pauses every caller for `ban_backoff_s`; 429 and retCode 10006
pause for `rate_limit_backoff_s`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable

import aiohttp
import structlog

from ingest import http
from ingest.bybit.parse import BybitApiError, BybitParseError, kline_rows, rest_kline
from ingest.bybit.settings import BybitSettings
from ingest.contracts import Kline
from ingest.limits import Backoff, RateLimiter
from ingest.metrics import BACKOFFS, ERRORS

log = structlog.get_logger(__name__)

PAGE_LIMIT = 1000
RATE_LIMIT_CODES = frozenset({10006, 10018})  # "too many visits", "out of frequency limit"

InvalidSink = Callable[[bytes, str], Awaitable[None]]  # (raw payload, reason) -> dead letter


class BackfillFailed(Exception):
    """A page could not be fetched after every attempt."""


class BybitRest:
    """Kline history from Bybit's REST API."""

    def __init__(self, session: aiohttp.ClientSession, settings: BybitSettings, limiter: RateLimiter,
                 on_invalid: InvalidSink, clock: Callable[[], int]) -> None:
        self.session = session
        self.settings = settings
        self.limiter = limiter
        self.on_invalid = on_invalid
        self.clock = clock

    async def klines(self, category: str, symbol: str, interval: str, start_ms: int, end_ms: int) -> list[Kline]:
        """Every candle with start in [start_ms, end_ms], oldest first, each start once."""
        by_start: dict[int, Kline] = {}
        end = end_ms
        while end >= start_ms:
            rows, server_ms = await self._page(category, symbol, interval, start_ms, end)
            starts = []
            for row in rows:
                try:
                    kline = rest_kline(row, category=category, symbol=symbol, interval=interval,
                                       server_ms=server_ms, ts_ingest=self.clock())
                except BybitParseError as exc:
                    await self.on_invalid(json.dumps(row).encode(), f"bybit kline row: {exc}")
                    continue
                starts.append(kline.start // 1_000_000)
                if start_ms * 1_000_000 <= kline.start <= end_ms * 1_000_000:
                    by_start.setdefault(kline.start, kline)
            if not starts or len(rows) < PAGE_LIMIT:
                break
            earliest = min(starts)
            if earliest <= start_ms:
                break
            if earliest >= end:  # a page that does not move backwards would loop forever
                log.error("bybit.backfill_stuck", symbol=symbol, interval=interval, end=end, earliest=earliest)
                break
            end = earliest - 1
        return [by_start[s] for s in sorted(by_start)]

    async def _page(self, category: str, symbol: str, interval: str, start_ms: int,
                    end_ms: int) -> tuple[list, int]:
        params = {"category": category, "symbol": symbol, "interval": interval, "start": str(start_ms),
                  "end": str(end_ms), "limit": str(PAGE_LIMIT)}
        url = f"{self.settings.rest_url.rstrip('/')}/v5/market/kline"
        backoff = Backoff(base_s=0.5, cap_s=30.0)
        last: Exception | None = None
        for attempt in range(1, self.settings.rest_attempts + 1):
            try:
                resp = await http.get(self.session, url, source="bybit", limiter=self.limiter, params=params,
                                      timeout_s=self.settings.rest_timeout_s)
                try:
                    payload = json.loads(resp.body)
                    return kline_rows(payload)
                except (json.JSONDecodeError, UnicodeDecodeError, BybitParseError) as exc:
                    await self.on_invalid(resp.body, f"bybit kline response: {exc}")
                    last = exc
                    await asyncio.sleep(backoff.next_delay())
            except http.Forbidden as exc:
                # An IP ban (Bybit answers 403 when the limit was broken): every caller waits it out.
                pause = max(exc.retry_after or 0.0, self.settings.ban_backoff_s)
                self.limiter.pause_for(pause)
                BACKOFFS.labels("bybit", "ban").inc()
                log.error("bybit.banned", status=403, pause_s=pause, url=url, attempt=attempt)
                last = exc
            except http.RateLimited as exc:
                pause = max(exc.retry_after or 0.0, self.settings.rate_limit_backoff_s)
                self.limiter.pause_for(pause)
                BACKOFFS.labels("bybit", "rate_limit").inc()
                log.warning("bybit.rate_limited", status=429, pause_s=pause, attempt=attempt)
                last = exc
            except BybitApiError as exc:
                last = exc
                if exc.code in RATE_LIMIT_CODES:
                    self.limiter.pause_for(self.settings.rate_limit_backoff_s)
                    BACKOFFS.labels("bybit", "rate_limit").inc()
                    log.warning("bybit.rate_limited", ret_code=exc.code, attempt=attempt)
                else:
                    log.error("bybit.api_error", ret_code=exc.code, message=exc.message, params=params)
                    raise BackfillFailed(str(exc)) from exc
            except (http.HttpError, aiohttp.ClientError, TimeoutError) as exc:
                last = exc
                BACKOFFS.labels("bybit", "http_error").inc()
                log.warning("bybit.rest_error", error=repr(exc), attempt=attempt)
                await asyncio.sleep(backoff.next_delay())
        ERRORS.labels("bybit", "backfill").inc()
        raise BackfillFailed(f"{symbol} {interval} page ending {end_ms}: {last!r}")
