"""Classification metrics computed without extra dependencies."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def confusion(y_true: Sequence[int], y_pred: Sequence[int], n_classes: int = 3) -> np.ndarray:
    """Rows are true classes, columns predicted."""
    m = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(m, (np.asarray(y_true), np.asarray(y_pred)), 1)
    return m


def accuracy(y_true: Sequence[int], y_pred: Sequence[int]) -> float:
    t, p = np.asarray(y_true), np.asarray(y_pred)
    return float((t == p).mean()) if len(t) else 0.0


def macro_f1(y_true: Sequence[int], y_pred: Sequence[int], n_classes: int = 3) -> float:
    """Unweighted mean of per-class F1; a class never predicted nor present counts as 0."""
    m = confusion(y_true, y_pred, n_classes)
    tp = np.diag(m).astype(float)
    precision = np.divide(tp, m.sum(axis=0), out=np.zeros(n_classes), where=m.sum(axis=0) > 0)
    recall = np.divide(tp, m.sum(axis=1), out=np.zeros(n_classes), where=m.sum(axis=1) > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros(n_classes), where=denom > 0)
    return float(f1.mean())


def expected_calibration_error(probs: np.ndarray, y_true: Sequence[int], bins: int = 10) -> float:
    """Gap between confidence and accuracy, averaged over equal-width confidence bins."""
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == np.asarray(y_true)
    edges = np.linspace(0.0, 1.0, bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        in_bin = (conf > lo) & (conf <= hi)
        if in_bin.any():
            ece += in_bin.mean() * abs(correct[in_bin].mean() - conf[in_bin].mean())
    return float(ece)


DIRECTION = np.array([-1, 0, 1])  # bearish, neutral, bullish as a trading direction


def agreement(pred: Sequence[int], reference: Sequence[int]) -> float:
    """Share of documents where the model's class (= trading direction) equals the reference model's."""
    p, r = np.asarray(pred), np.asarray(reference)
    return float((p == r).mean()) if len(p) else 0.0


def signal_flips(pred: Sequence[int], reference: Sequence[int]) -> int:
    """Documents whose direction reverses against the reference: bullish <-> bearish (neutral never flips)."""
    p, r = DIRECTION[np.asarray(pred)], DIRECTION[np.asarray(reference)]
    return int(((p * r) < 0).sum())


def signal_score(probs: np.ndarray) -> np.ndarray:
    """The continuous signal a strategy trades on: P(bullish) - P(bearish), in [-1, 1]."""
    return probs[:, 2] - probs[:, 0]


def trading_metrics(probs: np.ndarray, reference_probs: np.ndarray, y_true: Sequence[int]) -> dict[str, float]:
    """Quality of a compressed model as a signal source, against the dense model it replaces."""
    pred, ref = probs.argmax(axis=1), reference_probs.argmax(axis=1)
    s, s_ref = signal_score(probs), signal_score(reference_probs)
    corr = float(np.corrcoef(s, s_ref)[0, 1]) if len(s) > 1 and s.std() > 0 and s_ref.std() > 0 else 0.0
    flips = signal_flips(pred, ref)
    return {
        "accuracy": accuracy(y_true, pred),
        "macro_f1": macro_f1(y_true, pred),
        "agreement": agreement(pred, ref),
        "signal_flips": flips,
        "signal_flip_rate": flips / len(pred) if len(pred) else 0.0,
        "signal_mae": float(np.abs(s - s_ref).mean()) if len(s) else 0.0,
        "signal_corr": corr,
        "ece": expected_calibration_error(probs, y_true),
    }
