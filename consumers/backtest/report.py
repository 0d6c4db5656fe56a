"""Backtest reports on disk: JSON for machines, Markdown for people, PNG plots of equity and drawdown.

    REPORT_DIR/report.json      metrics, configs, model and recording identity (deterministic)
    REPORT_DIR/report.md        the same, readable
    REPORT_DIR/signals.jsonl    the signal stream, one Signal per line, in replay order
    REPORT_DIR/trades.jsonl     one round trip per line
    REPORT_DIR/equity.png, drawdown.png

With a comparison: the candidate's own report in REPORT_DIR/compare/, and comparison.json,
comparison.md and equity_compare.png beside the baseline's.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from consumers.backtest.engine import BacktestResult


def _dump(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=False, ensure_ascii=False) + "\n"


def write_report(result: BacktestResult, out: Path) -> None:
    """Write every file of one backtest's report."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(_dump(result.metrics))
    (out / "signals.jsonl").write_bytes(result.signal_stream())
    with (out / "trades.jsonl").open("w") as fh:
        for t in result.simulation.trades:
            fh.write(json.dumps({**asdict(t), "net_return": t.net_return, "pnl": t.pnl}) + "\n")
    _plot_equity({result.model.name: result}, out / "equity.png")
    _plot_drawdown(result, out / "drawdown.png")
    (out / "report.md").write_text(markdown(result.metrics))


