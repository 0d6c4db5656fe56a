"""The Bybit ingestor: WebSocket pushes and REST backfill, normalized and published to `market.bybit.*`."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import structlog

from ingest.bybit.book import BookGap, LocalBook
from ingest.bybit.encode import book_bytes, trade_bytes
from ingest.bybit.parse import (
    MS,
    BybitParseError,
    next_start_ms,
    ticker_event,
    ws_book,
    ws_klines,
    ws_ticker,
    ws_trade_rows,
)
from ingest.bybit.rest import BackfillFailed, BybitRest
from ingest.bybit.settings import CATEGORIES, BybitSettings
from ingest.bybit.state import KlineState, TickerState, TradeDedupe
from ingest.bybit.stream import BybitConnection
from ingest.contracts import Kline, Ticker
from ingest.kafka import DeadLetter
from ingest.limits import RateLimiter
from ingest.metrics import DEDUPES, ERRORS, GAPS
from ingest.settings import TopicSettings
from ingest.sink import KafkaSink

log = structlog.get_logger(__name__)

SOURCE = "bybit"
KLINE_CATEGORIES = frozenset({"spot", "linear", "inverse"})  # Bybit serves no option klines


@dataclass
class _CategoryState:
    books: dict[str, LocalBook] = field(default_factory=dict)
    tickers: TickerState = field(default_factory=TickerState)
    klines: KlineState = field(default_factory=KlineState)
    trades: TradeDedupe = field(default_factory=TradeDedupe)


class BybitIngestor:
    """Streams the configured instruments until stopped; every event goes through `sink`."""

    def __init__(self, settings: BybitSettings, sink: KafkaSink, topics: TopicSettings,
                 session: aiohttp.ClientSession, clock: Callable[[], int] = time.time_ns,
                 rng: random.Random | None = None) -> None:
        self.settings = settings
        self.sink = sink
        self.topics = topics
        self.clock = clock
        self.rng = rng or random.Random()
        self.limiter = RateLimiter(settings.rest_max_calls, settings.rest_period_s)
        self.rest = BybitRest(session, settings, self.limiter, self._invalid_rest, clock)
        self.state = {c: _CategoryState(trades=TradeDedupe(settings.trade_dedupe_window))
                      for c in CATEGORIES}
        self.connections: dict[str, BybitConnection] = {}
        self._backfills: set[asyncio.Task] = set()

    async def run(self, stop: asyncio.Event) -> None:
        """Backfill recent candles, then stream every category until `stop` is set."""
        categories = self.settings.categories()
        if not categories:
            raise ValueError("no Bybit instruments configured (FINSIGNAL_BYBIT_LINEAR_SYMBOLS and friends)")
        self.connections = {c: BybitConnection(c, self.settings.ws_topics(c), self, self.settings, self.rng)
                            for c in categories}
        if "kline" in self.settings.channels and self.settings.backfill_bars:
            for category in categories:
                if category in KLINE_CATEGORIES:
                    self._spawn_backfill(category)
        try:
            await asyncio.gather(*(conn.run(stop) for conn in self.connections.values()))
        finally:
            for task in list(self._backfills):
                task.cancel()
            await asyncio.gather(*self._backfills, return_exceptions=True)

    # -- StreamHandler -------------------------------------------------------------------------------------

    async def on_connect(self, category: str, reconnect: bool) -> None:
        if not reconnect:
            return
        state = self.state[category]
        for book in state.books.values():  # deltas missed while away: a book kept now would be wrong
            book.clear()
        state.tickers.drop()
        log.info("bybit.state_dropped", category=category, books=len(state.books))
        if "kline" in self.settings.channels and category in KLINE_CATEGORIES:
            self._spawn_backfill(category)

    async def on_invalid(self, category: str, raw: bytes, reason: str) -> None:
        await self.sink.dead_letter(DeadLetter(reason=reason, stage="bybit.ws",
                                               source_topic=self.settings.ws_endpoint(category)), raw)

    async def on_data(self, category: str, msg: dict[str, Any], raw: bytes, conn: BybitConnection) -> None:
        topic = msg.get("topic")
        channel = topic.split(".", 1)[0] if isinstance(topic, str) else None
        try:
            if channel == "kline":
                await self._klines(category, msg)
            elif channel == "publicTrade":
                await self._trades(category, msg)
            elif channel == "orderbook":
                await self._book(category, msg, raw, conn)
            elif channel == "tickers":
                await self._ticker(category, msg)
            else:
                await self.on_invalid(category, raw, f"unexpected topic {topic!r}")
        except (BybitParseError, KeyError, TypeError) as exc:
            await self.on_invalid(category, raw, f"{channel or 'push'}: {exc}")

    # -- channels ---------------------------------------------------------------------------------------------

    async def _klines(self, category: str, msg: dict[str, Any]) -> None:
        for kline in ws_klines(msg, category=category, ts_ingest=self.clock()):
            await self._publish_kline(category, kline, from_stream=True)

    async def _publish_kline(self, category: str, kline: Kline, from_stream: bool) -> None:
        publish, gap = self.state[category].klines.accept(kline)
        if gap is not None and from_stream:
            GAPS.labels(SOURCE, "kline").inc()
            log.warning("bybit.kline_gap", symbol=kline.symbol, interval=kline.interval,
                        missing_from=gap[0], missing_to=gap[1])
            self._spawn(self._backfill_range(category, kline.symbol, kline.interval, gap[0] // MS, gap[1] // MS))
        if publish:
            await self.sink.publish(self.topics.kline, kline.key, kline.to_bytes(), kind="kline")
        else:
            DEDUPES.labels(SOURCE, "kline").inc()

    async def _trades(self, category: str, msg: dict[str, Any]) -> None:
        dedupe = self.state[category].trades
        ts_ingest = self.clock()
        for row in ws_trade_rows(msg):
            if dedupe.first_time(row.symbol, row.trade_id):
                value = trade_bytes(category=category, symbol=row.symbol, trade_id=row.trade_id, price=row.price,
                                    size=row.size, side=row.side, ts_ms=row.ts_ms, ts_ingest=ts_ingest)
                await self.sink.publish(self.topics.trade, row.symbol.encode(), value, kind="trade")
            else:
                DEDUPES.labels(SOURCE, "trade").inc()

    async def _book(self, category: str, msg: dict[str, Any], raw: bytes, conn: BybitConnection) -> None:
        update = ws_book(msg)
        books = self.state[category].books
        book = books.get(update.symbol) or books.setdefault(update.symbol, LocalBook(update.symbol))
        try:
            applied = book.apply(update)
        except BookGap as exc:
            GAPS.labels(SOURCE, "orderbook").inc()
            book.clear()
            await conn.resubscribe(msg["topic"], str(exc))
            return
        if not applied:
            DEDUPES.labels(SOURCE, "orderbook").inc()
            return
        bids, asks = book.top(self.settings.book_top_n)
        try:
            value = book_bytes(update, bids, asks, category=category, depth=self.settings.book_top_n,
                               ts_ingest=self.clock())
        except BybitParseError as exc:
            # A crossed or unordered book after applying venue data: the book is wrong, not the consumer's problem.
            book.clear()
            await self.on_invalid(category, raw, f"orderbook: {exc}")
            await conn.resubscribe(msg["topic"], str(exc))
            return
        await self.sink.publish(self.topics.orderbook, update.symbol.encode(), value, kind="orderbook")

    async def _ticker(self, category: str, msg: dict[str, Any]) -> None:
        symbol, snapshot, fields, ts_ms = ws_ticker(msg, category)
        merged = self.state[category].tickers.apply(symbol, snapshot, fields)
        if merged is None:
            GAPS.labels(SOURCE, "ticker").inc()
            log.warning("bybit.ticker_delta_without_snapshot", category=category, symbol=symbol)
            return
        event: Ticker = ticker_event(symbol, merged, category=category, ts_ms=ts_ms, ts_ingest=self.clock())
        await self.sink.publish(self.topics.ticker, event.key, event.to_bytes(), kind="ticker")

    # -- REST backfill --------------------------------------------------------------------------------------

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._backfills.add(task)
        task.add_done_callback(self._backfills.discard)

    def _spawn_backfill(self, category: str) -> None:
        """Candles from the newest closed one published (or `backfill_bars` back) up to now, per symbol."""
        now_ms = self.clock() // MS
        for symbol in self.settings.symbols(category):
            for interval in self.settings.kline_intervals:
                newest = self.state[category].klines.newest_closed(symbol, interval)
                if newest is not None:
                    start_ms = next_start_ms(newest // MS, interval)
                else:
                    start_ms = _bars_back(now_ms, interval, self.settings.backfill_bars)
                self._spawn(self._backfill_range(category, symbol, interval, start_ms, now_ms))

    async def _backfill_range(self, category: str, symbol: str, interval: str, start_ms: int, end_ms: int) -> None:
        try:
            klines: list[Kline] = await self.rest.klines(category, symbol, interval, start_ms, end_ms)
        except BackfillFailed as exc:
            ERRORS.labels(SOURCE, "backfill").inc()
            log.error("bybit.backfill_failed", category=category, symbol=symbol, interval=interval, error=str(exc))
            return
        for kline in klines:
            await self._publish_kline(category, kline, from_stream=False)
        log.info("bybit.backfilled", category=category, symbol=symbol, interval=interval, candles=len(klines),
                 start_ms=start_ms, end_ms=end_ms)

    async def _invalid_rest(self, raw: bytes, reason: str) -> None:
        await self.sink.dead_letter(DeadLetter(reason=reason, stage="bybit.rest",
                                               source_topic=f"{self.settings.rest_url}/v5/market/kline"), raw)


def _bars_back(now_ms: int, interval: str, bars: int) -> int:
    """Roughly `bars` candles before now (months counted as 31 days: a few more is harmless)."""
    minutes = {"D": 1440, "W": 10080, "M": 44640}.get(interval) or int(interval)
    return max(0, now_ms - bars * minutes * 60_000)
