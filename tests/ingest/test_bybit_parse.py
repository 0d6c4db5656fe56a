"""Bybit v5 payloads -> MarketEvents: exact decimals, times, and refusals with reasons."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ingest.bybit.parse import (
    BybitApiError,
    BybitParseError,
    dec,
    kline_rows,
    next_start_ms,
    rest_kline,
    rest_ticker,
    ticker_event,
    ws_book,
    ws_klines,
    ws_ticker,
    ws_trades,
)
from ingest.contracts import ContractError, decode_market_event
from tests.ingest.servers import fixture


def frames(name: str) -> list[dict]:
    out = []
    for line in fixture("bybit", name).read_text().splitlines():
        if line.startswith("@"):
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            pass  # the deliberately truncated frame
    return out


def test_rest_rows_are_newest_first_with_row_zero_open_and_exact_decimals():
    payload = json.loads(fixture("bybit", "kline_response.json").read_text())
    rows, server_ms = kline_rows(payload)
    klines = [rest_kline(r, category="linear", symbol="BTCUSDT", interval="1", server_ms=server_ms, ts_ingest=1)
              for r in rows]
    assert [k.start for k in klines] == sorted((k.start for k in klines), reverse=True)
    assert [k.closed for k in klines] == [False, True, True, True, True]  # row 0 is the candle still open
    assert klines[1].end == klines[0].start - 1  # contiguous candles, end inclusive to the nanosecond
    assert klines[3].low == Decimal("67260.1") and str(klines[4].turnover) == "4264018.46891"
    assert klines[0].ts_event == server_ms * 1_000_000 and klines[1].ts_event == klines[1].end


def test_rest_error_codes_and_shapes_are_refused():
    with pytest.raises(BybitApiError) as err:
        kline_rows({"retCode": 10006, "retMsg": "Too many visits!", "result": {}, "time": 1})
    assert err.value.code == 10006
    with pytest.raises(BybitParseError):
        kline_rows({"retCode": 0, "retMsg": "OK", "result": {"list": "nope"}, "time": 1})
    with pytest.raises(BybitParseError, match="high"):
        rest_kline(["1717000020000", "10", "9", "8", "9", "1", "1"], category="linear", symbol="BTCUSDT",
                   interval="1", server_ms=1, ts_ingest=1)  # high below open: contract refuses


def test_ws_frames_parse_to_events():
    msgs = frames("linear.frames")
    book = ws_book(msgs[0])
    assert book.snapshot and book.update_id == 100 and book.seq == 8910001 and book.ts_ms == 1717000000998
    assert book.bids[0] == (Decimal("67250.50"), Decimal("1.200"))
    trades = ws_trades(msgs[2], category="linear", ts_ingest=1)
    assert [t.side for t in trades] == ["Buy", "Sell"] and trades[0].ts_event == 1717000001098 * 1_000_000
    kline = ws_klines(msgs[5], category="linear", ts_ingest=1)[0]
    assert kline.closed and kline.start == 1716999960000 * 1_000_000 and kline.end == 1717000019999_999_999
    symbol, snapshot, fields, _ = ws_ticker(msgs[8])
    assert (symbol, snapshot) == ("BTCUSDT", True) and fields["funding_rate"] == Decimal("0.0001")
    _, snapshot, fields, _ = ws_ticker(msgs[9])
    assert not snapshot and set(fields) == {"last_price", "bid1_price", "bid1_size"}


@pytest.mark.parametrize("mutate, reason", [
    (lambda m: m["data"][0].update(p=67251.0), "float"),
    (lambda m: m["data"][0].update(p="67,251"), "not a number"),
    (lambda m: m["data"][0].update(p="NaN"), "finite"),
    (lambda m: m["data"][0].pop("i"), "trade id"),
    (lambda m: m["data"][0].update(S="Hold"), "side"),
    (lambda m: m.update(topic="publicTrade"), "topic"),
])
def test_bad_trade_frames_are_refused_with_a_reason(mutate, reason):
    msg = frames("linear.frames")[2]
    mutate(msg)
    with pytest.raises(BybitParseError, match=reason):
        ws_trades(msg, category="linear", ts_ingest=1)


def test_month_and_week_candles_end_where_the_next_starts():
    jan = 1704067200000  # 2024-01-01
    assert next_start_ms(jan, "M") == 1706745600000  # 2024-02-01
    assert next_start_ms(1733011200000, "M") == 1735689600000  # 2024-12-01 -> 2025-01-01
    assert next_start_ms(jan, "W") - jan == 7 * 86_400_000
    assert next_start_ms(jan, "240") - jan == 4 * 3_600_000


@given(st.decimals(allow_nan=False, allow_infinity=False, places=8, min_value=0, max_value=10**9))
def test_decimal_strings_round_trip_exactly(value):
    text = format(value, "f")
    assert dec(text) == value and format(dec(text), "f") == text  # every digit kept


@given(st.dictionaries(st.sampled_from(["topic", "type", "data", "ts", "cts"]),
                       st.one_of(st.none(), st.integers(), st.text(max_size=5), st.lists(st.integers(), max_size=2),
                                 st.dictionaries(st.sampled_from(["s", "b", "a", "u", "seq"]),
                                                 st.one_of(st.integers(), st.text(max_size=3),
                                                           st.lists(st.lists(st.text(max_size=4), max_size=3),
                                                                    max_size=2)))), max_size=5))
def test_book_parser_never_fails_other_than_with_a_reason(msg):
    msg.setdefault("topic", "orderbook.50.BTCUSDT")
    try:
        ws_book(msg)
    except (BybitParseError, KeyError, TypeError, AttributeError) as exc:
        assert not isinstance(exc, AttributeError), exc  # a crash, not a refusal


OPTION_WS = {  # Bybit v5 docs, "Ticker", option example (wss://stream.bybit.com/v5/public/option)
    "id": "tickers.BTC-6JAN23-17500-C-2480334983-1672917511074", "topic": "tickers.BTC-6JAN23-17500-C",
    "ts": 1672917511074, "type": "snapshot",
    "data": {"symbol": "BTC-6JAN23-17500-C", "bidPrice": "0", "bidSize": "0", "bidIv": "0", "askPrice": "10",
             "askSize": "5.1", "askIv": "0.514", "lastPrice": "10", "highPrice24h": "25", "lowPrice24h": "5",
             "markPrice": "7.86976724", "indexPrice": "16823.73", "markPriceIv": "0.4896",
             "underlyingPrice": "16815.1", "openInterest": "49.85", "turnover24h": "446802.8473",
             "volume24h": "26.55", "totalVolume": "86", "totalTurnover": "1437431", "delta": "0.047831",
             "gamma": "0.00021453", "vega": "0.81351067", "theta": "-19.9115368", "predictedDeliveryPrice": "0",
             "change24h": "-0.33333334"}}
OPTION_REST = {  # GET /v5/market/tickers?category=option: the same quotes under their REST names
    "symbol": "BTC-30DEC22-18000-C", "bid1Price": "0", "bid1Size": "0", "bid1Iv": "0", "ask1Price": "435",
    "ask1Size": "0.66", "ask1Iv": "5", "lastPrice": "435", "highPrice24h": "435", "lowPrice24h": "165",
    "markPrice": "0.00000009", "indexPrice": "16600.55", "markIv": "0.7567", "underlyingPrice": "16590.42",
    "openInterest": "6.3", "turnover24h": "2482.73", "volume24h": "0.15", "totalVolume": "99",
    "totalTurnover": "1967653", "delta": "0.00000001", "gamma": "0.00000001", "vega": "0.00000004",
    "theta": "-0.00000152", "predictedDeliveryPrice": "0", "change24h": "86"}


def test_option_ticker_from_the_stream_maps_quotes_ivs_and_greeks_and_an_empty_bid_is_absent():
    symbol, snapshot, fields, ts = ws_ticker(OPTION_WS, "option")
    event = ticker_event(symbol, fields, category="option", ts_ms=ts, ts_ingest=1)
    assert (event.symbol, snapshot, event.schema_version) == ("BTC-6JAN23-17500-C", True, 2)
    assert (event.bid1_price, event.bid1_size, event.bid1_iv) == (None, None, None)  # "0"/"0"/"0": no bid
    assert (event.ask1_price, event.ask1_size, event.ask1_iv) == (Decimal("10"), Decimal("5.1"), Decimal("0.514"))
    assert (event.mark_iv, event.underlying_price, event.theta) == (
        Decimal("0.4896"), Decimal("16815.1"), Decimal("-19.9115368"))
    assert event.funding_rate is None and event.mark_price == Decimal("7.86976724")
    wire = json.loads(event.to_bytes())
    assert wire["bid1_price"] is None and wire["funding_rate"] is None and wire["delta"] == "0.047831"


def test_option_ticker_from_rest_maps_the_same_fields():
    event = rest_ticker(OPTION_REST, category="option", ts_ms=1672376496682, ts_ingest=1)
    assert (event.bid1_price, event.ask1_price, event.ask1_iv, event.mark_iv) == (
        None, Decimal("435"), Decimal("5"), Decimal("0.7567"))
    assert event.underlying_price == Decimal("16590.42") and event.gamma == Decimal("0.00000001")


def test_linear_ticker_fields_are_read_from_their_own_names_only():
    _, _, fields, _ = ws_ticker(OPTION_WS | {"topic": "tickers.BTCUSDT", "data": {"symbol": "BTCUSDT",
                                                                                  "bidPrice": "1"}})
    assert fields == {}  # bidPrice is an option name; linear sends bid1Price


def test_ticker_schema_versions_old_recordings_decode_and_v1_cannot_carry_option_fields():
    v1 = {"schema_version": 1, "exchange": "bybit", "category": "linear", "symbol": "BTCUSDT", "ts_event": 1,
          "ts_ingest": 2, "type": "ticker", "last_price": "67000.5"}
    old = decode_market_event(json.dumps(v1))
    assert old.schema_version == 1 and old.mark_iv is None and old.last_price == Decimal("67000.5")
    with pytest.raises(ContractError, match="mark_iv"):
        decode_market_event(json.dumps(v1 | {"mark_iv": "0.5"}))
    with pytest.raises(ContractError, match="schema_version"):
        decode_market_event(json.dumps(v1 | {"schema_version": 3}))


def test_option_settings_subscribe_tickers_and_books_at_an_option_depth():
    from ingest.bybit.settings import BybitSettings

    settings = BybitSettings(option_symbols=["BTC-28JUN24-70000-C"], linear_symbols=[], option_book_depth=100)
    assert settings.categories() == ["option"]
    assert settings.ws_topics("option") == ["orderbook.100.BTC-28JUN24-70000-C", "tickers.BTC-28JUN24-70000-C"]
    assert settings.ws_endpoint("option") == "wss://stream.bybit.com/v5/public/option"
    with pytest.raises(ValueError, match="option_book_depth 50"):
        BybitSettings(option_symbols=["BTC-28JUN24-70000-C"], option_book_depth=50)
