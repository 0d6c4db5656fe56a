"""Pure parsers from Bybit v5 payloads to MarketEvents; no I/O, no state.

Prices and sizes arrive as JSON strings and become `Decimal` from the string, so
"16493.50" keeps every digit; a JSON float is refused rather than rounded. Times
arrive in milliseconds and leave in nanoseconds. Anything that does not have the
documented shape raises `BybitParseError` with the reason, for the dead-letter topic.
"""

from __future__ import annotations

import calendar
import datetime as dt
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from pydantic import ValidationError

from ingest.contracts import ContractError, Kline, OrderBook, Ticker, Trade

MS = 1_000_000  # nanoseconds per millisecond
_MINUTES = {"1": 1, "3": 3, "5": 5, "15": 15, "30": 30, "60": 60, "120": 120, "240": 240, "360": 360, "720": 720}

# Bybit ticker field -> Ticker field (spot, linear, inverse).
TICKER_FIELDS = {
    "lastPrice": "last_price",
    "bid1Price": "bid1_price",
    "bid1Size": "bid1_size",
    "ask1Price": "ask1_price",
    "ask1Size": "ask1_size",
    "markPrice": "mark_price",
    "indexPrice": "index_price",
    "highPrice24h": "high_price_24h",
    "lowPrice24h": "low_price_24h",
    "volume24h": "volume_24h",
    "turnover24h": "turnover_24h",
    "openInterest": "open_interest",
    "fundingRate": "funding_rate",
}
_OPTION_COMMON = {
    "lastPrice": "last_price",
    "markPrice": "mark_price",
    "indexPrice": "index_price",
    "underlyingPrice": "underlying_price",
    "highPrice24h": "high_price_24h",
    "lowPrice24h": "low_price_24h",
    "volume24h": "volume_24h",
    "turnover24h": "turnover_24h",
    "openInterest": "open_interest",
    "delta": "delta",
    "gamma": "gamma",
    "vega": "vega",
    "theta": "theta",
}
# Option tickers name their quotes differently on the WebSocket (tickers.{symbol}) and over REST
# (/v5/market/tickers?category=option); both map onto the same Ticker fields.
OPTION_TICKER_FIELDS = {
    "ws": {"bidPrice": "bid1_price", "bidSize": "bid1_size", "bidIv": "bid1_iv", "askPrice": "ask1_price",
           "askSize": "ask1_size", "askIv": "ask1_iv", "markPriceIv": "mark_iv", **_OPTION_COMMON},
    "rest": {"bid1Price": "bid1_price", "bid1Size": "bid1_size", "bid1Iv": "bid1_iv", "ask1Price": "ask1_price",
             "ask1Size": "ask1_size", "ask1Iv": "ask1_iv", "markIv": "mark_iv", **_OPTION_COMMON},
}
_SIDES = (("bid1_size", ("bid1_price", "bid1_size", "bid1_iv")), ("ask1_size", ("ask1_price", "ask1_size", "ask1_iv")))


class BybitParseError(ValueError):
    """A payload that does not have the documented shape; the text says what is wrong."""


