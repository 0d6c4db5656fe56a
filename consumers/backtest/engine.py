"""The backtest as one function: recording + model -> signals, trades, metrics (and a report on disk).

    from consumers.backtest import run_backtest
    result = run_backtest("finsignal/recordings/demo", "path/to/model", out_dir="report")
    result.metrics["performance"]["sharpe"]

Scoring goes through `signals.worker.SignalScorer`, the worker's own code path, built with the replay's
simulated clock; see `consumers.backtest.replay` for the no-look-ahead rule. Everything in `metrics`
(and `report.json`) is a function of the recording, the model weights and the configs, so the same
inputs give the same bytes; nothing measured on the wall clock goes in there.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from consumers.backtest.config import BacktestConfig
from consumers.backtest.events import Recording, load_recording
from consumers.backtest.metrics import EquityCurve, Outcome, equity_curve, outcomes, per_symbol, performance, signal_quality
from consumers.backtest.replay import ReplayClock, ReplayStats, SignalReplay
from consumers.backtest.strategy import Simulation, simulate
from signals.contracts import ModelInfo, Signal
from signals.settings import WorkerSettings

if TYPE_CHECKING:
    from signals.scorer import ScoringBackend

log = structlog.get_logger(__name__)

REPORT_FORMAT = 1


@dataclass
class BacktestResult:
    """Everything one backtest produced."""

    config: BacktestConfig
    recording: Recording
    model: ModelInfo
    signals: list[Signal]
    stats: ReplayStats
    simulation: Simulation
    outcomes: list[Outcome]
    curve: EquityCurve
    metrics: dict[str, Any]

    def signal_stream(self) -> bytes:
        """The signals as JSON lines, in replay order: the byte-identical output."""
        return b"".join(sig.to_bytes() + b"\n" for sig in self.signals)


def replay_signals(
    recording: Recording,
    model: ScoringBackend,
    config: BacktestConfig,
    settings: WorkerSettings,
    *,
    progress: bool = False,
) -> tuple[list[Signal], ReplayStats]:
    """Score a recording's documents through the worker's scorer in simulated time."""
    from tqdm.auto import tqdm

    from signals.market import MarketContextStore
    from signals.worker import SignalScorer

    clock = ReplayClock()
    market = MarketContextStore(settings.vol_window_s) if settings.market_context else None
    replay = SignalReplay(SignalScorer(model, settings, clock, market), clock, config.replay.resolved(settings),
                          market, token_budget=settings.token_budget)
    signals: list[Signal] = []
    events = tqdm(recording.events, desc="backtest", unit="event", disable=not progress)
    for batch in replay.run(events):
        signals.extend(batch.signals)
    return signals, replay.stats


def run_backtest(
    recording: str | Path | Recording,
    model: str | Path | ScoringBackend,
    out_dir: str | Path | None = None,
    config: BacktestConfig | None = None,
    *,
    worker_settings: WorkerSettings | None = None,
    threads: int | None = None,
    progress: bool = False,
) -> BacktestResult:
    """Replay, score, trade and measure; write the report to `out_dir` when given."""
    config = config or BacktestConfig()
    settings = worker_settings or WorkerSettings()
    if not isinstance(recording, Recording):
        recording = load_recording(recording, config.replay)
    if isinstance(model, (str, Path)):
        model = load_model(Path(model), settings, threads)
    log.info("backtest.start", recording=str(recording.path), events=len(recording.events), model=model.info.version)
    signals, stats = replay_signals(recording, model, config, settings, progress=progress)
    sim = simulate(signals, recording.prices, config.strategy)
    results = outcomes(signals, recording.prices, config.strategy)
    curve = equity_curve(sim.trades, recording.prices, config.strategy)
    config = config.model_copy(update={"replay": config.replay.resolved(settings)})  # report what was used
    result = BacktestResult(config, recording, model.info, signals, stats, sim, results, curve, {})
    result.metrics = _metrics(result, settings)
    if out_dir is not None:
        from consumers.backtest.report import write_report

        write_report(result, Path(out_dir))
    log.info("backtest.done", signals=len(signals), trades=len(sim.trades),
             sharpe=result.metrics["performance"]["sharpe"])
    return result


def load_model(directory: Path, settings: WorkerSettings, threads: int | None = None) -> ScoringBackend:
    """The model as the worker would load it (backend, device, dtype and mode from its settings)."""
    from signals.backends import load_backend

    return load_backend(directory, settings.model_copy(update={"threads": threads}) if threads else settings)


def _metrics(result: BacktestResult, settings: WorkerSettings) -> dict[str, Any]:
    rec, stats = result.recording, result.stats
    return {
        "format": REPORT_FORMAT,
        "recording": {
            "path": str(rec.path),
            "sha256": rec.digest,
            "events": len(rec.events),
            "documents": rec.documents,
            "market_events": len(rec.events) - rec.documents,
            "priced_symbols": sorted(rec.prices.series),
            "rejected": len(rec.rejected),
            "rejects": [{"topic": r.topic, "line": r.line, "reason": r.reason} for r in rec.rejected[:20]],
        },
        "model": result.model.model_dump(mode="json"),
        "config": result.config.model_dump(mode="json"),
        "worker_settings": settings.model_dump(mode="json"),
        "replay": {
            "batches": stats.batches,
            "signals": stats.signals,
            "duplicate_signals": stats.duplicate_signals,
            "documents_without_signal": stats.documents_without_signal,
            "failed_documents": stats.failed_documents,
            "failures": [{"document_id": d, "reason": r} for d, r in stats.failures[:20]],
        },
        "signal_stream_sha256": hashlib.sha256(result.signal_stream()).hexdigest(),
        "signal_quality": signal_quality(result.outcomes),
        "performance": performance(result.simulation.trades, result.curve),
        "per_symbol": per_symbol(result.simulation.trades, result.outcomes),
        "skipped_signals": dict(sorted(result.simulation.skipped.items())),
    }
