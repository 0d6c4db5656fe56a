"""Gate decisions on given figures, and the Sharpe bootstrap."""

from __future__ import annotations

import numpy as np

from consumers.lifecycle.evaluate import ModelFigures
from consumers.lifecycle.gate import judge
from consumers.lifecycle.settings import GateSettings
from consumers.lifecycle.trading import bootstrap_sharpe

PROBS = np.full((10, 3), 1 / 3)


def figures(accuracy=0.80, macro_f1=0.78, ece=0.05, p99=20.0) -> ModelFigures:
    return ModelFigures(PROBS, accuracy, macro_f1, ece, p99 / 2, p99)


SAME = {"documents": 200, "direction_agreement": 0.97, "long_short_flips": 1, "flip_rate": 0.005, "changed": 6}


def failed(checks) -> list[str]:
    return [c.name for c in checks if not c.passed]


def test_a_candidate_like_live_passes_every_gate():
    assert failed(judge(figures(0.795), figures(), SAME, None, GateSettings())) == []


def test_each_gate_names_itself_when_it_fails():
    gate = GateSettings()
    assert failed(judge(figures(accuracy=0.78), figures(), SAME, None, gate)) == ["accuracy"]
    assert failed(judge(figures(macro_f1=0.70), figures(), SAME, None, gate)) == ["macro-F1"]
    assert failed(judge(figures(ece=0.10), figures(), SAME, None, gate)) == ["calibration error"]
    assert failed(judge(figures(p99=400), figures(), SAME, None, gate)) == ["p99 latency"]
    assert failed(judge(figures(), figures(), {**SAME, "direction_agreement": 0.85}, None, gate)) == [
        "direction agreement"]
    assert failed(judge(figures(), figures(), {**SAME, "flip_rate": 0.05, "long_short_flips": 10}, None, gate)) == [
        "signal flips"]
    line = next(c.line() for c in judge(figures(accuracy=0.70), figures(), SAME, None, gate) if not c.passed)
    assert line.startswith("FAIL accuracy: candidate 0.700 vs live 0.800")


def test_gates_are_settings():
    lenient = GateSettings(max_accuracy_drop=0.2, p99_budget_ms=1000)
    assert failed(judge(figures(accuracy=0.7, p99=400), figures(), SAME, None, lenient)) == []


def test_first_promotion_has_only_absolute_gates():
    assert [c.name for c in judge(figures(), None, {"documents": 10}, None, GateSettings())] == ["p99 latency"]


def trading(live_sharpe, cand_sharpe, diff, dd=(0.05, 0.06), turnover=(10.0, 12.0), agree=0.95) -> dict:
    return {"live": {"sharpe": live_sharpe, "max_drawdown": dd[0], "turnover": turnover[0]},
            "candidate": {"sharpe": cand_sharpe, "max_drawdown": dd[1], "turnover": turnover[1]},
            "bootstrap": {"samples": 1000, "diff_low": diff[0], "diff_high": diff[1]},
            "agreement": {"direction_agreement": agree, "matched_signals": 100}}


def test_trading_gates():
    gate = GateSettings()
    ok = judge(figures(), figures(), SAME, trading(1.5, 1.2, (-0.9, 0.4)), gate)
    assert failed(ok) == []  # lower, but within the interval
    worse = judge(figures(), figures(), SAME, trading(1.5, -0.5, (-3.0, -0.8), dd=(0.05, 0.20),
                                                      turnover=(10.0, 30.0), agree=0.6), gate)
    assert failed(worse) == ["sharpe", "drawdown", "turnover", "backtest agreement"]


def test_bootstrap_interval_of_identical_curves_is_zero_and_a_worse_curve_is_excluded():
    rng = np.random.default_rng(0)
    live = rng.normal(2e-4, 1e-3, 1440)
    same = bootstrap_sharpe(live, live.copy(), 525600, samples=300, block=30, confidence=0.95, seed=0)
    assert same["diff_low"] == same["diff_high"] == 0.0
    worse = live - 5e-4
    boot = bootstrap_sharpe(live, worse, 525600, samples=300, block=30, confidence=0.95, seed=0)
    assert boot["diff_high"] < 0 and boot["live_low"] < boot["live_high"]
    again = bootstrap_sharpe(live, worse, 525600, samples=300, block=30, confidence=0.95, seed=0)
    assert again == boot  # seeded: the audit log's figures can be reproduced