def dec(value: Any, what: str = "number") -> Decimal:
    """An exact Decimal from Bybit's string (or integer) number; floats and junk are refused."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise BybitParseError(f"{what}: expected a string number, got {type(value).__name__} {value!r}")
    try:
        number = Decimal(value)
    except InvalidOperation:
        raise BybitParseError(f"{what}: {value!r} is not a number") from None
    if not number.is_finite():
        raise BybitParseError(f"{what}: {value!r} is not finite")
    return number


def ms_int(value: Any, what: str = "timestamp") -> int:
    """Integer milliseconds from an int or a digit string."""
    if isinstance(value, bool):
        raise BybitParseError(f"{what}: {value!r} is not a millisecond timestamp")
    if isinstance(value, int):
        ms = value
    elif isinstance(value, str) and value.isdigit():
        ms = int(value)
    else:
        raise BybitParseError(f"{what}: {value!r} is not a millisecond timestamp")
    if ms < 0:
        raise BybitParseError(f"{what}: negative")
    return ms


def next_start_ms(start_ms: int, interval: str) -> int:
    """Start of the candle after the one starting at `start_ms` (months have their own lengths)."""
    if interval in _MINUTES:
        return start_ms + _MINUTES[interval] * 60_000
    if interval == "D":
        return start_ms + 86_400_000
    if interval == "W":
        return start_ms + 7 * 86_400_000
    if interval == "M":
        start = dt.datetime.fromtimestamp(start_ms / 1000, tz=dt.timezone.utc)
        year, month = (start.year + 1, 1) if start.month == 12 else (start.year, start.month + 1)
        return calendar.timegm((year, month, 1, 0, 0, 0)) * 1000
    raise BybitParseError(f"unknown interval {interval!r}")


def _validated(build: Any, what: str) -> Any:
    try:
        return build()
    except (ValidationError, ContractError) as exc:
        raise BybitParseError(f"{what}: {exc}") from None


def _topic_symbol(topic: Any, parts: int) -> list[str]:
    if not isinstance(topic, str):
        raise BybitParseError(f"topic {topic!r} is not a string")
    pieces = topic.split(".")
    if len(pieces) != parts or not all(pieces):
        raise BybitParseError(f"topic {topic!r}: expected {parts} dot-separated parts")
    return pieces


# -- REST ---------------------------------------------------------------------------------------------------


def kline_rows(payload: Any) -> tuple[list[list[Any]], int]:
    """The rows and server time (ms) of a `/v5/market/kline` answer, after checking `retCode`."""
    if not isinstance(payload, dict):
        raise BybitParseError("kline response is not a JSON object")
    code = payload.get("retCode")
    if code != 0:
        raise BybitApiError(code, str(payload.get("retMsg", "")))
    result = payload.get("result")
    if not isinstance(result, dict) or not isinstance(result.get("list"), list):
        raise BybitParseError("kline response has no result.list")
    server_ms = ms_int(payload.get("time", 0), "time")
    return result["list"], server_ms


class BybitApiError(Exception):
    """A REST answer with a non-zero `retCode` (10006: too many visits)."""

    def __init__(self, code: Any, message: str) -> None:
        super().__init__(f"Bybit retCode {code}: {message}")
        self.code = code
        self.message = message


def rest_kline(row: Any, *, category: str, symbol: str, interval: str, server_ms: int, ts_ingest: int) -> Kline:
    """One REST row `[start, open, high, low, close, volume, turnover]`; closed once its end has passed."""
    if not isinstance(row, list) or len(row) < 7:
        raise BybitParseError(f"kline row {row!r}: expected 7 fields")
    start_ms = ms_int(row[0], "kline start")
    end_ms = next_start_ms(start_ms, interval)
    closed = server_ms >= end_ms
    return _validated(lambda: Kline(
        category=category, symbol=symbol, interval=interval, start=start_ms * MS, end=end_ms * MS - 1,
        open=dec(row[1], "open"), high=dec(row[2], "high"), low=dec(row[3], "low"), close=dec(row[4], "close"),
        volume=dec(row[5], "volume"), turnover=dec(row[6], "turnover"), closed=closed,
        ts_event=(end_ms * MS - 1) if closed else server_ms * MS, ts_ingest=ts_ingest,
    ), f"kline {symbol} {row[0]}")


# -- WebSocket ------------------------------------------------------------------------------------------------


def ws_klines(msg: dict[str, Any], *, category: str, ts_ingest: int) -> list[Kline]:
    """A `kline.{interval}.{symbol}` push: usually one candle, `confirm` true once it closed."""
    _, interval, symbol = _topic_symbol(msg.get("topic"), 3)
    data = msg.get("data")
    if not isinstance(data, list):
        raise BybitParseError("kline push: data is not a list")
    out = []
    for item in data:
        if not isinstance(item, dict):
            raise BybitParseError("kline push: item is not an object")
        start_ms = ms_int(item.get("start"), "kline start")
        if str(item.get("interval", interval)) != interval:
            raise BybitParseError(f"kline push: interval {item.get('interval')!r} on topic {msg['topic']}")
        confirm = item.get("confirm")
        if not isinstance(confirm, bool):
            raise BybitParseError("kline push: confirm is not a boolean")
        end_ns = next_start_ms(start_ms, interval) * MS - 1
        ts_ms = ms_int(item.get("timestamp", msg.get("ts")), "kline timestamp")
        out.append(_validated(lambda: Kline(
            category=category, symbol=symbol, interval=interval, start=start_ms * MS, end=end_ns,
            open=dec(item.get("open"), "open"), high=dec(item.get("high"), "high"), low=dec(item.get("low"), "low"),
            close=dec(item.get("close"), "close"), volume=dec(item.get("volume"), "volume"),
            turnover=dec(item.get("turnover"), "turnover"), closed=confirm,
            ts_event=ts_ms * MS, ts_ingest=ts_ingest,
        ), f"kline {symbol} {start_ms}"))
    return out


@dataclass(frozen=True, slots=True)
class TradeRow:
    """One trade of a `publicTrade` push, its numbers exact; `encode.trade_bytes` or `Trade` take it from here."""

    symbol: str
    trade_id: str
    price: Decimal
    size: Decimal
    side: Any
    ts_ms: int


def ws_trade_rows(msg: dict[str, Any]) -> list[TradeRow]:
    """A `publicTrade.{symbol}` push: a batch of trades, oldest first."""
    _, symbol = _topic_symbol(msg.get("topic"), 2)
    data = msg.get("data")
    if not isinstance(data, list):
        raise BybitParseError("trade push: data is not a list")
    out = []
    for item in data:
        if not isinstance(item, dict):
            raise BybitParseError("trade push: item is not an object")
        if item.get("s", symbol) != symbol:
            raise BybitParseError(f"trade push: symbol {item.get('s')!r} on topic {msg['topic']}")
        trade_id = item.get("i")
        if not isinstance(trade_id, str) or not trade_id:
            raise BybitParseError("trade push: missing trade id 'i'")
        out.append(TradeRow(symbol, trade_id, dec(item.get("p"), "price"), dec(item.get("v"), "size"),
                            item.get("S"), ms_int(item.get("T"), "trade time")))
    return out


def ws_trades(msg: dict[str, Any], *, category: str, ts_ingest: int) -> list[Trade]:
    """A `publicTrade.{symbol}` push as validated `Trade` models."""
    return [_validated(lambda: Trade(
        category=category, symbol=row.symbol, trade_id=row.trade_id, price=row.price, size=row.size, side=row.side,
        ts_event=row.ts_ms * MS, ts_ingest=ts_ingest,
    ), f"trade {row.symbol} {row.trade_id}") for row in ws_trade_rows(msg)]


@dataclass(frozen=True, slots=True)
class BookUpdate:
    """One `orderbook.{depth}.{symbol}` push, levels as exact decimals; size 0 means delete."""

    symbol: str
    snapshot: bool
    bids: tuple[tuple[Decimal, Decimal], ...]
    asks: tuple[tuple[Decimal, Decimal], ...]
    update_id: int
    seq: int | None
    ts_ms: int


def _levels(raw: Any, side: str) -> tuple[tuple[Decimal, Decimal], ...]:
    if not isinstance(raw, list):
        raise BybitParseError(f"book {side} is not a list")
    out = []
    for level in raw:
        if not isinstance(level, list) or len(level) != 2:
            raise BybitParseError(f"book {side} level {level!r}: expected [price, size]")
        price, size = dec(level[0], f"{side} price"), dec(level[1], f"{side} size")
        if size < 0 or price <= 0:
            raise BybitParseError(f"book {side} level {level!r}: negative size or non-positive price")
        out.append((price, size))
    return tuple(out)


def ws_book(msg: dict[str, Any]) -> BookUpdate:
    """Parse an order-book push (snapshot or delta)."""
    _, depth, symbol = _topic_symbol(msg.get("topic"), 3)
    kind = msg.get("type")
    if kind not in ("snapshot", "delta"):
        raise BybitParseError(f"book push: type {kind!r}")
    data = msg.get("data")
    if not isinstance(data, dict):
        raise BybitParseError("book push: data is not an object")
    if data.get("s", symbol) != symbol:
        raise BybitParseError(f"book push: symbol {data.get('s')!r} on topic {msg['topic']}")
    seq = data.get("seq")
    return BookUpdate(
        symbol=symbol, snapshot=kind == "snapshot", bids=_levels(data.get("b"), "bid"),
        asks=_levels(data.get("a"), "ask"), update_id=ms_int(data.get("u"), "update id"),
        seq=None if seq is None else ms_int(seq, "seq"), ts_ms=ms_int(msg.get("cts", msg.get("ts")), "book ts"),
    )


def book_event(update: BookUpdate, bids: list[tuple[Decimal, Decimal]], asks: list[tuple[Decimal, Decimal]], *,
               category: str, depth: int, ts_ingest: int) -> OrderBook:
    """The published top of book after `update` was applied."""
    # One model_validate over plain dicts: the levels are validated inside pydantic-core, not by 2 x depth
    # Python-level BookLevel constructions (a third of the cost of a normalized book).
    return _validated(lambda: OrderBook.model_validate({
        "category": category, "symbol": update.symbol, "depth": depth, "update_id": update.update_id,
        "seq": update.seq, "bids": [{"price": p, "size": s} for p, s in bids],
        "asks": [{"price": p, "size": s} for p, s in asks], "ts_event": update.ts_ms * MS, "ts_ingest": ts_ingest,
    }), f"book {update.symbol} u={update.update_id}")


def ws_ticker(msg: dict[str, Any], category: str = "linear") -> tuple[str, bool, dict[str, Decimal | None], int]:
    """A `tickers.{symbol}` push: (symbol, is_snapshot, the fields it carries, ts ms).

    Spot and option pushes are always snapshots; linear and inverse send a snapshot, then
    deltas carrying only the fields that changed. A field mapped to None clears it (an
    emptied side of the book); a field not in the dict was not sent.
    """
    _, symbol = _topic_symbol(msg.get("topic"), 2)
    kind = msg.get("type", "snapshot")
    if kind not in ("snapshot", "delta"):
        raise BybitParseError(f"ticker push: type {kind!r}")
    data = msg.get("data")
    if not isinstance(data, dict):
        raise BybitParseError("ticker push: data is not an object")
    if data.get("symbol", symbol) != symbol:
        raise BybitParseError(f"ticker push: symbol {data.get('symbol')!r} on topic {msg['topic']}")
    names = OPTION_TICKER_FIELDS["ws"] if category == "option" else TICKER_FIELDS
    return symbol, kind == "snapshot", ticker_fields(data, names), ms_int(msg.get("ts"), "ticker ts")


def ticker_fields(data: dict[str, Any], names: dict[str, str]) -> dict[str, Decimal | None]:
    """Bybit's ticker fields as Ticker fields: "" is not sent; a side with zero size is an empty side.

    An option with nothing bid is sent as bidPrice "0", bidSize "0", bidIv "0": that is no bid,
    so its price, size and IV become None (cleared), never a zero price a consumer would trade on.
    """
    fields: dict[str, Decimal | None] = {
        ours: dec(data[theirs], theirs) for theirs, ours in names.items() if theirs in data and data[theirs] != ""}
    for size, side in _SIDES:
        if fields.get(size) == 0:
            fields.update(dict.fromkeys(side))
    return fields


def rest_ticker(item: Any, *, category: str, ts_ms: int, ts_ingest: int) -> Ticker:
    """One item of `/v5/market/tickers` (`result.list`): options in their REST names, others as on the stream."""
    if not isinstance(item, dict) or not isinstance(item.get("symbol"), str):
        raise BybitParseError(f"ticker item {str(item)[:200]!r}: expected an object with a symbol")
    names = OPTION_TICKER_FIELDS["rest"] if category == "option" else TICKER_FIELDS
    return ticker_event(item["symbol"], ticker_fields(item, names), category=category, ts_ms=ts_ms,
                        ts_ingest=ts_ingest)


def ticker_event(symbol: str, fields: dict[str, Decimal | None], *, category: str, ts_ms: int,
                 ts_ingest: int) -> Ticker:
    """The merged ticker state as a `Ticker`."""
    return _validated(lambda: Ticker(category=category, symbol=symbol, ts_event=ts_ms * MS, ts_ingest=ts_ingest,
                                     **fields), f"ticker {symbol}")
