"""Drift figures: PSI and KS on known distributions; warm-up then sliding window."""

from __future__ import annotations

import numpy as np
import pytest

from signals.drift import DriftMonitor, Observation, Reference, psi, shares


def obs(direction: str, score: float, source: str = "s") -> Observation:
    return Observation(direction, score, max(abs(score), 0.34), source)


def neutral(n: int, rng: np.random.Generator) -> list[Observation]:
    return [obs("flat", float(s)) for s in rng.normal(0, 0.1, n).clip(-0.3, 0.3)]


def bearish(n: int, rng: np.random.Generator) -> list[Observation]:
    return [obs("short", float(s)) for s in rng.normal(-0.8, 0.1, n).clip(-1, -0.4)]


def test_psi_is_zero_for_equal_distributions_and_large_for_a_shift():
    a = np.array([0.2, 0.6, 0.2])
    assert psi(a, a) == pytest.approx(0.0)
    assert psi(a, np.array([0.6, 0.3, 0.1])) > 0.25
    assert psi(a, np.array([0.22, 0.58, 0.2])) < 0.01


def test_monitor_warms_up_then_compares_a_sliding_window():
    rng = np.random.default_rng(0)
    mon = DriftMonitor(window=200, warmup=300, min_signals=100, psi_alert=0.25, ks_alpha=0.01)
    mon.reset("v1", None)
    mon.observe(neutral(300, rng))
    assert mon.warming is None and mon.reference is not None and mon.reference.origin == "warmup"
    assert mon.figures() is None  # window still empty
    mon.observe(neutral(200, rng))
    same = mon.figures()
    assert same is not None and same.alerting == []
    assert max(same.psi["all"].values()) < 0.25 and same.ks_pvalue > 0.01
    mon.observe(bearish(200, rng))  # the window now holds only bearish outputs
    drifted = mon.figures()
    assert drifted.psi["all"]["direction"] > 0.25 and drifted.ks_pvalue < 1e-6
    assert any(a.startswith("psi direction/all") for a in drifted.alerting)


def test_per_source_rows_need_enough_signals_from_that_source():
    rng = np.random.default_rng(1)
    mon = DriftMonitor(window=200, warmup=200, min_signals=50, psi_alert=0.25, ks_alpha=0.01, min_source_signals=50)
    mon.reset("v1", None)
    mon.observe(neutral(200, rng))
    mon.observe([Observation(o.direction, o.score, o.confidence, "wire") for o in bearish(60, rng)]
                + neutral(140, rng))
    figures = mon.figures()
    assert set(figures.psi) == {"all", "s"}  # "wire" has no reference signals
    assert figures.psi["s"]["direction"] < 0.25


def test_reference_round_trips_and_a_promotion_reference_skips_warm_up(tmp_path):
    rng = np.random.default_rng(2)
    ref = Reference("promotion", "v2", neutral(150, rng))
    ref.save(tmp_path / "reference.json")
    loaded = Reference.load(tmp_path / "reference.json")
    assert loaded.origin == "promotion" and len(loaded.observations) == 150
    assert shares(loaded.observations, "direction").tolist() == [0.0, 1.0, 0.0]
    mon = DriftMonitor(window=100, warmup=1000, min_signals=100, psi_alert=0.25, ks_alpha=0.01)
    mon.reset("v2", loaded)
    mon.observe(bearish(100, rng))
    assert mon.warming is None and mon.figures().psi["all"]["direction"] > 0.25
