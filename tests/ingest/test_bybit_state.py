"""Candle upserts, trade dedupe and ticker merges."""

from __future__ import annotations

from decimal import Decimal

from ingest.bybit.state import KlineState, TickerState, TradeDedupe
from ingest.contracts import Kline

MIN = 60_000 * 1_000_000


def kline(start_min: int, closed: bool) -> Kline:
    start = (28616666 + start_min) * MIN
    return Kline(category="linear", symbol="BTCUSDT", interval="1", start=start, end=start + MIN - 1,
                 open=Decimal(1), high=Decimal(2), low=Decimal(1), close=Decimal(2), volume=Decimal(1),
                 turnover=Decimal(1), closed=closed, ts_event=start, ts_ingest=start)


def test_closed_once_updates_only_while_open_and_gaps_reported():
    state = KlineState()
    assert state.accept(kline(0, False)) == (True, None)
    assert state.accept(kline(0, True)) == (True, None)
    assert state.accept(kline(0, True)) == (False, None)  # repeat
    assert state.accept(kline(0, False)) == (False, None)  # late update of a closed candle
    publish, gap = state.accept(kline(3, True))
    assert publish and gap == (kline(1, True).start, kline(3, True).start - 1)
    assert state.accept(kline(1, True)) == (True, None)  # backfilled later: still published once
    assert state.accept(kline(2, False)) == (False, None)  # older than the newest closed
    assert state.newest_closed("BTCUSDT", "1") == kline(3, True).start


def test_trade_ids_remembered_within_a_window():
    dedupe = TradeDedupe(window=2)
    assert dedupe.first_time("X", "a") and dedupe.first_time("X", "b") and not dedupe.first_time("X", "a")
    assert dedupe.first_time("Y", "a")  # per symbol
    dedupe.first_time("X", "c")
    assert dedupe.first_time("X", "a")  # evicted from the window


def test_ticker_delta_merges_into_snapshot_and_waits_for_one():
    state = TickerState()
    assert state.apply("X", False, {"last_price": Decimal(1)}) is None
    state.apply("X", True, {"last_price": Decimal(1), "mark_price": Decimal(2)})
    assert state.apply("X", False, {"last_price": Decimal(3)}) == {"last_price": Decimal(3), "mark_price": Decimal(2)}
    state.drop()
    assert state.apply("X", False, {"last_price": Decimal(4)}) is None


def test_a_snapshot_forgets_fields_it_does_not_carry_and_a_delta_can_clear_one():
    state = TickerState()
    state.apply("X", True, {"last_price": Decimal(1), "bid1_price": Decimal(2), "bid1_size": Decimal(3)})
    assert state.apply("X", True, {"last_price": Decimal(5)}) == {"last_price": Decimal(5)}  # not the old bid
    state.apply("X", True, {"last_price": Decimal(1), "bid1_price": Decimal(2), "bid1_size": Decimal(3)})
    merged = state.apply("X", False, {"bid1_price": None, "bid1_size": None})
    assert merged == {"last_price": Decimal(1), "bid1_price": None, "bid1_size": None}
