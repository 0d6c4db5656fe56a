"""Signal quality against forward returns, and trading performance of a simulation.

Signal quality, per signal on a priced symbol: the reference price is the first recorded price at or
after the signal is available (`ts_scored` + latency). Within the horizon after it, the first recorded
price that has moved by at least `move_threshold_bps` up or down decides the realized move (first touch);
none means no move, and a horizon that runs past the recording leaves the signal unevaluated. A signal
the strategy acts on is a true positive when the realized move is in its direction:

    precision = TP / signals acted on          recall = TP / realized moves
    hit rate  = signals acted on whose return at the horizon has their sign / signals acted on
    IC        = Spearman correlation of score and return at the horizon, over all evaluated signals

Performance: equity in units of initial capital, marked to market on every recorded price time;
Sharpe is annualized from per-period returns (24/7 markets: 365 days), drawdown is peak to trough.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np

from consumers.backtest.config import StrategyConfig
from consumers.backtest.events import PriceBook
from consumers.backtest.strategy import Trade, side_of
from signals.contracts import Signal

YEAR_S = 365 * 24 * 3600
DAY_NS = 24 * 3600 * 1_000_000_000
MOVES = {1: "up", -1: "down", 0: "none"}
ACTIONS = {1: "long", -1: "short", 0: "none"}


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened after one signal."""

    signal_id: str
    symbol: str
    score: float
    predicted: int  # +1 long, -1 short, 0 not acted on
    realized: int | None  # +1 up, -1 down, 0 no move; None: horizon not covered by the recording
    forward_return: float | None  # at the horizon


def outcomes(signals: list[Signal], prices: PriceBook, config: StrategyConfig) -> list[Outcome]:
    """Realized move and forward return after each signal on a priced symbol."""
    horizon = config.horizon_s * 1_000_000_000
    theta = config.move_threshold_bps / 1e4
    out = []
    for sig in signals:
        if sig.symbol not in prices or (config.symbols is not None and sig.symbol not in config.symbols):
            continue
        series = prices[sig.symbol]
        i0 = series.first_at_or_after(sig.ts_scored + config.latency_ms * 1_000_000)
        if i0 is None:
            continue
        t0, p0 = int(series.ts[i0]), float(series.price[i0])
        i_end = series.first_at_or_after(t0 + horizon)
        last = i_end if i_end is not None else len(series.ts) - 1
        moved = series.price[i0 + 1 : last + 1] / p0 - 1
        up = np.flatnonzero(moved >= theta)
        down = np.flatnonzero(moved <= -theta)
        first_up = up[0] if up.size else None
        first_down = down[0] if down.size else None
        if first_up is not None and (first_down is None or first_up < first_down):
            realized: int | None = 1
        elif first_down is not None:
            realized = -1
        else:
            realized = 0 if i_end is not None else None
        fwd = float(series.price[i_end]) / p0 - 1 if i_end is not None else None
        out.append(Outcome(sig.id, sig.symbol, sig.score, side_of(sig, config), realized, fwd))
    return out


def signal_quality(results: list[Outcome]) -> dict[str, Any]:
    """Precision, recall, hit rate, IC and the confusion matrix; see the module docstring."""
    evaluated = [o for o in results if o.realized is not None]
    acted = [o for o in evaluated if o.predicted != 0]
    moves = [o for o in evaluated if o.realized != 0]
    tp = sum(o.realized == o.predicted for o in acted)
    with_return = [o for o in acted if o.forward_return is not None]
    hits = sum(int(np.sign(o.forward_return)) == o.predicted for o in with_return)
    confusion = {ACTIONS[p]: {MOVES[r]: 0 for r in (1, -1, 0)} for p in (1, -1, 0)}
    for o in evaluated:
        confusion[ACTIONS[o.predicted]][MOVES[o.realized]] += 1
    scored = [o for o in evaluated if o.forward_return is not None]
    return {
        "signals_priced": len(results),
        "signals_evaluated": len(evaluated),
        "signals_unevaluated": len(results) - len(evaluated),
        "signals_acted_on": len(acted),
        "realized_moves": len(moves),
        "true_positives": tp,
        "false_positives": len(acted) - tp,
        "false_negatives": len(moves) - tp,
        "precision": _ratio(tp, len(acted)),
        "recall": _ratio(tp, len(moves)),
        "hit_rate": _ratio(hits, len(with_return)),
        "information_coefficient": spearman([o.score for o in scored], [o.forward_return for o in scored]),
        "confusion": confusion,
    }


def _ratio(num: float, den: float) -> float | None:
    return num / den if den else None


