"""`compress run` end to end on a small GQA model, and every kind of bad input refused before training."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from compressor.data import DataError
from compressor.errors import CompressError, ModelError, RecipeError
from compressor.pipeline import compress_run, prepare
from finsignal.demo import sample_corpus

TRAIN, EVAL = sample_corpus()

E2E_RECIPE = """
finetune: {epochs: 1, batch_size: 64, learning_rate: 1.0e-3}
calibration: {examples: 64}
evaluation: {isolated: false, throughput_rounds: 1, latency_samples: 5, max_examples: 64}
stages:
  - {type: layer_drop, target_layers: 2, mode: successive, criterion: angular}
  - {type: prune, attention_heads: 4, ffn: 0.5}
  - {type: sparsity_24, mask: wanda, finetune: {epochs: 0}}
  - {type: quantize, mode: qat, finetune: {epochs: 1, learning_rate: 2.0e-4}}
comparisons:
  - {name: svd, stages: [{type: lowrank, rank_fraction: 0.5}]}
  - {name: kmeans, start: prune, stages: [{type: weight_sharing, clusters: 16}]}
"""


def finsignal(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "finsignal.cli", *args], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "FINSIGNAL_LOG_LEVEL": "WARNING"})


@pytest.fixture(scope="module")
def compressed(tmp_path_factory: pytest.TempPathFactory, sample_tokenizer: Any) -> tuple[Path, Path, dict]:
    from tests.compressor.conftest import make_classifier

    root = tmp_path_factory.mktemp("compress")
    dense = root / "dense"
    make_classifier(vocab=len(sample_tokenizer)).save_pretrained(dense, safe_serialization=True)
    sample_tokenizer.save_pretrained(dense)
    recipe = root / "recipe.yaml"
    recipe.write_text(E2E_RECIPE)
    out = root / "out"
    # a relative model path outside --out: the side-by-side timing once resolved it against --out (bug)
    report = compress_run(Path(os.path.relpath(dense)), TRAIN, EVAL, out, recipe, progress=False)
    return dense, out, report


def test_every_stage_baseline_and_comparison_gets_a_measured_row(compressed: tuple[Path, Path, dict]) -> None:
    _, out, report = compressed
    names = [r["name"] for r in report["rows"]]
    assert names == ["dense_fp32", "dense_bf16", "layer_drop", "prune", "sparsity_24", "quantize", "int8_ptq",
                     "layer_drop_one_shot", "layer_drop_one_shot_ft", "svd", "kmeans"]
    for row in report["rows"]:
        assert row["timing"] == "side by side" and row["isolated_timing"]["docs_per_second"] > 0
        assert 0 <= row["accuracy"] <= 1 and 0 <= row["macro_f1"] <= 1 and 0 <= row["agreement"] <= 1
        assert row["size_on_disk_bytes"] > 0 and row["model_bytes"] > 0
        assert row["docs_per_second"] > 0 and row["p50_latency_ms"] > 0
    rows = {r["name"]: r for r in report["rows"]}
    assert rows["dense_fp32"]["agreement"] == 1.0 and rows["dense_fp32"]["signal_flips"] == 0
    assert rows["quantize"]["runtime"] == "sparse24"  # 2:4 int8 values + metadata on disk
    assert rows["int8_ptq"]["runtime"] == "w8a8"
    assert rows["dense_bf16"]["size_on_disk_bytes"] < 0.6 * rows["dense_fp32"]["size_on_disk_bytes"]
    assert rows["quantize"]["size_on_disk_bytes"] < rows["prune"]["size_on_disk_bytes"] / 2
    from compressor.runtime.int8 import INT8_KERNEL

    if INT8_KERNEL == "int_mm":
        assert rows["quantize"]["model_bytes"] < rows["prune"]["model_bytes"] / 3
    elif INT8_KERNEL == "fbgemm":  # FBGEMM's packed copy of the int8 weights is counted beside them
        assert rows["prune"]["model_bytes"] / 3 < rows["quantize"]["model_bytes"] < rows["prune"]["model_bytes"] / 1.5
    else:  # the fp32 copy of the int8 grid the runtime multiplies is counted in memory
        assert rows["quantize"]["model_bytes"] > rows["prune"]["model_bytes"] / 3
    assert rows["prune"]["shape"]["attention_heads"] == 4 and rows["prune"]["shape"]["ffn"] == 48
    assert any("storage only" in n for n in rows["sparsity_24"]["notes"])


def test_successive_and_one_shot_drops_get_the_same_fine_tune_budget(compressed: tuple[Path, Path, dict]) -> None:
    _, out, _ = compressed
    stages = json.loads((out / "manifest.json").read_text())["stages"]
    successive, one_shot = stages["layer_drop"], stages["layer_drop_one_shot_ft"]
    assert [d["after_epoch"] for d in successive["details"]["drops"]] == [0]
    assert len(successive["history"]) == len(one_shot["history"]) == successive["details"]["epochs"] == 1
    assert stages["layer_drop_one_shot"]["history"] == []


def test_outputs_load_in_transformers_and_in_the_worker(compressed: tuple[Path, Path, dict]) -> None:
    import torch
    from transformers import LlamaForSequenceClassification

    from compressor.runtime.int8 import Int8Linear
    from signals.model import SentimentModel

    _, out, report = compressed
    plain = LlamaForSequenceClassification.from_pretrained(out / "model")
    assert (plain.config.num_hidden_layers, plain.config.num_attention_heads, plain.config.num_key_value_heads,
            plain.config.intermediate_size) == (2, 4, 2, 48)
    assert report["outputs"]["w8a8"]["verification"]["mismatched"] == []
    texts = ["Intel misses estimates and cuts guidance", "Apple shares jump after record revenue"]
    for directory, int8 in ((out / "model", False), (out / "w8a8", True)):
        model = SentimentModel.load(directory)
        probs = model.score(texts)
        assert probs.shape == (2, 3)
        assert abs(float(probs.sum()) - 2) < 1e-4
        assert any(isinstance(m, Int8Linear) for m in model.module.modules()) == int8
    # the plain checkpoint holds the int8 grid with 2:4 zeros: half of every sparse layer is exactly zero
    weight = plain.model.layers[0].mlp.up_proj.weight
    assert float((weight == 0).float().mean()) >= 0.5
    assert torch.isfinite(weight).all()


def test_manifest_lineage_report_and_plots(compressed: tuple[Path, Path, dict]) -> None:
    from compressor.train import weights_hash

    dense, out, _ = compressed
    manifest = json.loads((out / "manifest.json").read_text())
    lineage = manifest["lineage"]
    assert lineage["base"]["content_hash"] == weights_hash(dense)
    assert lineage["train_sha256"] and lineage["eval_sha256"] and lineage["recipe"]["stages"][0]["type"] == "layer_drop"
    meta = json.loads((out / "model" / "finsignal.json").read_text())
    assert meta["lineage"]["chain"] == ["layer_drop", "prune", "sparsity_24", "quantize"]
    md = (out / "report.md").read_text()
    assert "| stage | accuracy | macro-F1 | agreement with dense | size on disk | peak memory | documents/s | p50 latency" in md
    for png in ("pareto_size.png", "pareto_latency.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_compress_report_rerenders_from_report_json(compressed: tuple[Path, Path, dict]) -> None:
    _, out, _ = compressed
    (out / "report.md").unlink()
    result = finsignal("compress", "report", str(out))
    assert result.returncode == 0, result.stderr
    assert "| dense_fp32 |" in result.stdout and (out / "report.md").is_file()


# ---- bad input: a clear error before anything is trained or written --------------------------------------


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize(
    ("rows", "error", "message"),
    [
        ([{"text": "a", "label": "bullish"}, {"text": "b", "label": "to the moon"}], DataError, "unknown label"),
        ([{"text": f"t{i}", "label": "bullish"} for i in range(5)], DataError, "needs at least|at least"),
        ([], DataError, "need at least"),
        ([{"text": f"t{i}", "label": ["bullish", "neutral"][i % 2]} for i in range(40)], DataError, "bearish"),
    ],
)
def test_bad_training_data_is_refused(tmp_path: Path, classifier_dir: Path, rows: list[dict], error: type,
                                      message: str) -> None:
    data = _jsonl(tmp_path / "train.jsonl", rows)
    with pytest.raises(error, match=message):
        prepare(classifier_dir, data, EVAL, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_tiny_eval_set_is_refused(tmp_path: Path, classifier_dir: Path) -> None:
    data = _jsonl(tmp_path / "eval.jsonl", [{"text": "x", "label": "neutral"}] * 3)
    with pytest.raises(DataError, match="report needs at least"):
        prepare(classifier_dir, TRAIN, data, tmp_path / "out")


def test_non_llama_and_pickle_checkpoints_are_refused(tmp_path: Path) -> None:
    gpt2 = tmp_path / "gpt2"
    gpt2.mkdir()
    (gpt2 / "config.json").write_text(json.dumps({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]}))
    (gpt2 / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    with pytest.raises(ModelError, match="not a LLaMA architecture"):
        prepare(gpt2, TRAIN, EVAL, tmp_path / "out")
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (pickled / "pytorch_model.bin").write_bytes(b"\x80\x04")
    with pytest.raises(ModelError, match="pickle checkpoints are refused"):
        prepare(pickled, TRAIN, EVAL, tmp_path / "out")


def test_a_classifier_with_other_labels_is_refused(tmp_path: Path, classifier_dir: Path) -> None:
    config = json.loads((classifier_dir / "config.json").read_text())
    config["id2label"] = {"0": "negative", "1": "neutral", "2": "positive"}
    (classifier_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match="unknown labels"):
        prepare(classifier_dir, TRAIN, EVAL, tmp_path / "out")


def test_a_causal_lm_needs_label_words(tmp_path: Path, classifier_dir: Path) -> None:
    config = json.loads((classifier_dir / "config.json").read_text())
    config["architectures"] = ["LlamaForCausalLM"]
    (classifier_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match="label word"):
        prepare(classifier_dir, TRAIN, EVAL, tmp_path / "out")


def test_more_pruning_than_the_model_has_fails_before_training(tmp_path: Path, classifier_dir: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text("stages: [{type: layer_drop, target_layers: 2}, {type: prune, attention_heads: 16}]\n")
    with pytest.raises(RecipeError, match="has only 8 query heads"):
        prepare(classifier_dir, TRAIN, EVAL, tmp_path / "out", recipe)
    recipe.write_text("comparisons: [{name: deep, stages: [{type: layer_drop, target_layers: 9}]}]\n")
    with pytest.raises(RecipeError, match="only 3 layers"):
        prepare(classifier_dir, TRAIN, EVAL, tmp_path / "out", recipe)


def test_a_non_empty_output_directory_is_not_overwritten(tmp_path: Path, classifier_dir: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    with pytest.raises(CompressError, match="not empty"):
        prepare(classifier_dir, TRAIN, EVAL, out)
    assert (out / "precious.txt").read_text() == "keep me"


def test_cli_reports_bad_input_as_an_error_line(tmp_path: Path, classifier_dir: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text("stages: [{type: prune, ffn: 4096}]\n")
    result = finsignal("compress", "run", "--model", str(classifier_dir), "--data", str(TRAIN), "--eval", str(EVAL),
                       "--out", str(tmp_path / "out"), "--recipe", str(recipe))
    assert result.returncode == 2
    assert "error:" in result.stderr and "only 96 channels" in result.stderr
