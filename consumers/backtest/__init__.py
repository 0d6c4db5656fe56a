"""Deterministic backtests: recorded documents through the worker's scorer in simulated time, traded on
recorded prices, judged on signal quality and trading metrics. See README.md in this package."""

from consumers.backtest.compare import compare_results, run_comparison
from consumers.backtest.config import BacktestConfig, ReplayConfig, StrategyConfig
from consumers.backtest.engine import BacktestResult, run_backtest
from consumers.backtest.events import Recording, load_recording

__all__ = [
    "BacktestConfig",
    "BacktestResult",
    "Recording",
    "ReplayConfig",
    "StrategyConfig",
    "compare_results",
    "load_recording",
    "run_backtest",
    "run_comparison",
]
