"""The mechanics on a randomly initialised model shaped like Llama-3.2-1B (no download).

Full width: hidden 2048, 32 query heads in 8 grouped-query groups (head_dim 64), MLP 8192, vocabulary
128,256 with tied input/output embeddings, llama3 rope scaling. Depth is cut from 16 to 2 layers so the
test fits a shared 2-core CI box (about 1.5 GB of float32 weights); every code path is the same per layer.
The input is a causal LM: it becomes a classifier through one label word per class.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from compressor.pipeline import compress_run
from finsignal.demo import sample_corpus

pytestmark = pytest.mark.slow

LLAMA_32_1B = dict(
    vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_attention_heads=32, num_key_value_heads=8,
    head_dim=64, max_position_embeddings=131072, rms_norm_eps=1e-5, tie_word_embeddings=True,
    rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0, "high_freq_factor": 4.0,
                     "low_freq_factor": 1.0, "original_max_position_embeddings": 8192},
)

RECIPE = """
distill: {enabled: false}
calibration: {examples: 16, batch_size: 8}
evaluation: {isolated: false, side_by_side: false, throughput_rounds: 1, latency_samples: 2, max_examples: 16}
baselines: []
comparisons: []
stages:
  - {type: layer_drop, target_layers: 1, mode: one_shot, finetune: {epochs: 0}}
  - {type: prune, attention_heads: 16, kv_heads: 8, ffn: 4096, finetune: {epochs: 0}}
  - {type: sparsity_24, mask: wanda, finetune: {epochs: 0}}
  - {type: quantize, mode: ptq}
"""


@pytest.fixture(scope="module")
def llama3_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    from compressor.data import load_corpus
    from compressor.train import train_tokenizer

    train_path, _ = sample_corpus()
    texts = load_corpus(train_path).texts + ["bearish bullish neutral"] * 50  # label words become tokens
    tokenizer = train_tokenizer(texts, 600, 64)
    torch.manual_seed(0)
    config = LlamaConfig(num_hidden_layers=2, pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, **LLAMA_32_1B)
    model = LlamaForCausalLM(config)
    out = tmp_path_factory.mktemp("llama3") / "llama-3.2-1b-shaped"
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    del model
    return out


def test_llama_3_2_1b_shaped_model_compresses_to_a_standard_checkpoint(llama3_dir: Path, tmp_path: Path) -> None:
    from transformers import LlamaForSequenceClassification

    from compressor.runtime.int8 import FusedInt8
    from compressor.runtime.loader import load_classifier

    train_path, eval_path = sample_corpus()
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(RECIPE)
    out = tmp_path / "out"

    report = compress_run(llama3_dir, train_path, eval_path, out, recipe, label_words=["bearish", "neutral", "bullish"],
                          progress=False)

    config = json.loads((out / "model" / "config.json").read_text())
    assert config["architectures"] == ["LlamaForSequenceClassification"]
    assert (config["num_hidden_layers"], config["num_attention_heads"], config["num_key_value_heads"],
            config["head_dim"], config["intermediate_size"], config["hidden_size"]) == (1, 16, 8, 64, 4096, 2048)
    assert config["rope_parameters"]["rope_type"] == "llama3" and config["rope_parameters"]["factor"] == 32.0
    plain = LlamaForSequenceClassification.from_pretrained(out / "model")
    assert plain.model.embed_tokens.weight.shape == (128256, 2048)
    verification = report["outputs"]["w8a8"]["verification"]
    assert verification["mismatched"] == [] and verification["layers"] == 7
    int8 = load_classifier(out / "w8a8")
    assert sum(isinstance(m, FusedInt8) for m in int8.modules()) == 2
    rows = {r["name"]: r for r in report["rows"]}
    from compressor.runtime.int8 import INT8_KERNEL

    # FBGEMM's packed copy or the fp32 copy of the (one layer's) int8 grid is counted beside the int8 values
    assert rows["quantize"]["model_bytes"] < rows["dense_fp32"]["model_bytes"] / (4 if INT8_KERNEL == "int_mm" else 3)
    drops = json.loads((out / "manifest.json").read_text())["stages"]["layer_drop"]["details"]["drops"]
    assert drops[0]["dropped"] == [0]  # the last layer is protected; the first one goes
