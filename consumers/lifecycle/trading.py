"""Both models through the backtest on one recording, and a paired block bootstrap of their Sharpe ratios."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from consumers.backtest import BacktestConfig, BacktestResult, run_comparison
from signals.scorer import ScoringBackend
from signals.settings import WorkerSettings


def sharpe(returns: np.ndarray, periods_per_year: float) -> float:
    """Annualized Sharpe of per-period returns; 0 for a flat curve (no trades)."""
    std = returns.std(ddof=1) if len(returns) > 1 else 0.0
    return float(returns.mean() / std * np.sqrt(periods_per_year)) if std > 0 else 0.0


def period_returns(result: BacktestResult) -> np.ndarray:
    eq = result.curve.equity
    return np.diff(eq) / eq[:-1] if len(eq) > 1 else np.zeros(0)


def bootstrap_sharpe(live: np.ndarray, candidate: np.ndarray, periods_per_year: float, *, samples: int, block: int,
                     confidence: float, seed: int) -> dict[str, Any]:
    """Moving-block bootstrap of both Sharpes on the same resampled periods (the curves share a time grid).

    Resampling blocks of consecutive periods keeps the autocorrelation that held positions create;
    pairing the periods makes the interval of the difference much tighter than two separate intervals.
    """
    n = min(len(live), len(candidate))
    if n < 3:
        return {"samples": 0, "diff_low": None, "diff_high": None, "live_low": None, "live_high": None,
                "candidate_low": None, "candidate_high": None}
    rng = np.random.default_rng(seed)
    block = max(1, min(block, n))
    starts = rng.integers(0, n - block + 1, size=(samples, -(-n // block)))
    index = (starts[:, :, None] + np.arange(block)[None, None, :]).reshape(samples, -1)[:, :n]
    a = np.array([sharpe(live[i], periods_per_year) for i in index])
    b = np.array([sharpe(candidate[i], periods_per_year) for i in index])
    lo, hi = (1 - confidence) / 2 * 100, (1 + confidence) / 2 * 100
    return {"samples": samples, "block": block, "seed": seed, "confidence": confidence,
            "diff_low": float(np.percentile(b - a, lo)), "diff_high": float(np.percentile(b - a, hi)),
            "live_low": float(np.percentile(a, lo)), "live_high": float(np.percentile(a, hi)),
            "candidate_low": float(np.percentile(b, lo)), "candidate_high": float(np.percentile(b, hi))}


def backtest_both(recording: Path, live: ScoringBackend, candidate: ScoringBackend, settings: WorkerSettings,
                  gate: Any, out_dir: Path | None = None) -> dict[str, Any]:
    """Backtest figures of each model, their signal agreement, and the Sharpe bootstrap."""
    a, b, comparison = run_comparison(recording, live, candidate, out_dir, BacktestConfig(), worker_settings=settings)
    ppy = a.metrics["performance"]["periods_per_year"] or 0.0

    def row(r: BacktestResult) -> dict[str, Any]:
        perf, quality = r.metrics["performance"], r.metrics["signal_quality"]
        return {"sharpe": sharpe(period_returns(r), ppy) if ppy else None, "max_drawdown": perf["max_drawdown"],
                "hit_rate": quality["hit_rate"], "turnover": perf["turnover"], "trades": perf["trades"],
                "total_return": perf["total_return"], "signals": len(r.signals)}

    boot = bootstrap_sharpe(period_returns(a), period_returns(b), ppy, samples=gate.bootstrap_samples,
                            block=gate.bootstrap_block, confidence=gate.confidence, seed=gate.bootstrap_seed) \
        if ppy else {"samples": 0}
    return {"recording": str(recording), "recording_sha256": a.recording.digest, "live": row(a),
            "candidate": row(b), "agreement": comparison["agreement"], "bootstrap": boot}
