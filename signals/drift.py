"""Drift of the live model's outputs: a sliding window of signals against a reference distribution.

The reference is the model's outputs on the promotion eval set (`reference.json` beside a registry
version, written by the gate) or, by default, the first `drift_warmup` signals the worker publishes
after a model starts serving: an eval set's class balance is rarely the stream's. Compared features:

- direction shares (long/flat/short) and the score (P(bullish) - P(bearish)) and confidence
  histograms, overall and per document source: population stability index
  PSI = sum((w - r) * ln(w / r)) over bins, shares floored at 1e-4 (0.1 watch, 0.25 act);
- the score distribution as a whole: two-sample Kolmogorov-Smirnov statistic and p-value.

The worker exports the figures as `finsignal_worker_drift_*` gauges and writes a JSON snapshot to the
Redis hash `finsignal:drift` (one field per worker) that `finsignal model drift` prints.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from signals.contracts import Signal

DRIFT_KEY = "finsignal:drift"
DIRECTIONS = ("short", "flat", "long")
SCORE_EDGES = np.linspace(-1.0, 1.0, 11)
CONFIDENCE_EDGES = np.linspace(1 / 3, 1.0, 11)
FLOOR = 1e-4
FEATURES = ("direction", "score", "confidence")


@dataclass(frozen=True, slots=True)
class Observation:
    """What drift looks at in one signal."""

    direction: str
    score: float
    confidence: float
    source: str

    @classmethod
    def of(cls, sig: Signal, source: str) -> Observation:
        return cls(sig.direction.value, sig.score, sig.confidence, source)


@dataclass
class Reference:
    """The outputs drift is measured against, and where they came from (`promotion` or `warmup`)."""

    origin: str
    model_version: str
    observations: list[Observation] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"format": 1, "origin": self.origin, "model_version": self.model_version,
                "observations": [[o.direction, round(o.score, 6), round(o.confidence, 6), o.source]
                                 for o in self.observations]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Reference:
        obs = [Observation(d, float(s), float(c), str(src)) for d, s, c, src in data["observations"]]
        return cls(str(data["origin"]), str(data["model_version"]), obs)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json()) + "\n")

    @classmethod
    def load(cls, path: Path) -> Reference | None:
        """The reference saved at `path`, or None when there is none."""
        return cls.from_json(json.loads(path.read_text())) if path.is_file() else None


def shares(observations: Iterable[Observation], feature: str) -> np.ndarray:
    """Share of observations in each bin of a feature."""
    obs = list(observations)
    if feature == "direction":
        counts = np.array([sum(o.direction == d for o in obs) for d in DIRECTIONS], dtype=np.float64)
    else:
        edges = SCORE_EDGES if feature == "score" else CONFIDENCE_EDGES
        values = np.clip([getattr(o, feature) for o in obs], edges[0], edges[-1])
        counts = np.histogram(values, bins=edges)[0].astype(np.float64)
    total = counts.sum()
    return counts / total if total else counts


def psi(reference: np.ndarray, window: np.ndarray) -> float:
    """Population stability index of two binned distributions (shares floored at 1e-4)."""
    r = np.maximum(reference, FLOOR)
    w = np.maximum(window, FLOOR)
    return float(np.sum((w - r) * np.log(w / r)))


def ks(reference: list[float], window: list[float]) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov statistic and p-value."""
    from scipy.stats import ks_2samp

    result = ks_2samp(reference, window)
    return float(result.statistic), float(result.pvalue)


@dataclass(frozen=True)
class DriftFigures:
    """One comparison of the window against the reference."""

    model_version: str
    origin: str
    reference_signals: int
    window_signals: int
    psi: dict[str, dict[str, float]]  # source ("all" or a source name) -> feature -> PSI
    ks_statistic: float | None
    ks_pvalue: float | None
    psi_alert: float
    ks_alpha: float

    @property
    def alerting(self) -> list[str]:
        """What is past its threshold, e.g. `psi direction/all = 1.93`."""
        out = [f"psi {f}/{src} = {v:.3f}" for src, row in self.psi.items() for f, v in row.items()
               if v > self.psi_alert]
        if self.ks_pvalue is not None and self.ks_pvalue < self.ks_alpha:
            out.append(f"ks p = {self.ks_pvalue:.2g} (D = {self.ks_statistic:.3f})")
        return out

    def to_json(self) -> dict[str, Any]:
        return {"model_version": self.model_version, "origin": self.origin,
                "reference_signals": self.reference_signals, "window_signals": self.window_signals,
                "psi": self.psi, "ks_statistic": self.ks_statistic, "ks_pvalue": self.ks_pvalue,
                "psi_alert": self.psi_alert, "ks_alpha": self.ks_alpha, "alerting": self.alerting}


class DriftMonitor:
    """Keeps the reference and the sliding window; `figures()` compares them."""

    def __init__(self, *, window: int, warmup: int, min_signals: int, psi_alert: float, ks_alpha: float,
                 min_source_signals: int = 50) -> None:
        self.window_size = window
        self.warmup = warmup
        self.min_signals = min_signals
        self.psi_alert = psi_alert
        self.ks_alpha = ks_alpha
        self.min_source_signals = min_source_signals
        self.reference: Reference | None = None
        self.window: deque[Observation] = deque(maxlen=window)
        self._warming: Reference | None = None

    def reset(self, model_version: str, reference: Reference | None) -> None:
        """A new model serves: start over from its promotion reference, or warm up a new one."""
        self.window.clear()
        self.reference = reference
        self._warming = None if reference is not None else Reference("warmup", model_version)

    def observe(self, observations: Iterable[Observation]) -> None:
        """Add published signals: to the warm-up reference until it is full, then to the window."""
        for obs in observations:
            if self._warming is not None:
                self._warming.observations.append(obs)
                if len(self._warming.observations) >= self.warmup:
                    self.reference, self._warming = self._warming, None
                continue
            self.window.append(obs)

    def figures(self) -> DriftFigures | None:
        """The current comparison, or None while the reference or the window is too small."""
        ref = self.reference
        if ref is None or len(ref.observations) < self.min_signals or len(self.window) < self.min_signals:
            return None
        window = list(self.window)
        table: dict[str, dict[str, float]] = {"all": self._psi_row(ref.observations, window)}
        for source in sorted({o.source for o in window}):
            r = [o for o in ref.observations if o.source == source]
            w = [o for o in window if o.source == source]
            if len(r) >= self.min_source_signals and len(w) >= self.min_source_signals:
                table[source] = self._psi_row(r, w)
        stat, pvalue = ks([o.score for o in ref.observations], [o.score for o in window])
        return DriftFigures(ref.model_version, ref.origin, len(ref.observations), len(window), table, stat, pvalue,
                            self.psi_alert, self.ks_alpha)

    @staticmethod
    def _psi_row(ref: list[Observation], window: list[Observation]) -> dict[str, float]:
        return {f: round(psi(shares(ref, f), shares(window, f)), 6) for f in FEATURES}

    @property
    def warming(self) -> int | None:
        """Signals collected towards the warm-up reference, or None when it is complete."""
        return len(self._warming.observations) if self._warming is not None else None
