"""The hot-path encoders write exactly what the contract models would, and refuse what they would refuse."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest.bybit.book import LocalBook
from ingest.bybit.encode import book_bytes, trade_bytes
from ingest.bybit.parse import MS, BookUpdate, BybitParseError, book_event, dec, ws_trade_rows, ws_trades
from ingest.contracts import Trade, decode_market_event

# Numbers as Bybit sends them (strings), through the parser's own `dec`: plain, scientific, tiny, huge.
number_text = st.one_of(
    st.decimals(min_value=Decimal("0.00000001"), max_value=Decimal("1e9"), places=8, allow_nan=False).map(str),
    st.integers(min_value=1, max_value=10**30).map(str),
    st.builds(lambda m, e: f"{m}E{e}", st.integers(1, 999), st.integers(-12, 12)),
)
prices = number_text.map(dec)
symbols = st.from_regex(r"\A[A-Z0-9][A-Z0-9._:/-]{0,31}\Z")
categories = st.sampled_from(["spot", "linear", "inverse", "option"])
times = st.integers(min_value=0, max_value=4_102_444_800_000)  # ms up to 2100


@st.composite
def books(draw) -> tuple[BookUpdate, list, list]:
    mid = draw(st.integers(min_value=2, max_value=10**7))
    tick = Decimal(draw(st.sampled_from(["0.5", "0.01", "1", "0.0001"])))
    n_bids, n_asks = draw(st.integers(0, 20)), draw(st.integers(0, 20))
    bid_sizes = draw(st.lists(prices, min_size=n_bids, max_size=n_bids))
    ask_sizes = draw(st.lists(prices, min_size=n_asks, max_size=n_asks))
    bids = [(Decimal(mid) - tick * (i + 1), bid_sizes[i]) for i in range(n_bids) if Decimal(mid) - tick * (i + 1) > 0]
    asks = [(Decimal(mid) + tick * i, ask_sizes[i]) for i in range(n_asks)]
    seq = draw(st.one_of(st.none(), st.integers(0, 2**40)))
    update = BookUpdate(symbol=draw(symbols), snapshot=True, bids=tuple(bids), asks=tuple(asks),
                        update_id=draw(st.integers(0, 2**40)), seq=seq, ts_ms=draw(times))
    return update, bids, asks


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(books(), categories, st.integers(1, 200), times)
def test_book_bytes_are_the_orderbook_models_bytes(book, category, depth, ts_ingest_ms):
    update, bids, asks = book
    fast = book_bytes(update, bids, asks, category=category, depth=depth, ts_ingest=ts_ingest_ms * MS)
    model = book_event(update, bids, asks, category=category, depth=depth, ts_ingest=ts_ingest_ms * MS)
    assert fast == model.to_bytes()
    assert decode_market_event(fast) == model


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(symbols, categories, st.text(min_size=1, max_size=64), prices,
       prices, st.sampled_from(["Buy", "Sell"]), times, times)
def test_trade_bytes_are_the_trade_models_bytes(symbol, category, trade_id, price, size, side, ts_ms, ingest_ms):
    try:
        model = Trade(category=category, symbol=symbol, trade_id=trade_id, price=price, size=size, side=side,
                      ts_event=ts_ms * MS, ts_ingest=ingest_ms * MS)
        expected = model.to_bytes()
    except (ValueError, UnicodeEncodeError):  # e.g. a lone surrogate: the model cannot carry it either
        with pytest.raises(BybitParseError):
            trade_bytes(category=category, symbol=symbol, trade_id=trade_id, price=price, size=size, side=side,
                        ts_ms=ts_ms, ts_ingest=ingest_ms * MS)
        return
    fast = trade_bytes(category=category, symbol=symbol, trade_id=trade_id, price=price, size=size, side=side,
                       ts_ms=ts_ms, ts_ingest=ingest_ms * MS)
    assert fast == expected
    assert decode_market_event(fast) == model


def test_a_real_trade_push_encodes_like_the_models():
    msg = {"topic": "publicTrade.BTCUSDT", "type": "snapshot", "ts": 1716999961020, "data": [
        {"T": 1716999961018, "s": "BTCUSDT", "S": "Buy", "v": "0.001", "p": "67512.40", "L": "PlusTick",
         "i": "2290000000123456789", "BT": False},
        {"T": 1716999961019, "s": "BTCUSDT", "S": "Sell", "v": "1.250", "p": "67512.30", "L": "MinusTick",
         "i": "2290000000123456790", "BT": False}]}
    fast = [trade_bytes(category="linear", symbol=r.symbol, trade_id=r.trade_id, price=r.price, size=r.size,
                        side=r.side, ts_ms=r.ts_ms, ts_ingest=7) for r in ws_trade_rows(msg)]
    assert fast == [t.to_bytes() for t in ws_trades(msg, category="linear", ts_ingest=7)]


@pytest.mark.parametrize("change, match", [
    ({"symbol": "btcusdt"}, "symbol"), ({"symbol": "X" * 33}, "symbol"), ({"category": "futures"}, "category"),
    ({"trade_id": ""}, "trade id"), ({"trade_id": "x" * 65}, "trade id"), ({"side": "buy"}, "side"),
    ({"size": Decimal("-1")}, "negative"),
])
def test_trade_bytes_refuse_what_the_contract_refuses(change, match):
    fields = {"category": "linear", "symbol": "BTCUSDT", "trade_id": "t-1", "price": Decimal("1"),
              "size": Decimal("1"), "side": "Buy", "ts_ms": 1, "ts_ingest": 1, **change}
    with pytest.raises(BybitParseError, match=match):
        trade_bytes(**fields)
    with pytest.raises(ValueError):
        Trade(category=fields["category"], symbol=fields["symbol"], trade_id=fields["trade_id"],
              price=fields["price"], size=fields["size"], side=fields["side"], ts_event=1, ts_ingest=1)


def test_a_crossed_book_is_refused_like_the_model_refuses_it():
    update = BookUpdate("BTCUSDT", True, ((Decimal("101"), Decimal("1")),), ((Decimal("100"), Decimal("1")),), 5,
                        None, 1)
    book = LocalBook("BTCUSDT")
    book.apply(update)
    bids, asks = book.top(20)
    with pytest.raises(BybitParseError, match="crossed"):
        book_bytes(update, bids, asks, category="linear", depth=20, ts_ingest=1)
    with pytest.raises(BybitParseError, match="crossed"):
        book_event(update, bids, asks, category="linear", depth=20, ts_ingest=1)


def test_a_malformed_side_is_a_parse_error_not_a_crash():
    with pytest.raises(BybitParseError, match="side"):
        trade_bytes(category="linear", symbol="BTCUSDT", trade_id="t-1", price=Decimal("1"), size=Decimal("1"),
                    side=["Buy"], ts_ms=1, ts_ingest=1)
