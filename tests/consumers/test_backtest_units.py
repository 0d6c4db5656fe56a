"""Backtest building blocks with hand-computed answers: event order, trades and costs, outcomes, metrics."""

from __future__ import annotations

import json
import math
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest

from consumers.backtest.compare import metric_deltas, signal_agreement
from consumers.backtest.config import StrategyConfig
from consumers.backtest.events import PriceBook, PriceSeries, load_recording
from consumers.backtest.metrics import equity_curve, outcomes, performance, signal_quality, spearman
from consumers.backtest.strategy import round_trip, simulate
from ingest.contracts import Document, Trade
from ingest.recording import RecordingWriter
from signals.contracts import ClassProbs, ModelInfo, Signal
from tests.consumers.helpers import BASE_NS

S = 1_000_000_000
MODEL = ModelInfo(name="m", version="v1", content_hash="a" * 64)


def sig(i: int, score: float, t_s: float, symbol: str = "BTCUSDT", model: ModelInfo = MODEL) -> Signal:
    """A signal available at BASE + t_s seconds with the given score (> 0 long, < 0 short, 0 flat)."""
    ts = BASE_NS + int(t_s * S)
    if score == 0:
        probs = ClassProbs(bearish=0.1, neutral=0.8, bullish=0.1)
    else:  # the scored side stays the top class, so direction and score agree
        low = max(0.0, (1 - 2 * abs(score)) / 3 + 0.01)
        high, neutral = abs(score) + low, 1 - abs(score) - 2 * low
        probs = (ClassProbs(bearish=low, neutral=neutral, bullish=high) if score > 0
                 else ClassProbs(bearish=high, neutral=neutral, bullish=low))
    doc = Document.create(kind="news", source="t", title=f"h{i}", ts_event=ts, ts_ingest=ts)
    return Signal.from_probs(document_ids=(doc.id,), symbol=symbol, probs=probs, model=model, ts_event=ts,
                             ts_ingest=ts, ts_scored=ts)


def book(prices: dict[str, list[tuple[float, float]]]) -> PriceBook:
    """Price book from {symbol: [(t_s, price), ...]}."""
    return PriceBook({sym: PriceSeries(np.array([BASE_NS + int(t * S) for t, _ in rows], dtype=np.int64),
                                       np.array([p for _, p in rows], dtype=np.float64))
                      for sym, rows in prices.items()})


NO_COSTS = dict(fee_bps=0.0, slippage_bps=0.0)


# -- events -------------------------------------------------------------------------------------------

def test_recording_replays_in_time_order_with_a_stable_tie_break_and_keeps_rejects(tmp_path: Path):
    doc = Document.create(kind="news", source="t", title="Bitcoin rallies", url="https://x/1", symbols=["BTCUSDT"],
                          ts_event=BASE_NS + 5, ts_ingest=BASE_NS + 50)
    trade = Trade(category="linear", symbol="BTCUSDT", ts_event=BASE_NS + 5, ts_ingest=BASE_NS + 6, trade_id="1",
                  price=Decimal("100"), size=Decimal("1"), side="Buy")
    early = Trade(category="linear", symbol="BTCUSDT", ts_event=BASE_NS + 1, ts_ingest=BASE_NS + 90,
                  trade_id="0", price=Decimal("99"), size=Decimal("1"), side="Sell")
    with RecordingWriter(tmp_path) as w:
        w.write("news", BASE_NS + 5, doc.key, doc.to_bytes())
        w.write("news", BASE_NS + 6, None, b'{"not": "a document"}')
        w.write("market.bybit.trade", BASE_NS + 5, trade.key, trade.to_bytes())
        w.write("market.bybit.trade", BASE_NS + 1, early.key, early.to_bytes())

    rec = load_recording(tmp_path)

    assert [(e.ts - BASE_NS, e.topic) for e in rec.events] == [(1, "market.bybit.trade"), (5, "market.bybit.trade"),
                                                               (5, "news")]
    assert [(r.topic, r.line) for r in rec.rejected] == [("news", 2)]
    assert "invalid Document" in rec.rejected[0].reason
    assert rec.prices["BTCUSDT"].price.tolist() == [99.0, 100.0]

    from consumers.backtest.config import ReplayConfig

    by_ingest = load_recording(tmp_path, ReplayConfig(time_basis="ingest"))
    assert [e.ts - BASE_NS for e in by_ingest.events] == [6, 50, 90]


# -- strategy -----------------------------------------------------------------------------------------

def test_round_trip_costs_are_exact():
    config = StrategyConfig(fee_bps=10, slippage_bps=5)

    gross, fees, slippage = round_trip(1, 100.0, 110.0, config)

    entry_fill, exit_fill = 100 * 1.0005, 110 * 0.9995
    assert gross == pytest.approx(0.10)
    assert fees == pytest.approx(0.001 * (1 + exit_fill / entry_fill))
    assert gross - slippage == pytest.approx(exit_fill / entry_fill - 1)


