"""A threshold strategy on signals, executed on recorded prices with fees and slippage.

Decisions use only the signal: a signal available at `ts_scored` (plus `latency_ms`) whose direction
is long or short and whose |score| passes the threshold opens a position at the first recorded price
at or after that time, and the position is closed at the first price at or after entry + horizon.
Fills pay `slippage_bps` against the trade and `fee_bps` on notional, at entry and at exit.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Literal

from consumers.backtest.config import StrategyConfig
from consumers.backtest.events import PriceBook, PriceSeries
from signals.contracts import Direction, Signal

ExitReason = Literal["horizon", "reversed", "end_of_data"]


@dataclass(frozen=True, slots=True)
class Trade:
    """One round trip. Returns are fractions of the entry notional; `pnl` is in units of capital."""

    symbol: str
    side: int  # +1 long, -1 short
    signal_id: str
    score: float
    signal_ts: int
    entry_ts: int
    entry_price: float  # as recorded
    entry_fill: float  # after slippage
    exit_ts: int
    exit_price: float
    exit_fill: float
    exit_reason: ExitReason
    size: float
    gross_return: float  # on recorded prices
    fees: float
    slippage: float

    @property
    def net_return(self) -> float:
        return self.gross_return - self.fees - self.slippage

    @property
    def pnl(self) -> float:
        return self.size * self.net_return

    @property
    def turnover(self) -> float:
        """Notional traded at entry and exit, in units of capital."""
        return self.size * (1 + self.exit_fill / self.entry_fill)


def fills(side: int, entry_price: float, exit_price: float, config: StrategyConfig) -> tuple[float, float]:
    """Entry and exit fill prices: each concedes `slippage_bps` against the trade."""
    slip = config.slippage_bps / 1e4
    return entry_price * (1 + side * slip), exit_price * (1 - side * slip)


def round_trip(side: int, entry_price: float, exit_price: float, config: StrategyConfig) -> tuple[float, float, float]:
    """(gross return, fees, slippage) of a round trip, as fractions of entry notional."""
    entry_fill, exit_fill = fills(side, entry_price, exit_price, config)
    gross = side * (exit_price / entry_price - 1)
    after_slippage = side * (exit_fill / entry_fill - 1)
    fees = config.fee_bps / 1e4 * (1 + exit_fill / entry_fill)
    return gross, fees, gross - after_slippage


def side_of(signal: Signal, config: StrategyConfig) -> int:
    """+1 / -1 when the strategy acts on this signal, else 0."""
    if signal.direction is Direction.FLAT or abs(signal.score) < config.entry_threshold:
        return 0
    if signal.confidence < config.min_confidence:
        return 0
    return 1 if signal.direction is Direction.LONG else -1


@dataclass
class Simulation:
    """Trades in entry order, and why the other signals were not traded."""

    trades: list[Trade] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)


@dataclass
class _Open:
    side: int
    signal: Signal
    entry_ts: int
    entry_price: float
    exit_idx: int | None  # None: no price at entry + horizon; exits at the end of data


def simulate(signals: list[Signal], prices: PriceBook, config: StrategyConfig) -> Simulation:
    """Run the strategy over signals in availability order (as replayed)."""
    sim = Simulation()
    held: dict[str, _Open] = {}
    horizon = config.horizon_s * 1_000_000_000
    for sig in signals:
        if config.symbols is not None and sig.symbol not in config.symbols:
            sim.skipped["symbol_not_traded"] += 1
            continue
        if sig.symbol not in prices:
            sim.skipped["no_prices_for_symbol"] += 1
            continue
        side = side_of(sig, config)
        if side == 0:
            sim.skipped["below_threshold"] += 1
            continue
        series = prices[sig.symbol]
        entry_idx = series.first_at_or_after(sig.ts_scored + config.latency_ms * 1_000_000)
        if entry_idx is None:
            sim.skipped["no_price_after_signal"] += 1
            continue
        entry_ts = int(series.ts[entry_idx])
        current = held.get(sig.symbol)
        if current is not None and _exit_ts(current, series) > entry_ts:
            if config.overlap == "ignore" or current.side == side:
                sim.skipped["position_open"] += 1
                continue
            sim.trades.append(_close(sig.symbol, current, entry_ts, float(series.price[entry_idx]), "reversed",
                                     config))
        elif current is not None:
            sim.trades.append(_close_at_exit(sig.symbol, current, series, config))
        exit_idx = series.first_at_or_after(entry_ts + horizon)
        held[sig.symbol] = _Open(side, sig, entry_ts, float(series.price[entry_idx]), exit_idx)
    for symbol, pos in held.items():
        sim.trades.append(_close_at_exit(symbol, pos, prices[symbol], config))
    sim.trades.sort(key=lambda t: (t.entry_ts, t.symbol))
    return sim


def _exit_ts(pos: _Open, series: PriceSeries) -> int:
    return int(series.ts[pos.exit_idx]) if pos.exit_idx is not None else int(series.ts[-1]) + 1


def _close_at_exit(symbol: str, pos: _Open, series: PriceSeries, config: StrategyConfig) -> Trade:
    if pos.exit_idx is None:
        return _close(symbol, pos, int(series.ts[-1]), float(series.price[-1]), "end_of_data", config)
    return _close(symbol, pos, int(series.ts[pos.exit_idx]), float(series.price[pos.exit_idx]), "horizon", config)


def _close(symbol: str, pos: _Open, exit_ts: int, exit_price: float, reason: ExitReason,
           config: StrategyConfig) -> Trade:
    gross, fees, slippage = round_trip(pos.side, pos.entry_price, exit_price, config)
    entry_fill, exit_fill = fills(pos.side, pos.entry_price, exit_price, config)
    return Trade(
        symbol=symbol, side=pos.side, signal_id=pos.signal.id, score=pos.signal.score, signal_ts=pos.signal.ts_scored,
        entry_ts=pos.entry_ts, entry_price=pos.entry_price, entry_fill=entry_fill, exit_ts=exit_ts,
        exit_price=exit_price, exit_fill=exit_fill, exit_reason=reason, size=config.position_size,
        gross_return=gross, fees=fees, slippage=slippage,
    )
