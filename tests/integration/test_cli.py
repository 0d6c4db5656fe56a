"""The command line as a user runs it: score offline, and the whole pipeline on embedded services."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ingest.recording import read_recording

ROOT = Path(__file__).resolve().parents[2]


def finsignal(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "finsignal.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def test_score_writes_one_line_per_input_in_order(tiny_model_dir, tmp_path):
    inputs = tmp_path / "docs.jsonl"
    texts = ["Apple shares jump after record revenue", "Intel misses estimates and cuts guidance", "Board meets"]
    inputs.write_text("".join(json.dumps({"id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(texts)))
    out = tmp_path / "scores.jsonl"
    result = finsignal("score", "--model", str(tiny_model_dir), "--input", str(inputs), "--output", str(out))
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["d0", "d1", "d2"]
    for r in rows:
        assert set(r) == {"id", "label", "probs"}
        assert set(r["probs"]) == {"bearish", "neutral", "bullish"}
        assert abs(sum(r["probs"].values()) - 1) < 1e-4
        assert r["label"] == max(r["probs"], key=r["probs"].get)


def test_score_rejects_bad_input_with_the_line_number(tiny_model_dir, tmp_path):
    inputs = tmp_path / "docs.jsonl"
    inputs.write_text('{"id": "a", "text": "ok"}\n{"id": "b"}\n')
    result = finsignal("score", "--model", str(tiny_model_dir), "--input", str(inputs), "--output",
                       str(tmp_path / "o.jsonl"))
    assert result.returncode == 2
    assert "docs.jsonl:2" in result.stderr


def test_score_refuses_a_pickle_checkpoint(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (model / "pytorch_model.bin").write_bytes(b"\x80\x04pickle")
    inputs = tmp_path / "docs.jsonl"
    inputs.write_text('{"id": "a", "text": "ok"}\n')
    result = finsignal("score", "--model", str(model), "--input", str(inputs), "--output", str(tmp_path / "o"))
    assert result.returncode == 2
    assert "pickle" in result.stderr


def test_compress_train_rejects_unknown_labels(tmp_path):
    data = tmp_path / "train.jsonl"
    data.write_text('{"text": "a", "label": "bullish"}\n{"text": "b", "label": "moon"}\n')
    result = finsignal("compress", "train", "--data", str(data), "--out", str(tmp_path / "m"))
    assert result.returncode == 2
    assert "unknown label 'moon'" in result.stderr


@pytest.mark.integration
def test_run_replays_the_demo_recording_on_embedded_services(tiny_model_dir, tmp_path):
    env = {"FINSIGNAL_WORKER_MODEL_DIR": str(tiny_model_dir), "FINSIGNAL_CACHE_DIR": str(tmp_path),
           "FINSIGNAL_KAFKA_SESSION_TIMEOUT_MS": "6000", "FINSIGNAL_KAFKA_HEARTBEAT_INTERVAL_MS": "2000"}
    env = {**env, **{k: "" for k in ("FINSIGNAL_KAFKA_BOOTSTRAP", "FINSIGNAL_REDIS_URL")}}
    demo = ROOT / "finsignal/recordings/demo"
    result = finsignal("run", "--replay", str(demo), "--speed", "max", "--duration", "45", env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line for line in result.stdout.splitlines() if "score=" in line]
    # One signal per symbol a document names, one market-wide signal for a document that names none.
    docs = [json.loads(m.value) for m in read_recording(demo) if m.topic in ("news", "filings")]
    assert len(lines) == sum(max(1, len(d["symbols"])) for d in docs)
    # Where the run names its model, it says what its eval accuracy was measured on.
    assert "run.model" in result.stderr and "template-generated" in result.stderr
    assert "embedded.stopped" in result.stderr
    [announced] = [json.loads(line) for line in result.stderr.splitlines() if '"worker.model"' in line]
    assert announced["path"] == str(tiny_model_dir.resolve()) and announced["name"] == "tiny-test"
    assert announced["kind"] == "hf" and announced["demo"] is False
    assert "worker.demo_model" not in result.stderr
