"""`finsignal backtest`: run a backtest or a comparison and summarize it for the terminal."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from consumers.backtest.config import BacktestConfig


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}%"


def _num(value: float | None, spec: str = ".3f") -> str:
    return "n/a" if value is None else format(value, spec)


def summary_line(metrics: dict[str, Any]) -> str:
    """One line of the headline numbers of a report."""
    q, p = metrics["signal_quality"], metrics["performance"]
    return (f"{metrics['model']['name']} {metrics['model']['version']}: {metrics['replay']['signals']} signals, "
            f"precision {_pct(q['precision'])}, recall {_pct(q['recall'])}, hit rate {_pct(q['hit_rate'])}; "
            f"{p['trades']} trades, return {_pct(p['total_return'])}, Sharpe {_num(p['sharpe'], '.2f')}, "
            f"max drawdown {_pct(p['max_drawdown'])}, turnover {_num(p['turnover'], '.1f')}x, "
            f"costs {_num(p['costs'], '.4f')}")


def run(recording: Path, model: Path, out: Path, config: BacktestConfig, *, compare: Path | None = None,
        threads: int | None = None, progress: bool = True) -> list[str]:
    """Backtest `model` (and `compare`, if given) on `recording`, write the report to `out`; return summary lines."""
    from consumers.backtest.compare import run_comparison
    from consumers.backtest.engine import run_backtest
    from consumers.backtest.events import load_recording

    rec = load_recording(recording, config.replay)
    if compare is None:
        result = run_backtest(rec, model, out, config, threads=threads, progress=progress)
        return [summary_line(result.metrics), f"report: {out / 'report.md'}"]
    a, b, comparison = run_comparison(rec, model, compare, out, config, threads=threads, progress=progress)
    agree = comparison["agreement"]
    return [
        "baseline  " + summary_line(a.metrics),
        "candidate " + summary_line(b.metrics),
        f"agreement: direction {_pct(agree['direction_agreement'])}, action {_pct(agree['action_agreement'])}, "
        f"{agree['flips']} flips ({agree['long_short_flips']} long<->short) over {agree['matched_signals']} signals",
        f"report: {out / 'comparison.md'}",
    ]