def write_comparison(baseline: BacktestResult, candidate: BacktestResult, comparison: dict[str, Any],
                     out: Path) -> None:
    """Write the comparison files beside the baseline's report."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "comparison.json").write_text(_dump(comparison))
    labels = _labels(baseline, candidate)
    _plot_equity({labels[0]: baseline, labels[1]: candidate}, out / "equity_compare.png")
    (out / "comparison.md").write_text(comparison_markdown(comparison, labels))


def _labels(a: BacktestResult, b: BacktestResult) -> tuple[str, str]:
    if a.model.name != b.model.name:
        return f"baseline {a.model.name}", f"candidate {b.model.name}"
    return f"baseline {a.model.version}", f"candidate {b.model.version}"


# -- plots --------------------------------------------------------------------------------------------

def _times(ts: Any) -> list[datetime]:
    return [datetime.fromtimestamp(int(t) / 1e9, tz=timezone.utc) for t in ts]


def _plot_equity(results: dict[str, BacktestResult], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4.5), dpi=100)
    for label, result in results.items():
        if len(result.curve.ts):
            ax.plot(_times(result.curve.ts), result.curve.equity, label=label, linewidth=1.2)
    ax.axhline(1.0, color="grey", linewidth=0.6, linestyle="--")
    ax.set_title("Equity (units of initial capital, net of fees and slippage)")
    ax.set_xlabel("time (UTC)")
    ax.set_ylabel("equity")
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, metadata={"Software": None})
    plt.close(fig)


def _plot_drawdown(result: BacktestResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 3.5), dpi=100)
    if len(result.curve.ts):
        times = _times(result.curve.ts)
        ax.fill_between(times, -100 * result.curve.drawdown, 0, color="tab:red", alpha=0.4, step="post")
    ax.set_title(f"Drawdown, {result.model.name}")
    ax.set_xlabel("time (UTC)")
    ax.set_ylabel("% below peak")
    ax.grid(alpha=0.3)
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, metadata={"Software": None})
    plt.close(fig)


# -- markdown -----------------------------------------------------------------------------------------

def _fmt(value: Any, kind: str = "") -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool) or isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if kind == "pct":
            return f"{100 * value:.2f}%"
        return f"{value:.4f}" if abs(value) < 1000 else f"{value:,.1f}"
    return str(value)


PCT = {"precision", "recall", "hit_rate", "total_return", "max_drawdown", "win_rate", "costs_share_of_gross",
       "time_in_market_share", "direction_agreement", "action_agreement"}


def _table(rows: dict[str, Any]) -> list[str]:
    lines = ["| metric | value |", "|---|---|"]
    for name, value in rows.items():
        if isinstance(value, (dict, list)):
            continue
        lines.append(f"| {name} | {_fmt(value, 'pct' if name in PCT else '')} |")
    return lines


def markdown(m: dict[str, Any]) -> str:
    """The human-readable report."""
    rec, model, strat = m["recording"], m["model"], m["config"]["strategy"]
    q, p = m["signal_quality"], m["performance"]
    lines = [
        f"# Backtest: {model['name']} ({model['version']})",
        "",
        f"Recording `{rec['path']}` (sha256 `{rec['sha256'][:16]}`): {rec['events']} events, {rec['documents']} "
        f"documents, {rec['market_events']} market events, {rec['rejected']} rejected; priced symbols: "
        f"{', '.join(rec['priced_symbols']) or 'none'}.",
        "",
        f"Strategy: enter when |score| >= {strat['entry_threshold']} (confidence >= {strat['min_confidence']}), "
        f"exit after {strat['horizon_s']} s; fees {strat['fee_bps']} bps and slippage {strat['slippage_bps']} bps "
        f"per fill; size {strat['position_size']} of capital; overlapping signals: {strat['overlap']}. "
        f"A true positive is a move of at least {strat['move_threshold_bps']} bps in the predicted direction "
        f"within the horizon (first touch).",
        "",
        f"Signals: {m['replay']['signals']} in {m['replay']['batches']} batches "
        f"(stream sha256 `{m['signal_stream_sha256'][:16]}`); skipped by the strategy: "
        + (", ".join(f"{k} {v}" for k, v in m["skipped_signals"].items()) or "none") + ".",
        "",
        "## Signal quality",
        "",
        *_table(q),
        "",
        "Confusion (rows: what the strategy did; columns: realized move):",
        "",
        "| | up | down | none |",
        "|---|---|---|---|",
        *[f"| {act} | {row['up']} | {row['down']} | {row['none']} |" for act, row in q["confusion"].items()],
        "",
        "## Trading",
        "",
        *_table(p),
        "",
        "Exit reasons: " + (", ".join(f"{k} {v}" for k, v in p["exit_reasons"].items()) or "none") + ".",
        *_span_note(p),
        "",
        "![equity](equity.png)",
        "",
        "![drawdown](drawdown.png)",
        "",
        "## Per symbol",
        "",
        "| symbol | signals | trades | net P&L | win rate | precision | recall |",
        "|---|---|---|---|---|---|---|",
    ]
    for sym, row in m["per_symbol"].items():
        lines.append(f"| {sym} | {row['signals']} | {row['trades']} | {_fmt(row['net_pnl'])} | "
                     f"{_fmt(row['win_rate'], 'pct')} | {_fmt(row['precision'], 'pct')} | "
                     f"{_fmt(row['recall'], 'pct')} |")
    return "\n".join(lines) + "\n"


def _span_note(p: dict[str, Any]) -> list[str]:
    if p["days"] >= 30 or p["sharpe"] is None:
        return []
    return ["", f"Sharpe is annualized from {p['days']:.2f} days of {365 * 24 * 3600 / p['periods_per_year']:.0f}-second "
                "periods: a scale for comparing models on this recording, not a forecast."]


def comparison_markdown(c: dict[str, Any], labels: tuple[str, str]) -> str:
    """The human-readable comparison."""
    a, b, agree = c["baseline"], c["candidate"], c["agreement"]
    lines = [
        f"# Comparison: {labels[0]} vs {labels[1]}",
        "",
        f"Baseline `{a['name']}` {a['version']}; candidate `{b['name']}` {b['version']}; same recording "
        f"(sha256 `{c['recording_sha256'][:16]}`) and strategy.",
        "",
        "## Agreement",
        "",
        *_table(agree),
        "",
        "Direction flips: " + (", ".join(f"{k} {v}" for k, v in agree["flip_counts"].items()) or "none") + ".",
        "Action flips: " + (", ".join(f"{k} {v}" for k, v in agree["action_flip_counts"].items()) or "none") + ".",
        "",
    ]
    for section, rows in c["deltas"].items():
        lines += [f"## {section.replace('_', ' ').capitalize()}", "", "| metric | baseline | candidate | delta |",
                  "|---|---|---|---|"]
        for name, row in rows.items():
            kind = "pct" if name in PCT else ""
            lines.append(f"| {name} | {_fmt(row['baseline'], kind)} | {_fmt(row['candidate'], kind)} | "
                         f"{_fmt(row['delta'], kind)} |")
        lines.append("")
    lines += ["![equity](equity_compare.png)", ""]
    return "\n".join(lines)
