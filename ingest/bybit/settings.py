"""Settings of the Bybit ingestor (`FINSIGNAL_BYBIT_*`)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from ingest.settings import ComponentSettings

Category = Literal["spot", "linear", "inverse", "option"]
CATEGORIES: tuple[str, ...] = ("spot", "linear", "inverse", "option")
# Options stream tickers and books only: Bybit has no option klines on the WebSocket, and option trades
# come per base coin (publicTrade.BTC), not per instrument.
OPTION_CHANNELS = frozenset({"ticker", "orderbook"})
Channel = Literal["kline", "trade", "orderbook", "ticker"]

# Depths Bybit serves per category (v5 docs, "Orderbook"): asking for another is refused.
BOOK_DEPTHS: dict[str, frozenset[int]] = {
    "spot": frozenset({1, 50, 200, 1000}),
    "linear": frozenset({1, 50, 200, 500, 1000}),
    "inverse": frozenset({1, 50, 200, 500, 1000}),
    "option": frozenset({25, 100}),
}
INTERVALS = ("1", "3", "5", "15", "30", "60", "120", "240", "360", "720", "D", "W", "M")


class BybitSettings(ComponentSettings):
    """Which instruments and channels to stream, where from, and how politely."""

    section: ClassVar[str] = "bybit"

    rest_url: str = Field("https://api.bybit.com", description="REST base URL (no trailing path)")
    ws_url: str = Field("wss://stream.bybit.com/v5/public/{category}",
                        description="public WebSocket URL; {category} becomes spot, linear or inverse")
    spot_symbols: list[str] = Field(default_factory=list, description="spot instruments, e.g. BTCUSDT")
    linear_symbols: list[str] = Field(default_factory=lambda: ["BTCUSDT", "ETHUSDT", "SOLUSDT"],
                                      description="USDT/USDC perpetuals and futures")
    inverse_symbols: list[str] = Field(default_factory=list, description="coin-margined contracts, e.g. BTCUSD")
    option_symbols: list[str] = Field(default_factory=list,
                                      description="options, e.g. BTC-28JUN24-70000-C: tickers and books only")
    channels: list[Channel] = Field(default_factory=lambda: ["kline", "trade", "orderbook", "ticker"])
    kline_intervals: list[str] = Field(default_factory=lambda: ["1"], description="Bybit intervals: 1 ... 720, D, W, M")
    book_depth: int = Field(50, description="order-book depth subscribed (orderbook.{depth}.{symbol})")
    option_book_depth: int = Field(25, description="order-book depth subscribed for options (25 or 100)")
    book_top_n: int = Field(20, ge=1, description="levels per side published after each book update")
    backfill_bars: int = Field(60, ge=0, description="closed candles fetched over REST at start, per symbol")
    ping_interval_s: float = Field(20.0, gt=0, description="application ping ({'op': 'ping'}); Bybit asks 20 s")
    silence_timeout_s: float = Field(45.0, gt=0, description="no frame at all for this long: reconnect")
    ack_timeout_s: float = Field(10.0, gt=0, description="a subscribe not acknowledged in this time: reconnect")
    reconnect_base_s: float = Field(0.5, gt=0)
    reconnect_cap_s: float = Field(30.0, gt=0)
    stable_after_s: float = Field(30.0, ge=0, description="a connection up this long resets the back-off")
    rest_max_calls: int = Field(600, ge=1, description="REST calls per window: Bybit allows 600 per 5 s per IP")
    rest_period_s: float = Field(5.0, gt=0)
    ban_backoff_s: float = Field(600.0, ge=0, description="pause after HTTP 403 (an IP ban lasts >= 10 min)")
    rate_limit_backoff_s: float = Field(5.0, ge=0, description="pause after HTTP 429 / retCode 10006")
    rest_attempts: int = Field(5, ge=1, description="tries of one REST page before giving up on it")
    rest_timeout_s: float = Field(10.0, gt=0)
    trade_dedupe_window: int = Field(20_000, ge=1, description="trade ids remembered per symbol")
    queue_size: int = Field(10_000, ge=1, description="records waiting for Kafka before the socket is paused")
    args_per_subscribe_spot: int = Field(10, ge=1, le=10, description="spot accepts at most 10 args a request")
    args_per_subscribe: int = Field(100, ge=1, description="args per subscribe on linear/inverse")

    @model_validator(mode="after")
    def _valid(self) -> BybitSettings:
        bad = [i for i in self.kline_intervals if i not in INTERVALS]
        if bad:
            raise ValueError(f"unknown kline intervals {bad}; Bybit has {', '.join(INTERVALS)}")
        for category in CATEGORIES:
            depth = self.depth(category)
            if self.symbols(category) and depth not in BOOK_DEPTHS[category]:
                name = "option_book_depth" if category == "option" else "book_depth"
                raise ValueError(f"{name} {depth} is not served on {category}: {sorted(BOOK_DEPTHS[category])}")
            if self.symbols(category) and self.book_top_n > depth:
                raise ValueError(f"book_top_n cannot exceed the {category} book depth {depth}")
        return self

    def depth(self, category: str) -> int:
        """Order-book depth subscribed on one category."""
        return self.option_book_depth if category == "option" else self.book_depth

    def symbols(self, category: str) -> list[str]:
        """Configured instruments of one category."""
        return {"spot": self.spot_symbols, "linear": self.linear_symbols, "inverse": self.inverse_symbols,
                "option": self.option_symbols}[category]

    def categories(self) -> list[str]:
        """Categories with at least one instrument."""
        return [c for c in CATEGORIES if self.symbols(c)]

    def ws_topics(self, category: str) -> list[str]:
        """Subscription args for one category's connection."""
        out: list[str] = []
        channels = [c for c in self.channels if category != "option" or c in OPTION_CHANNELS]
        for symbol in self.symbols(category):
            if "kline" in channels:
                out += [f"kline.{interval}.{symbol}" for interval in self.kline_intervals]
            if "trade" in channels:
                out.append(f"publicTrade.{symbol}")
            if "orderbook" in channels:
                out.append(f"orderbook.{self.depth(category)}.{symbol}")
            if "ticker" in channels:
                out.append(f"tickers.{symbol}")
        return out

    def ws_endpoint(self, category: str) -> str:
        return self.ws_url.format(category=category)