def test_long_and_short_trades_enter_after_the_signal_and_exit_at_the_horizon():
    prices = book({"BTCUSDT": [(0, 100), (60, 101), (120, 102), (180, 104), (240, 103)],
                   "ETHUSDT": [(0, 50), (60, 49), (120, 48), (180, 47)]})
    config = StrategyConfig(entry_threshold=0.3, horizon_s=120, **NO_COSTS)

    sim = simulate([sig(1, 0.8, 30), sig(2, -0.8, 0, "ETHUSDT"), sig(3, 0.1, 30)], prices, config)

    btc, eth = sorted(sim.trades, key=lambda t: t.symbol)
    assert (btc.entry_ts - BASE_NS, btc.entry_price, btc.exit_ts - BASE_NS, btc.exit_price) == (60 * S, 101, 180 * S, 104)
    assert btc.net_return == pytest.approx(104 / 101 - 1)
    assert (eth.side, eth.entry_price, eth.exit_price) == (-1, 50, 48)
    assert eth.net_return == pytest.approx(-(48 / 50 - 1))
    assert sim.skipped == {"below_threshold": 1}


def test_latency_delays_the_entry():
    prices = book({"BTCUSDT": [(0, 100), (1, 101), (5, 105), (100, 110)]})

    sim = simulate([sig(1, 0.9, 0)], prices, StrategyConfig(latency_ms=2_000, horizon_s=10, **NO_COSTS))

    assert sim.trades[0].entry_price == 105


def test_overlapping_signals_are_ignored_or_reverse_the_position():
    prices = book({"BTCUSDT": [(t, 100 + t) for t in range(0, 400, 60)]})
    signals = [sig(1, 0.9, 0), sig(2, 0.9, 60), sig(3, -0.9, 120)]

    ignore = simulate(signals, prices, StrategyConfig(horizon_s=300, overlap="ignore", **NO_COSTS))
    reverse = simulate(signals, prices, StrategyConfig(horizon_s=300, overlap="reverse", **NO_COSTS))

    assert [(t.side, t.exit_reason) for t in ignore.trades] == [(1, "horizon")]
    assert ignore.skipped == {"position_open": 2}
    assert [(t.side, t.exit_reason, t.exit_price) for t in reverse.trades] == [
        (1, "reversed", 220.0), (-1, "end_of_data", 460.0)]
    assert reverse.skipped == {"position_open": 1}  # same direction as held: kept, not doubled


def test_signals_without_prices_or_outside_the_traded_symbols_are_skipped():
    prices = book({"BTCUSDT": [(0, 100), (10, 100)]})

    sim = simulate([sig(1, 0.9, 0, "AAPL"), sig(2, 0.9, 0, "BTCUSDT"), sig(3, 0.9, 20, "BTCUSDT")], prices,
                   StrategyConfig(symbols=("ETHUSDT",)))
    only_btc = simulate([sig(3, 0.9, 20, "BTCUSDT")], prices, StrategyConfig())

    assert sim.skipped == {"symbol_not_traded": 3}
    assert only_btc.skipped == {"no_price_after_signal": 1}


# -- outcomes and quality -----------------------------------------------------------------------------

def test_first_touch_decides_the_realized_move():
    prices = book({
        "UP": [(0, 100), (60, 99.7), (120, 100.6), (180, 99.0)],     # +60 bps touched before -100 bps
        "DOWN": [(0, 100), (60, 99.4), (120, 101.0)],                 # -60 bps first
        "FLAT": [(0, 100), (60, 100.2), (120, 99.8), (300, 100.1)],  # never 50 bps within 120 s
        "SHORT": [(0, 100), (60, 100.2)],                              # recording ends inside the horizon
    })
    config = StrategyConfig(horizon_s=120, move_threshold_bps=50)

    got = {o.symbol: o for o in outcomes([sig(1, 0.9, 0, s) for s in ("UP", "DOWN", "FLAT", "SHORT")], prices, config)}

    assert {s: o.realized for s, o in got.items()} == {"UP": 1, "DOWN": -1, "FLAT": 0, "SHORT": None}
    assert got["UP"].forward_return == pytest.approx(0.006)
    assert got["FLAT"].forward_return == pytest.approx(-0.002)
    assert got["SHORT"].forward_return is None