def _ranks(values: np.ndarray) -> np.ndarray:
    """Ranks with ties averaged."""
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values), dtype=np.float64)
    sorted_vals = values[order]
    i = 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and sorted_vals[j + 1] == sorted_vals[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2
        i = j + 1
    return ranks


def spearman(x: list[float], y: list[float | None]) -> float | None:
    """Spearman rank correlation; None with fewer than 3 points or a constant side."""
    if len(x) < 3:
        return None
    rx, ry = _ranks(np.asarray(x, dtype=np.float64)), _ranks(np.asarray(y, dtype=np.float64))
    if rx.std() == 0 or ry.std() == 0:
        return None
    return float(np.corrcoef(rx, ry)[0, 1])


@dataclass(frozen=True)
class EquityCurve:
    """Equity (units of initial capital) and drawdown on the recorded price times."""

    ts: np.ndarray
    equity: np.ndarray
    drawdown: np.ndarray  # fraction below the running peak, >= 0


def equity_curve(trades: list[Trade], prices: PriceBook, config: StrategyConfig) -> EquityCurve:
    """Mark open positions to the last recorded price; realized P&L from each exit on."""
    symbols = [s for s in prices.series if config.symbols is None or s in config.symbols]
    if not symbols:
        empty = np.zeros(0)
        return EquityCurve(np.zeros(0, dtype=np.int64), empty, empty)
    grid = np.unique(np.concatenate([prices[s].ts for s in symbols]))
    marks = {}
    for s in symbols:
        idx = np.searchsorted(prices[s].ts, grid, side="right") - 1
        marks[s] = np.where(idx >= 0, prices[s].price[np.maximum(idx, 0)], np.nan)
    equity = np.ones(len(grid), dtype=np.float64)
    fee = config.fee_bps / 1e4
    for t in trades:
        i_in = int(np.searchsorted(grid, t.entry_ts, side="left"))
        i_out = int(np.searchsorted(grid, t.exit_ts, side="left"))
        held = marks[t.symbol][i_in:i_out]
        equity[i_in:i_out] += t.size * (t.side * (held / t.entry_fill - 1) - fee)
        equity[i_out:] += t.pnl
    peak = np.maximum.accumulate(equity)
    return EquityCurve(grid, equity, 1 - equity / peak)


def performance(trades: list[Trade], curve: EquityCurve) -> dict[str, Any]:
    """Return, Sharpe, drawdown, turnover, costs and trade statistics."""
    span_ns = int(curve.ts[-1] - curve.ts[0]) if len(curve.ts) > 1 else 0
    sharpe = None
    periods_per_year = None
    if len(curve.ts) > 2:
        period_s = float(np.median(np.diff(curve.ts))) / 1e9
        periods_per_year = YEAR_S / period_s if period_s > 0 else None
        returns = np.diff(curve.equity) / curve.equity[:-1]
        std = returns.std(ddof=1)
        if periods_per_year and std > 0:
            sharpe = float(returns.mean() / std * np.sqrt(periods_per_year))
    turnover = sum(t.turnover for t in trades)
    fees = sum(t.size * t.fees for t in trades)
    slippage = sum(t.size * t.slippage for t in trades)
    gross = sum(t.size * t.gross_return for t in trades)
    net = [t.net_return for t in trades]
    held_ns = sum(t.exit_ts - t.entry_ts for t in trades)
    days = span_ns / DAY_NS
    return {
        "trades": len(trades),
        "long_trades": sum(t.side > 0 for t in trades),
        "short_trades": sum(t.side < 0 for t in trades),
        "total_return": float(curve.equity[-1] - 1) if len(curve.equity) else 0.0,
        "gross_pnl": gross,
        "net_pnl": gross - fees - slippage,
        "sharpe": sharpe,
        "periods_per_year": periods_per_year,
        "max_drawdown": float(curve.drawdown.max()) if len(curve.drawdown) else 0.0,
        "win_rate": _ratio(sum(r > 0 for r in net), len(net)),
        "mean_trade_return_bps": float(np.mean(net) * 1e4) if net else None,
        "turnover": turnover,
        "turnover_per_day": turnover / days if days > 0 else None,
        "fees": fees,
        "slippage": slippage,
        "costs": fees + slippage,
        "costs_share_of_gross": _ratio(fees + slippage, abs(gross)),
        "time_in_market_share": _ratio(held_ns, span_ns * max(1, len({t.symbol for t in trades}))),
        "exit_reasons": dict(sorted(Counter(t.exit_reason for t in trades).items())),
        "days": days,
    }


def per_symbol(trades: list[Trade], results: list[Outcome]) -> dict[str, dict[str, Any]]:
    """Trades, P&L, win rate and precision for each symbol."""
    by_symbol: dict[str, dict[str, Any]] = defaultdict(lambda: {"trades": 0, "net_pnl": 0.0, "wins": 0})
    for t in trades:
        row = by_symbol[t.symbol]
        row["trades"] += 1
        row["net_pnl"] += t.pnl
        row["wins"] += t.net_return > 0
    for sym, group in _group(results).items():
        quality = signal_quality(group)
        row = by_symbol[sym]
        row["signals"] = len(group)
        row["precision"] = quality["precision"]
        row["recall"] = quality["recall"]
    out = {}
    for sym in sorted(by_symbol):
        row = by_symbol[sym]
        out[sym] = {"signals": row.get("signals", 0), "trades": row["trades"], "net_pnl": row["net_pnl"],
                    "win_rate": _ratio(row["wins"], row["trades"]), "precision": row.get("precision"),
                    "recall": row.get("recall")}
    return out


def _group(results: list[Outcome]) -> dict[str, list[Outcome]]:
    groups: dict[str, list[Outcome]] = defaultdict(list)
    for o in results:
        groups[o.symbol].append(o)
    return groups
