"""The promotion gate: a candidate against the live model, side by side; pass moves `live`, fail moves nothing.

Every decision (promoted, refused, forced) is appended to the registry's audit log with its figures.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from compressor.data import DataError, load_corpus
from consumers.lifecycle.evaluate import ModelFigures, evaluate, reference_from
from consumers.lifecycle.settings import GateSettings
from signals.registry import REFERENCE, Entry, ModelRegistry, RegistryError
from signals.scorer import ScoringBackend
from signals.settings import WorkerSettings

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class GateCheck:
    """One gate: passed or not, and the line that says why."""

    name: str
    passed: bool
    detail: str

    def line(self) -> str:
        return f"{'PASS' if self.passed else 'FAIL'} {self.name}: {self.detail}"


@dataclass
class Decision:
    """What `promote` decided and on which figures."""

    candidate: str
    live_before: str | None
    checks: list[GateCheck]
    figures: dict[str, Any]
    forced: bool = False
    moved: bool = False
    lines: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def failed(self) -> list[GateCheck]:
        return [c for c in self.checks if not c.passed]


def judge(cand: ModelFigures, live: ModelFigures | None, compared: dict[str, Any], trading: dict[str, Any] | None,
          gate: GateSettings) -> list[GateCheck]:
    """Every gate on the figures; comparative gates only when there is a live model."""
    checks = [GateCheck("p99 latency", cand.p99_ms <= gate.p99_budget_ms,
                        f"candidate {cand.p99_ms:.1f} ms, budget {gate.p99_budget_ms:.0f} ms")]
    if live is None:
        return checks
    drop = live.accuracy - cand.accuracy
    checks.append(GateCheck("accuracy", drop <= gate.max_accuracy_drop + 1e-12,
                            f"candidate {cand.accuracy:.3f} vs live {live.accuracy:.3f}: {-drop * 100:+.1f} pt, "
                            f"at most {gate.max_accuracy_drop * 100:.1f} pt lower allowed"))
    drop = live.macro_f1 - cand.macro_f1
    checks.append(GateCheck("macro-F1", drop <= gate.max_macro_f1_drop + 1e-12,
                            f"candidate {cand.macro_f1:.3f} vs live {live.macro_f1:.3f}: {-drop * 100:+.1f} pt, "
                            f"at most {gate.max_macro_f1_drop * 100:.1f} pt lower allowed"))
    agree = compared["direction_agreement"]
    checks.append(GateCheck("direction agreement", agree >= gate.min_agreement,
                            f"{agree:.1%} of eval documents, at least {gate.min_agreement:.0%} required"))
    checks.append(GateCheck("signal flips", compared["flip_rate"] <= gate.max_flip_rate,
                            f"{compared['long_short_flips']} long<->short ({compared['flip_rate']:.1%}), "
                            f"at most {gate.max_flip_rate:.0%} allowed"))
    rise = cand.ece - live.ece
    checks.append(GateCheck("calibration error", rise <= gate.max_calibration_increase + 1e-12,
                            f"ECE candidate {cand.ece:.3f} vs live {live.ece:.3f}, at most "
                            f"+{gate.max_calibration_increase:.3f} allowed"))
    if gate.max_p99_ratio is not None and live.p99_ms > 0:
        ratio = cand.p99_ms / live.p99_ms
        checks.append(GateCheck("p99 latency ratio", ratio <= gate.max_p99_ratio,
                                f"candidate/live {ratio:.2f}x, at most {gate.max_p99_ratio:.2f}x"))
    if trading is not None:
        checks.extend(_trading_checks(trading, gate))
    return checks


def _trading_checks(trading: dict[str, Any], gate: GateSettings) -> list[GateCheck]:
    a, b, boot, agreement = trading["live"], trading["candidate"], trading["bootstrap"], trading["agreement"]
    checks = []
    if boot.get("samples"):
        checks.append(GateCheck(
            "sharpe", boot["diff_high"] >= 0,
            f"candidate {b['sharpe']:.2f} vs live {a['sharpe']:.2f}; difference {gate.confidence:.0%} interval "
            f"[{boot['diff_low']:+.2f}, {boot['diff_high']:+.2f}] must reach 0"))
    checks.append(GateCheck("drawdown", b["max_drawdown"] <= a["max_drawdown"] + gate.max_drawdown_increase + 1e-12,
                            f"candidate {b['max_drawdown']:.2%} vs live {a['max_drawdown']:.2%}, at most "
                            f"+{gate.max_drawdown_increase:.0%} allowed"))
    limit = gate.max_turnover_ratio * a["turnover"]
    checks.append(GateCheck("turnover", b["turnover"] <= limit + 1e-12 or b["turnover"] == 0,
                            f"candidate {b['turnover']:.1f} vs live {a['turnover']:.1f}, at most "
                            f"{gate.max_turnover_ratio:.1f}x"))
    agree = agreement.get("direction_agreement")
    if agree is not None:
        checks.append(GateCheck("backtest agreement", agree >= gate.min_agreement,
                                f"{agree:.1%} of {agreement['matched_signals']} recorded signals, at least "
                                f"{gate.min_agreement:.0%} required"))
    return checks


def resolve_candidate(registry: ModelRegistry, candidate: str) -> Entry:
    """A registered version (id, prefix, pointer name) or a checkpoint directory, registered on the way."""
    path = Path(candidate)
    if path.is_dir():
        entry, _ = registry.register(path)
        return entry
    return registry.get(candidate)


def promote(
    registry: ModelRegistry,
    candidate: str,
    *,
    eval_path: Path | None = None,
    recording: Path | None = None,
    force: bool = False,
    gate: GateSettings | None = None,
    worker: WorkerSettings | None = None,
    loader: Any = None,
) -> Decision:
    """Evaluate a candidate against live; move `live` when every gate passes (or `force`); audit the decision."""
    gate = gate or GateSettings()
    worker = worker or WorkerSettings()
    entry = resolve_candidate(registry, candidate)
    live_version = registry.pointer("live")
    if entry.version == live_version:
        raise RegistryError(f"{entry.version} is already live")
    eval_path = eval_path or gate.eval_path
    if eval_path is None:
        raise RegistryError("no eval set: pass --eval TEST.jsonl (or set FINSIGNAL_GATE_EVAL_PATH)")
    try:
        corpus = load_corpus(eval_path)
    except DataError as exc:
        raise RegistryError(str(exc)) from exc
    load = loader or _loader(worker)
    cand_model = load(entry.path)
    live_model = load(registry.get(live_version).path) if live_version else None
    cand, live, compared = evaluate(cand_model, live_model, corpus, worker, gate.latency_docs)
    trading = None
    if recording is not None and live_model is not None:
        from consumers.lifecycle.trading import backtest_both

        trading = backtest_both(recording, live_model, cand_model, worker, gate)
    checks = judge(cand, live, compared, trading, gate)
    figures = {"eval": {"path": str(eval_path), "sha256": corpus.sha256, **compared,
                        "candidate": cand.to_json(), "live": live.to_json() if live else None},
               "backtest": trading, "gates": gate.model_dump(mode="json")}
    decision = Decision(entry.version, live_version, checks, figures, forced=force)
    record = {"candidate": entry.version, "passed": decision.passed, "forced": force,
              "failed_gates": [c.name for c in decision.failed], "checks": [c.line() for c in checks],
              "figures": figures}
    if decision.passed or force:
        reference_from(cand.probs, entry.version).save(entry.path / REFERENCE)
        registry.promote(entry.version, record)
        decision.moved = True
    else:
        registry.append_audit({"action": "refuse", "version": entry.version, "live_before": live_version,
                               "live_after": live_version, **record})
    decision.lines = report_lines(entry, live_version, cand, live, compared, trading, decision)
    log.info("model.promotion", candidate=entry.version, live_before=live_version, passed=decision.passed,
             forced=force, moved=decision.moved)
    return decision


def _loader(worker: WorkerSettings) -> Any:
    from signals.backends import load_backend

    def load(path: Path) -> ScoringBackend:
        return load_backend(path, worker)

    return load


def report_lines(entry: Entry, live_version: str | None, cand: ModelFigures, live: ModelFigures | None,
                 compared: dict[str, Any], trading: dict[str, Any] | None, decision: Decision) -> list[str]:
    """The side-by-side table, the gates, and the outcome."""
    lines = [f"candidate {entry.version} ({entry.name}) vs live {live_version or '(none)'}, "
             f"eval {compared['documents']} documents"]
    rows = [("accuracy", "accuracy", "{:.3f}"), ("macro-F1", "macro_f1", "{:.3f}"),
            ("calibration error (ECE)", "ece", "{:.3f}"), ("p50 latency, 1 doc (ms)", "p50_ms", "{:.1f}"),
            ("p99 latency, 1 doc (ms)", "p99_ms", "{:.1f}")]
    lines.append(f"  {'':26}{'live':>10}{'candidate':>11}")
    for label, attr, fmt in rows:
        base = fmt.format(getattr(live, attr)) if live else "-"
        lines.append(f"  {label:26}{base:>10}{fmt.format(getattr(cand, attr)):>11}")
    if live is not None:
        lines.append(f"  {'direction agreement':26}{compared['direction_agreement']:>21.1%}")
        lines.append(f"  {'long<->short flips':26}{compared['long_short_flips']:>21}")
    if trading is not None:
        a, b, boot = trading["live"], trading["candidate"], trading["bootstrap"]
        lines.append(f"  backtest {Path(trading['recording']).name}:")
        for label, key, fmt in (("sharpe", "sharpe", "{:.2f}"), ("max drawdown", "max_drawdown", "{:.2%}"),
                                ("hit rate", "hit_rate", "{:.2%}"), ("turnover", "turnover", "{:.1f}"),
                                ("trades", "trades", "{}")):
            lines.append(f"  {label:26}{_fmt(fmt, a[key]):>10}{_fmt(fmt, b[key]):>11}")
        if boot.get("samples"):
            lines.append(f"  sharpe {boot['confidence']:.0%} intervals: live [{boot['live_low']:.2f}, "
                         f"{boot['live_high']:.2f}], candidate [{boot['candidate_low']:.2f}, "
                         f"{boot['candidate_high']:.2f}], difference [{boot['diff_low']:+.2f}, {boot['diff_high']:+.2f}]")
    lines += [c.line() for c in decision.checks]
    if decision.moved:
        how = "FORCED past failed gates" if decision.forced and not decision.passed else "promoted"
        lines.append(f"{how}: live {live_version or '(none)'} -> {entry.version}")
    else:
        lines.append(f"refused: {len(decision.failed)} gate(s) failed; live stays {live_version}")
    return lines


def _fmt(fmt: str, value: Any) -> str:
    return "-" if value is None else fmt.format(value)
