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
    ws_book,
    ws_klines,
    ws_ticker,
    ws_trades,
)
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
