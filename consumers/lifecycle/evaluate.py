"""Both models on the eval set, through the worker's scorer: accuracy, macro-F1, agreement, flips, calibration,
and single-document latency measured side by side on this machine."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from compressor.data import LABELS as CORPUS_LABELS
from compressor.data import Corpus
from compressor.metrics import accuracy, agreement, expected_calibration_error, macro_f1, signal_flips
from ingest.contracts import Document
from signals.contracts import LABELS, Direction
from signals.drift import Observation, Reference
from signals.model import to_class_probs
from signals.scorer import ScoringBackend, SignalScorer
from signals.settings import WorkerSettings

assert CORPUS_LABELS == LABELS, "the corpus and the signal contract must order classes alike"


@dataclass(frozen=True)
class ModelFigures:
    """One model on the eval set."""

    probs: np.ndarray  # N x 3, bearish/neutral/bullish
    accuracy: float
    macro_f1: float
    ece: float
    p50_ms: float
    p99_ms: float

    @property
    def predictions(self) -> np.ndarray:
        return self.probs.argmax(axis=1)

    def to_json(self) -> dict[str, Any]:
        return {"accuracy": self.accuracy, "macro_f1": self.macro_f1, "calibration_error": self.ece,
                "p50_ms": self.p50_ms, "p99_ms": self.p99_ms}


def eval_documents(corpus: Corpus) -> list[Document]:
    """The eval texts as documents, so they take the worker's path (chunking, batching)."""
    now = time.time_ns()
    return [Document.create(kind="news", source="eval", body=text, url=f"https://eval.finsignal.local/{i}",
                            ts_event=now, ts_ingest=now) for i, text in enumerate(corpus.texts)]


def probabilities(model: ScoringBackend, documents: list[Document], settings: WorkerSettings) -> np.ndarray:
    """Class probabilities of every document, scored in the worker's token-budget batches."""
    scorer = SignalScorer(model, settings, record_metrics=False)
    out = []
    for start in range(0, len(documents), settings.max_pending):
        probs, _ = scorer.probabilities(documents[start : start + settings.max_pending])
        out.extend(probs)
    return np.asarray(out, dtype=np.float64)


def single_document_latency(models: list[ScoringBackend], documents: list[Document], settings: WorkerSettings,
                            count: int) -> list[np.ndarray]:
    """Milliseconds to score one document, per model; the models alternate so both see the same machine."""
    scorers = [SignalScorer(m, settings, record_metrics=False) for m in models]
    docs = documents[:count]
    for scorer in scorers:  # warm-up: first calls pay for lazy initialisation
        for doc in docs[:5]:
            scorer.probabilities([doc])
    times: list[list[float]] = [[] for _ in scorers]
    for doc in docs:
        for scorer, bucket in zip(scorers, times):
            began = time.perf_counter()
            scorer.probabilities([doc])
            bucket.append((time.perf_counter() - began) * 1000)
    return [np.asarray(t) for t in times]


def model_figures(probs: np.ndarray, labels: list[int], latency_ms: np.ndarray) -> ModelFigures:
    pred = probs.argmax(axis=1).tolist()
    return ModelFigures(probs, accuracy(labels, pred), macro_f1(labels, pred),
                        expected_calibration_error(probs, labels), float(np.percentile(latency_ms, 50)),
                        float(np.percentile(latency_ms, 99)))


def evaluate(candidate: ScoringBackend, live: ScoringBackend | None, corpus: Corpus, settings: WorkerSettings,
             latency_docs: int) -> tuple[ModelFigures, ModelFigures | None, dict[str, Any]]:
    """Figures of each model and how they compare (agreement, flips); `live` None for a first promotion."""
    documents = eval_documents(corpus)
    models = [candidate] if live is None else [candidate, live]
    latencies = single_document_latency(models, documents, settings, latency_docs)
    figures = [model_figures(probabilities(m, documents, settings), corpus.labels, lat)
               for m, lat in zip(models, latencies)]
    cand = figures[0]
    base = figures[1] if live is not None else None
    compared: dict[str, Any] = {"documents": len(documents)}
    if base is not None:
        flips = signal_flips(cand.predictions.tolist(), base.predictions.tolist())
        compared.update(direction_agreement=agreement(cand.predictions.tolist(), base.predictions.tolist()),
                        long_short_flips=flips, flip_rate=flips / len(documents) if documents else 0.0,
                        changed=int((cand.predictions != base.predictions).sum()))
    return cand, base, compared


def reference_from(probs: np.ndarray, model_version: str) -> Reference:
    """The candidate's eval-set outputs as a drift reference (`reference.json` beside the version)."""
    obs = []
    for row in probs:
        p = to_class_probs(row)
        obs.append(Observation(Direction.from_label(p.label).value, p.bullish - p.bearish,
                               max(p.bearish, p.neutral, p.bullish), "eval"))
    return Reference("promotion", model_version, obs)
