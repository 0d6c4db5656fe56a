"""Render a compression report: `report.json` -> `report.md` (the table) and the Pareto plots (PNG).

`finsignal compress report DIR` re-renders from `report.json`, so the table and plots can be rebuilt (or
regenerated after a style change) without re-running anything.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from compressor.errors import CompressError

COLUMNS = ("stage", "accuracy", "macro-F1", "agreement with dense", "size on disk", "peak memory", "documents/s",
           "p50 latency")
PLOTS = {"pareto_size.png": ("size_on_disk_bytes", "size on disk (MB, log scale)"),
         "pareto_latency.png": ("p50_latency_ms", "p50 latency per document (ms, log scale)")}


def _mb(n: int | None) -> str:
    return "n/a" if n is None else f"{n / 1e6:.2f} MB"


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of points no other point beats on both cost (lower) and accuracy (higher), by cost."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], float("-inf")
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def ratios(rows: list[dict[str, Any]], reference: str, target: str) -> dict[str, float]:
    """How `target` compares with `reference` (e.g. dense_fp32 vs the final row), each measured in this run."""
    ref = next(r for r in rows if r["name"] == reference)
    tgt = next(r for r in rows if r["name"] == target)
    return {
        "size_on_disk": ref["size_on_disk_bytes"] / tgt["size_on_disk_bytes"],
        "model_memory": ref["model_bytes"] / tgt["model_bytes"],
        "peak_memory": (ref["peak_memory_bytes"] / tgt["peak_memory_bytes"])
        if ref.get("peak_memory_bytes") and tgt.get("peak_memory_bytes") else float("nan"),
        "throughput": tgt["docs_per_second"] / ref["docs_per_second"],
        "p50_latency": ref["p50_latency_ms"] / tgt["p50_latency_ms"],
        "accuracy_points": 100 * (tgt["accuracy"] - ref["accuracy"]),
    }


def markdown(report: dict[str, Any]) -> str:
    """The report as Markdown: headline, the table, per-row shape and notes."""
    rows = report["rows"]
    final = report.get("final_row")
    lines = ["# Compression report", ""]
    if final and any(r["name"] == "dense_fp32" for r in rows):
        r = ratios(rows, "dense_fp32", final)
        lines += [
            f"Final model **{final}** against **dense fp32**, measured side by side in this run: "
            f"model memory {r['model_memory']:.1f}x smaller, size on disk {r['size_on_disk']:.1f}x smaller, "
            f"throughput {r['throughput']:.2f}x, p50 latency {r['p50_latency']:.2f}x faster, "
            f"accuracy {r['accuracy_points']:+.2f} points.",
            "",
        ]
    lines += ["| " + " | ".join(COLUMNS) + " | model memory | signal flips | ECE | role |",
              "|" + "---|" * (len(COLUMNS) + 4)]
    for row in rows:
        lines.append(
            f"| {row['name']} | {row['accuracy']:.4f} | {row['macro_f1']:.4f} | {row['agreement']:.4f} | "
            f"{_mb(row['size_on_disk_bytes'])} | {_mb(row.get('peak_memory_bytes'))} | "
            f"{row['docs_per_second']:.1f} | {row['p50_latency_ms']:.2f} ms | {_mb(row['model_bytes'])} | "
            f"{row['signal_flips']} | {row['ece']:.4f} | {row['role']} |"
        )
    lines += ["", "## Rows", ""]
    for row in rows:
        shape = row.get("shape") or {}
        dims = ", ".join(f"{k}={v}" for k, v in shape.items() if k != "tied_embeddings")
        chain = " -> ".join(row.get("chain") or []) or "input model"
        lines.append(f"- **{row['name']}** ({row['runtime']}, {row.get('dtype', 'float32')}): {chain}. {dims}.")
        for note in row.get("notes") or []:
            lines.append(f"  - {note}")
    outputs = report.get("outputs") or {}
    if outputs:
        lines += ["", "## Outputs", ""]
        for name, info in outputs.items():
            lines.append(f"- `{info['path']}/`: {info.get('note', '')} ({_mb(info.get('size_on_disk_bytes'))}).")
            if "verification" in info:
                v = info["verification"]
                lines.append(f"  - loaded back with compressed-tensors: format {v['format']}, weights {v['weights']},"
                             f" activations {v['activations']}, {v['layers']} layers, mismatches "
                             f"{len(v['mismatched'])}, max decompression error {v['decompressed_max_abs_error']:.3g}")
    lines += ["", "## How this was measured", ""] + [f"- {n}" for n in report.get("notes", [])]
    env = report.get("environment") or {}
    if env:
        lines += ["", "Environment: " + ", ".join(f"{k} {v}" for k, v in env.items()) + "."]
    return "\n".join(lines) + "\n"


def plot(report: dict[str, Any], out: Path) -> list[Path]:
    """Accuracy against size and against latency, every row a point, the Pareto frontier drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    rows = report["rows"]
    colors = {"baseline": "tab:gray", "stage": "tab:blue", "comparison": "tab:orange"}
    dense = next((r for r in rows if r["name"] == "dense_fp32"), None)
    written = []
    for filename, (key, label) in PLOTS.items():
        pts = [((r[key] / 1e6) if key.endswith("bytes") else r[key], 100 * r["accuracy"]) for r in rows]
        fig, ax = plt.subplots(figsize=(10, 6), dpi=120)
        order = sorted(range(len(rows)), key=lambda i: pts[i])
        for rank, i in enumerate(order):
            (x, y), r = pts[i], rows[i]
            ax.scatter(x, y, color=colors.get(r["role"], "tab:green"), s=42, zorder=3)
            ax.annotate(r["name"], (x, y), textcoords="offset points", xytext=(6, 6 if rank % 2 else -11),
                        fontsize=7.5)
        front = pareto_front(pts)
        ax.plot([pts[i][0] for i in front], [pts[i][1] for i in front], "--", color="tab:red", lw=1,
                label="Pareto frontier", zorder=2)
        if dense is not None:
            ax.axhline(100 * dense["accuracy"] - 1, color="tab:gray", lw=0.8, ls=":", label="dense fp32 - 1 point")
        for role, color in colors.items():
            ax.scatter([], [], color=color, label=role)
        ax.set_xscale("log")
        plain = FuncFormatter(lambda v, _: f"{v:g}")
        ax.xaxis.set_major_formatter(plain)
        ax.xaxis.set_minor_formatter(plain)
        ax.tick_params(axis="x", which="minor", labelsize=7)
        ax.set_xlabel(label)
        ax.set_ylabel("accuracy (%)")
        ax.set_title(f"Accuracy vs {label.split(' (')[0]} (up and left is better)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        fig.tight_layout()
        path = out / filename
        fig.savefig(path)
        plt.close(fig)
        written.append(path)
    return written


def write_report(out: Path, report: dict[str, Any]) -> None:
    """report.json, report.md and the plots."""
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (out / "report.md").write_text(markdown(report))
    plot(report, out)


def render(directory: str | Path) -> str:
    """Re-render `report.md` and the plots from `DIR/report.json`; return the Markdown."""
    directory = Path(directory)
    path = directory / "report.json"
    if not path.is_file():
        raise CompressError(f"{directory}: no report.json; is this the --out of `finsignal compress run`?")
    try:
        report = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CompressError(f"{path}: not JSON ({exc.msg})") from exc
    if not isinstance(report, dict) or not report.get("rows"):
        raise CompressError(f"{path}: no rows to report")
    text = markdown(report)
    (directory / "report.md").write_text(text)
    plot(report, directory)
    return text


def summary(report: dict[str, Any]) -> str:
    """A few lines for the terminal: the table's key columns and the headline ratios."""
    lines = [f"{'row':<28} {'acc':>7} {'F1':>7} {'agree':>7} {'disk MB':>9} {'docs/s':>9} {'p50 ms':>8}"]
    for r in report["rows"]:
        lines.append(f"{r['name']:<28} {r['accuracy']:>7.4f} {r['macro_f1']:>7.4f} {r['agreement']:>7.4f} "
                     f"{r['size_on_disk_bytes'] / 1e6:>9.3f} {r['docs_per_second']:>9.1f} {r['p50_latency_ms']:>8.2f}")
    final = report.get("final_row")
    if final and any(r["name"] == "dense_fp32" for r in report["rows"]):
        q = ratios(report["rows"], "dense_fp32", final)
        lines.append(f"{final} vs dense_fp32: memory {q['model_memory']:.1f}x smaller, throughput "
                     f"{q['throughput']:.2f}x, accuracy {q['accuracy_points']:+.2f} points")
    return "\n".join(lines)
