"""Market context for signals: last price and short-horizon realized volatility at a point in time.

The store is fed `MarketEvent`s (live from the `market.bybit.*` topics, or in event order by a
backtest) and answers "what did the market look like at `ts`" using only what happened at or
before `ts`: never a later price.
"""

from __future__ import annotations

import bisect
import math
import threading
from collections import deque
from decimal import Decimal

import structlog

from ingest.contracts import Kline, OrderBook, Ticker, Trade
from signals.contracts import MarketContext

log = structlog.get_logger(__name__)

_MINUTE_NS = 60 * 1_000_000_000


class _Series:
    """Time-ordered (ts, value) points, bounded in count; out-of-order points are inserted in place."""

    def __init__(self, capacity: int) -> None:
        self.ts: deque[int] = deque(maxlen=capacity)
        self.values: deque[Decimal] = deque(maxlen=capacity)

    def add(self, ts: int, value: Decimal) -> None:
        if not self.ts or ts >= self.ts[-1]:
            self.ts.append(ts)
            self.values.append(value)
            return
        # Rare (partitions interleave): rebuild; series are small.
        pairs = sorted([*zip(self.ts, self.values), (ts, value)])
        self.ts.clear()
        self.values.clear()
        for t, v in pairs[-(self.ts.maxlen or len(pairs)):]:
            self.ts.append(t)
            self.values.append(v)

    def upto(self, ts: int) -> int:
        """Number of points with time <= ts."""
        return bisect.bisect_right(self.ts, ts)


class MarketContextStore:
    """Per-symbol prices and 1-minute closes; thread-safe (fed by one thread, read by another)."""

    def __init__(self, vol_window_s: int = 1800, capacity: int = 20_000) -> None:
        self.vol_window_s = vol_window_s
        self._capacity = capacity
        self._prices: dict[str, _Series] = {}
        self._closes: dict[str, dict[int, tuple[int, Decimal]]] = {}  # symbol -> kline start -> (end, close)
        self._lock = threading.Lock()

    def update(self, event: Kline | Trade | Ticker | OrderBook) -> None:
        """Take in one market event."""
        with self._lock:
            if isinstance(event, Kline):
                if event.closed and event.interval == "1":
                    closes = self._closes.setdefault(event.symbol, {})
                    closes[event.start] = (event.end, event.close)  # upsert by start
                    if len(closes) > self._capacity:
                        del closes[min(closes)]
                    self._price(event.symbol).add(event.end, event.close)
            elif isinstance(event, Trade):
                self._price(event.symbol).add(event.ts_event, event.price)
            elif isinstance(event, Ticker) and event.last_price is not None:
                self._price(event.symbol).add(event.ts_event, event.last_price)
            # Order books carry no trade price; the mid would be a different quantity.

    def _price(self, symbol: str) -> _Series:
        series = self._prices.get(symbol)
        if series is None:
            series = self._prices[symbol] = _Series(self._capacity)
        return series

    def at(self, symbol: str, ts: int) -> MarketContext | None:
        """Context for `symbol` at `ts`, or None when no price at or before `ts` is known."""
        with self._lock:
            series = self._prices.get(symbol)
            n = series.upto(ts) if series else 0
            if not n:
                return None
            price, ts_price = series.values[n - 1], series.ts[n - 1]
            window_start = ts - self.vol_window_s * 1_000_000_000
            closes = sorted(
                (start, close) for start, (end, close) in self._closes.get(symbol, {}).items()
                if end <= ts and start >= window_start
            )
        returns = [
            math.log(b / a) for (sa, a), (sb, b) in zip(closes, closes[1:]) if sb - sa == _MINUTE_NS and a > 0
        ]
        vol = _stdev(returns) if len(returns) >= 2 else None
        return MarketContext(venue_symbol=symbol, last_price=price, ts_price=ts_price, realized_vol=vol,
                             vol_window_s=self.vol_window_s, vol_samples=len(returns))

    def symbols(self) -> list[str]:
        with self._lock:
            return sorted(self._prices)


def _stdev(values: list[float]) -> float:
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
