"""`compress run` mechanics on a classifier shaped like one fine-tuned from SmolLM2: its real 49k-token
tokenizer (pad == eos, no BOS/EOS added, 8192-token context), 2 layers of width 64; the worker loads the outputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from compressor.pipeline import compress_run
from finsignal.demo import sample_corpus
from signals.model import SentimentModel
from tests.pretrained import write_pretrained_classifier

RECIPE = """
distill: {enabled: false}
calibration: {examples: 32, batch_size: 16}
evaluation: {isolated: false, side_by_side: false, throughput_rounds: 1, latency_samples: 2, max_examples: 32}
baselines: []
comparisons: []
stages:
  - {type: layer_drop, target_layers: 1, mode: one_shot, criterion: output_kl, finetune: {epochs: 0}}
  - {type: prune, attention_heads: 2, kv_heads: 1, ffn: 64, finetune: {epochs: 0}}
  - {type: quantize, mode: ptq}
"""


@pytest.fixture(scope="module")
def compressed(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("pretrained-compress")
    dense = write_pretrained_classifier(root / "dense")
    (root / "recipe.yaml").write_text(RECIPE)
    train_path, eval_path = sample_corpus()
    report = compress_run(dense, train_path, eval_path, root / "out", root / "recipe.yaml", progress=False)
    return root / "out", report


def test_compress_run_keeps_the_vocabulary_and_special_tokens(compressed):
    out, report = compressed
    rows = {r["name"]: r for r in report["rows"]}
    assert {"dense_fp32", "layer_drop", "prune", "quantize"} <= set(rows)
    assert rows["quantize"]["model_bytes"] < rows["dense_fp32"]["model_bytes"] / 3
    config = json.loads((out / "model" / "config.json").read_text())
    assert (config["vocab_size"], config["num_hidden_layers"], config["pad_token_id"]) == (49152, 1, 2)
    tok_config = json.loads((out / "model" / "tokenizer_config.json").read_text())
    assert (tok_config["bos_token"], tok_config["eos_token"], tok_config["pad_token"]) == (
        "<|im_start|>", "<|im_end|>", "<|im_end|>")


@pytest.mark.parametrize("artifact", ["model", "w8a8"])
def test_the_worker_serves_the_compressed_outputs(compressed, artifact):
    out, _ = compressed
    model = SentimentModel.load(out / artifact)
    assert len(model.tokenizer) == 49152 and model.max_length <= 512
    texts = ["Apple beats estimates and raises guidance", "Intel misses", "Board meets on Tuesday " * 40]
    ids = model.encode(texts)
    together = model.score_ids(ids)
    alone = np.stack([model.score_ids([i])[0] for i in ids])
    np.testing.assert_allclose(together, alone, atol=1e-4)
    np.testing.assert_allclose(together.sum(axis=1), 1.0, atol=1e-5)
