"""Two models on the same recording, side by side: how their signals agree, and what changes in trading terms.

Signals are matched by (documents, symbol): the same document scored by each model. A *flip* is a
matched pair whose direction differs; an *action flip* is one where the strategy would act differently
(long, short or stand aside). Metric deltas are candidate minus baseline.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from consumers.backtest.config import BacktestConfig, StrategyConfig
from consumers.backtest.engine import BacktestResult, run_backtest
from consumers.backtest.events import Recording, load_recording
from consumers.backtest.strategy import side_of
from signals.contracts import Signal

if TYPE_CHECKING:
    from signals.model import SentimentModel

SECTIONS = ("signal_quality", "performance")
ACTION = {1: "long", -1: "short", 0: "none"}


def _key(sig: Signal) -> tuple[tuple[str, ...], str]:
    return (sig.document_ids, sig.symbol)


def signal_agreement(a: list[Signal], b: list[Signal], strategy: StrategyConfig) -> dict[str, Any]:
    """Direction and action agreement, flips, and score differences over matched signals."""
    by_key = {_key(s): s for s in b}
    pairs = [(s, by_key[_key(s)]) for s in a if _key(s) in by_key]
    flips = Counter(f"{x.direction.value}->{y.direction.value}" for x, y in pairs if x.direction is not y.direction)
    actions = [(side_of(x, strategy), side_of(y, strategy)) for x, y in pairs]
    action_flips = Counter(f"{ACTION[x]}->{ACTION[y]}" for x, y in actions if x != y)
    sa = np.array([x.score for x, _ in pairs], dtype=np.float64)
    sb = np.array([y.score for _, y in pairs], dtype=np.float64)
    n = len(pairs)
    return {
        "matched_signals": n,
        "only_baseline": len(a) - n,
        "only_candidate": len(b) - n,
        "direction_agreement": sum(x.direction is y.direction for x, y in pairs) / n if n else None,
        "action_agreement": sum(x == y for x, y in actions) / n if n else None,
        "flips": sum(flips.values()),
        "long_short_flips": flips["long->short"] + flips["short->long"],
        "flip_counts": dict(sorted(flips.items())),
        "action_flip_counts": dict(sorted(action_flips.items())),
        "score_mean_abs_diff": float(np.abs(sa - sb).mean()) if n else None,
        "score_correlation": float(np.corrcoef(sa, sb)[0, 1]) if n > 1 and sa.std() > 0 and sb.std() > 0 else None,
    }


def metric_deltas(a: dict[str, Any], b: dict[str, Any]) -> dict[str, dict[str, dict[str, float | None]]]:
    """Every numeric metric of both reports, with candidate minus baseline."""
    out: dict[str, dict[str, dict[str, float | None]]] = {}
    for section in SECTIONS:
        rows = {}
        for name, va in a[section].items():
            vb = b[section].get(name)
            if isinstance(va, bool) or not isinstance(va, (int, float, type(None))):
                continue
            if not isinstance(vb, (int, float, type(None))):
                continue
            delta = vb - va if va is not None and vb is not None else None
            rows[name] = {"baseline": va, "candidate": vb, "delta": delta}
        out[section] = rows
    return out


def compare_results(baseline: BacktestResult, candidate: BacktestResult) -> dict[str, Any]:
    """The comparison report of two backtests of one recording with one strategy."""
    if baseline.recording.digest != candidate.recording.digest:
        raise ValueError("compare backtests of the same recording")
    return {
        "recording_sha256": baseline.recording.digest,
        "baseline": baseline.model.model_dump(mode="json"),
        "candidate": candidate.model.model_dump(mode="json"),
        "agreement": signal_agreement(baseline.signals, candidate.signals, baseline.config.strategy),
        "deltas": metric_deltas(baseline.metrics, candidate.metrics),
    }


def run_comparison(
    recording: str | Path | Recording,
    baseline: str | Path | SentimentModel,
    candidate: str | Path | SentimentModel,
    out_dir: str | Path | None = None,
    config: BacktestConfig | None = None,
    **options: Any,
) -> tuple[BacktestResult, BacktestResult, dict[str, Any]]:
    """Backtest both models on one recording; write both reports and the comparison when `out_dir` is given."""
    config = config or BacktestConfig()
    if not isinstance(recording, Recording):
        recording = load_recording(recording, config.replay)
    out = Path(out_dir) if out_dir is not None else None
    a = run_backtest(recording, baseline, out, config, **options)
    b = run_backtest(recording, candidate, out / "compare" if out else None, config, **options)
    comparison = compare_results(a, b)
    if out is not None:
        from consumers.backtest.report import write_comparison

        write_comparison(a, b, comparison, out)
    return a, b, comparison
