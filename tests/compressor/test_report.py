"""Report rendering: Pareto frontier, ratios, Markdown table, re-render errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from compressor.errors import CompressError
from compressor.report import markdown, pareto_front, ratios, render


@given(st.lists(st.tuples(st.floats(0.01, 100), st.floats(0, 100)), min_size=1, max_size=30))
def test_pareto_front_points_are_undominated_and_dominate_the_rest(points: list[tuple[float, float]]) -> None:
    front = set(pareto_front(points))
    for i in front:
        assert not any(points[j][0] <= points[i][0] and points[j][1] > points[i][1] for j in range(len(points)))
    for i in set(range(len(points))) - front:
        assert any(points[j][0] <= points[i][0] and points[j][1] >= points[i][1] for j in front)


def _row(name: str, role: str, acc: float, size: int, rate: float) -> dict:
    return {"name": name, "role": role, "accuracy": acc, "macro_f1": acc - 0.1, "agreement": 1.0,
            "size_on_disk_bytes": size, "model_bytes": size, "peak_memory_bytes": None, "docs_per_second": rate,
            "p50_latency_ms": 1000 / rate, "signal_flips": 0, "ece": 0.05, "runtime": "hf", "chain": [name],
            "shape": {"layers": 2}, "notes": ["a note"]}


REPORT = {"rows": [_row("dense_fp32", "baseline", 0.80, 20_000_000, 500), _row("quantize", "stage", 0.81, 2_000_000, 2000)],
          "final_row": "quantize", "notes": ["measured"], "environment": {"torch": "x"}}


def test_ratios_and_markdown() -> None:
    r = ratios(REPORT["rows"], "dense_fp32", "quantize")
    assert r["model_memory"] == pytest.approx(10) and r["throughput"] == pytest.approx(4)
    assert r["accuracy_points"] == pytest.approx(1.0)
    md = markdown(REPORT)
    assert "model memory 10.0x smaller" in md and "| quantize | 0.8100 |" in md and "n/a" in md


def test_render_rewrites_markdown_and_plots(tmp_path: Path) -> None:
    (tmp_path / "report.json").write_text(json.dumps(REPORT))
    text = render(tmp_path)
    assert (tmp_path / "report.md").read_text() == text
    assert (tmp_path / "pareto_size.png").stat().st_size > 1000


def test_render_refuses_a_directory_without_a_report(tmp_path: Path) -> None:
    with pytest.raises(CompressError, match="no report.json"):
        render(tmp_path)
    (tmp_path / "report.json").write_text("{}")
    with pytest.raises(CompressError, match="no rows"):
        render(tmp_path)


def test_compressor_stands_alone() -> None:
    """compressor imports neither the worker (signals) nor consumers nor the CLI package."""
    import ast

    root = Path(__file__).resolve().parents[2] / "compressor"
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            for name in names:
                assert name.split(".")[0] not in {"signals", "consumers", "finsignal"}, f"{path}: imports {name}"