def test_precision_recall_hit_rate_and_confusion():
    prices = book({"A": [(0, 100), (60, 101)], "B": [(0, 100), (60, 99)], "C": [(0, 100), (60, 100.1)],
                   "D": [(0, 100), (60, 102)]})
    config = StrategyConfig(horizon_s=60, move_threshold_bps=50, entry_threshold=0.3)
    signals = [sig(1, 0.9, 0, "A"),   # long, up: TP
               sig(2, 0.9, 0, "B"),   # long, down: FP
               sig(3, -0.9, 0, "C"),  # short, none: FP
               sig(4, 0.1, 0, "D")]   # not acted on, up: FN

    q = signal_quality(outcomes(signals, prices, config))

    assert (q["true_positives"], q["false_positives"], q["false_negatives"]) == (1, 2, 2)
    assert q["precision"] == pytest.approx(1 / 3)
    assert q["recall"] == pytest.approx(1 / 3)
    assert q["hit_rate"] == pytest.approx(1 / 3)  # A right; B and C (return +0.1%, predicted short) wrong
    assert q["confusion"]["long"] == {"up": 1, "down": 1, "none": 0}
    assert q["confusion"]["none"] == {"up": 1, "down": 0, "none": 0}


def test_spearman_handles_ties_and_degenerate_input():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 1, 2, 2], [1, 2, 3, 4]) == pytest.approx(0.894427, abs=1e-6)
    assert spearman([1, 2], [1, 2]) is None
    assert spearman([1, 1, 1], [1, 2, 3]) is None


# -- equity and performance ---------------------------------------------------------------------------

def test_equity_curve_marks_open_positions_and_books_costs():
    prices = book({"BTCUSDT": [(0, 100), (60, 110), (120, 99), (180, 121)]})
    config = StrategyConfig(horizon_s=120, fee_bps=10, slippage_bps=0)
    trades = simulate([sig(1, 0.9, 0)], prices, config).trades

    curve = equity_curve(trades, prices, config)

    fee = 0.001
    assert curve.equity.tolist() == pytest.approx([1 - fee, 1 + 0.10 - fee, 1 + trades[0].pnl, 1 + trades[0].pnl])
    assert trades[0].pnl == pytest.approx(-0.01 - fee * (1 + 0.99))
    assert curve.drawdown.max() == pytest.approx(1 - curve.equity[2] / curve.equity[1])
    perf = performance(trades, curve)
    assert perf["max_drawdown"] == pytest.approx(curve.drawdown.max())
    assert perf["turnover"] == pytest.approx(1 + 0.99)
    assert perf["fees"] == pytest.approx(fee * 1.99)
    assert perf["costs"] == pytest.approx(perf["fees"])
    returns = np.diff(curve.equity) / curve.equity[:-1]
    expected = returns.mean() / returns.std(ddof=1) * math.sqrt(365 * 24 * 60)
    assert perf["sharpe"] == pytest.approx(expected)
    assert perf["periods_per_year"] == pytest.approx(365 * 24 * 60)


def test_flat_equity_has_no_sharpe():
    prices = book({"BTCUSDT": [(0, 100), (60, 100), (120, 100)]})
    config = StrategyConfig()

    perf = performance([], equity_curve([], prices, config))

    assert perf["sharpe"] is None and perf["max_drawdown"] == 0.0 and perf["trades"] == 0


# -- comparison ---------------------------------------------------------------------------------------

def test_agreement_counts_flips_between_two_models():
    other = ModelInfo(name="m2", version="v2", content_hash="b" * 64)
    a = [sig(1, 0.9, 0), sig(2, -0.9, 1), sig(3, 0.9, 2), sig(4, 0.2, 3)]
    b = [sig(1, 0.9, 0, model=other), sig(2, 0.9, 1, model=other), sig(3, 0.0, 2, model=other),
         sig(4, 0.8, 3, model=other), sig(5, 0.9, 4, model=other)]

    agree = signal_agreement(a, b, StrategyConfig(entry_threshold=0.3))

    assert agree["matched_signals"] == 4 and agree["only_candidate"] == 1 and agree["only_baseline"] == 0
    assert agree["flip_counts"] == {"long->flat": 1, "short->long": 1}
    assert agree["long_short_flips"] == 1
    assert agree["direction_agreement"] == pytest.approx(0.5)
    assert agree["action_flip_counts"] == {"long->none": 1, "none->long": 1, "short->long": 1}
    assert agree["action_agreement"] == pytest.approx(0.25)


def test_metric_deltas_are_candidate_minus_baseline():
    a = {"signal_quality": {"precision": 0.5, "recall": None, "confusion": {}}, "performance": {"sharpe": 1.0}}
    b = {"signal_quality": {"precision": 0.75, "recall": 0.2, "confusion": {}}, "performance": {"sharpe": -0.5}}

    deltas = metric_deltas(a, b)

    assert deltas["signal_quality"]["precision"] == {"baseline": 0.5, "candidate": 0.75, "delta": 0.25}
    assert deltas["signal_quality"]["recall"]["delta"] is None
    assert "confusion" not in deltas["signal_quality"]
    assert deltas["performance"]["sharpe"]["delta"] == -1.5
    json.dumps(deltas)  # serializable as is
