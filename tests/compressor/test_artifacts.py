"""Every artifact kind round-trips: what the runtime loads computes what was in memory when saved."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from compressor import artifacts
from compressor.runtime.int8 import FusedInt8, Int8Linear
from compressor.runtime.loader import artifact_kind, load_classifier
from compressor.stages.calibration import linear_layers
from compressor.stages.lowrank.base import factorize
from compressor.stages.quantization import to_int8
from compressor.stages.weight_sharing import kmeans_1d
from compressor.runtime.lowrank import LowRankLinear
from compressor.runtime.sparse24 import mask_24
from tests.compressor.conftest import batch, make_classifier

LINEAGE = {"base": "test"}


def logits(model: Any, vocab: int) -> torch.Tensor:
    with torch.inference_mode():
        return model(**batch(vocab=vocab)).logits


@pytest.fixture
def model(sample_tokenizer: Any) -> Any:
    return make_classifier(vocab=len(sample_tokenizer), tied=False)


def test_w8a8_export_is_compressed_tensors_and_runs_on_int8_kernels(tmp_path: Path, model: Any,
                                                                    sample_tokenizer: Any) -> None:
    vocab = len(sample_tokenizer)
    to_int8(model)
    out = tmp_path / "w8a8"

    artifacts.save_w8a8(model, sample_tokenizer, out, name="t", lineage=LINEAGE, max_length=64, int8_embeddings=False)
    check = artifacts.verify_w8a8(out, model)
    loaded = load_classifier(out)

    config = json.loads((out / "config.json").read_text())
    assert config["quantization_config"]["quant_method"] == "compressed-tensors"
    assert config["quantization_config"]["format"] == "int-quantized"
    assert check["mismatched"] == [] and check["decompressed_max_abs_error"] < 1e-6
    assert check["layers"] == 21 and "token" in check["activations"] and "channel" in check["weights"]
    assert artifact_kind(out) == "w8a8"
    # per layer: q/k/v fused into one int8 GEMM, gate/up into another, o and down on their own
    assert sum(isinstance(m, FusedInt8) for m in loaded.modules()) == 6
    assert sum(isinstance(m, Int8Linear) for m in loaded.modules()) == 6
    torch.testing.assert_close(logits(loaded, vocab), logits(model, vocab), rtol=1e-3, atol=2e-3)


def test_w8a8_export_loads_in_plain_transformers_with_compressed_tensors(tmp_path: Path, model: Any,
                                                                         sample_tokenizer: Any) -> None:
    from transformers import LlamaForSequenceClassification

    vocab = len(sample_tokenizer)
    to_int8(model)
    artifacts.save_w8a8(model, sample_tokenizer, tmp_path, name="t", lineage=LINEAGE, max_length=64,
                        int8_embeddings=False)
    hf = LlamaForSequenceClassification.from_pretrained(tmp_path, dtype=torch.float32).eval()
    # transformers + compressed-tensors fake-quantize activations in float, with their own rounding of the
    # per-token scale (int8 range [-128, 127]); the two must agree to int8 precision, not bit for bit
    theirs, ours = logits(hf, vocab), logits(model, vocab)
    assert float((theirs - ours).abs().max()) < 0.05 * float(ours.abs().max())
    assert torch.equal(theirs.argmax(-1), ours.argmax(-1))


def test_plain_checkpoint_of_a_quantized_model_holds_the_int8_grid(tmp_path: Path, model: Any,
                                                                   sample_tokenizer: Any) -> None:
    from transformers import LlamaForSequenceClassification

    to_int8(model)
    artifacts.save_hf(model, sample_tokenizer, tmp_path, name="t", lineage=LINEAGE, max_length=64)
    hf = LlamaForSequenceClassification.from_pretrained(tmp_path)
    name, layer = next((n, m) for n, m in model.named_modules() if isinstance(m, Int8Linear))
    torch.testing.assert_close(hf.get_submodule(name).weight, layer.dequantized_weight())
    meta = json.loads((tmp_path / "finsignal.json").read_text())
    assert meta["runtime"]["kind"] == "hf" and meta["lineage"] == LINEAGE and len(meta["content_hash"]) == 64


@pytest.mark.parametrize("quantized", [False, True])
def test_sparse24_storage_round_trip(tmp_path: Path, model: Any, sample_tokenizer: Any, quantized: bool) -> None:
    vocab = len(sample_tokenizer)
    masks = {}
    with torch.no_grad():
        for name, linear in linear_layers(model).items():
            masks[name] = mask_24(linear.weight.abs())
            linear.weight.mul_(masks[name])
    if quantized:
        to_int8(model)
    dense_bytes = sum(l.weight.numel() for l in linear_layers(make_classifier(vocab=vocab)).values())

    artifacts.save_sparse24(model, masks, sample_tokenizer, tmp_path, name="t", lineage=LINEAGE, max_length=64)
    loaded = load_classifier(tmp_path)

    torch.testing.assert_close(logits(loaded, vocab), logits(model, vocab), rtol=1e-4, atol=1e-4)
    from safetensors import safe_open

    with safe_open(str(tmp_path / "model.sparse24.safetensors"), "pt") as fh:
        stored = sum(fh.get_tensor(k).numel() * fh.get_tensor(k).element_size()
                     for k in fh.keys() if k.endswith((".values", ".meta")))
    per_weight = 0.625 if quantized else 2.125
    assert stored == int(dense_bytes * per_weight)


def test_lowrank_and_kmeans_round_trip(tmp_path: Path, model: Any, sample_tokenizer: Any) -> None:
    vocab = len(sample_tokenizer)
    low = make_classifier(vocab=vocab)
    for name, linear in linear_layers(low).items():
        down, up = factorize(linear.weight, 4)
        parent, _, child = name.rpartition(".")
        setattr(low.get_submodule(parent), child, LowRankLinear(down, up))
    artifacts.save_lowrank(low, sample_tokenizer, tmp_path / "low", name="t", lineage=LINEAGE, max_length=64)
    torch.testing.assert_close(logits(load_classifier(tmp_path / "low"), vocab), logits(low, vocab))

    tables = {}
    with torch.no_grad():
        for name, linear in linear_layers(model).items():
            codebook, idx = kmeans_1d(linear.weight, 16)
            linear.weight.copy_(codebook[idx.long()])
            tables[name] = (codebook, idx)
    artifacts.save_kmeans(model, tables, sample_tokenizer, tmp_path / "km", name="t", lineage=LINEAGE, max_length=64)
    torch.testing.assert_close(logits(load_classifier(tmp_path / "km"), vocab), logits(model, vocab))
    assert artifact_kind(tmp_path / "km") == "kmeans"


def test_w8a8_export_stores_int8_embedding_rows(tmp_path: Path, model: Any, sample_tokenizer: Any) -> None:
    from safetensors import safe_open

    from compressor.runtime.int8 import Int8Embedding
    from compressor.runtime.loader import EMBEDDING_FILE, vllm_directory

    vocab = len(sample_tokenizer)
    to_int8(model, embeddings=True)
    assert isinstance(model.model.embed_tokens, Int8Embedding)
    out = tmp_path / "w8a8"
    artifacts.save_w8a8(model, sample_tokenizer, out, name="t", lineage=LINEAGE, max_length=64, int8_embeddings=True)
    artifacts.verify_w8a8(out, model)

    with safe_open(str(out / "model.safetensors"), "pt") as fh:
        assert "model.embed_tokens.weight" not in fh.keys()
    with safe_open(str(out / EMBEDDING_FILE), "pt") as fh:
        assert fh.get_tensor("model.embed_tokens.qweight").dtype == torch.int8
        assert fh.get_tensor("model.embed_tokens.scale").numel() == vocab
    # one byte a row entry on disk, against two for the bf16 table it replaces
    assert (out / EMBEDDING_FILE).stat().st_size < vocab * model.config.hidden_size * 1.1 + 4 * vocab + 1024
    loaded = load_classifier(out)
    assert isinstance(loaded.model.embed_tokens, Int8Embedding)
    assert torch.equal(loaded.model.embed_tokens.qweight, model.model.embed_tokens.qweight)
    torch.testing.assert_close(logits(loaded, vocab), logits(model, vocab), rtol=1e-3, atol=2e-3)

    # vLLM reads plain safetensors: a view holds the rows dequantized to bf16, everything else linked
    view = vllm_directory(out, tmp_path / "cache")
    assert view != out and vllm_directory(out, tmp_path / "cache") == view  # built once
    assert not (view / EMBEDDING_FILE).exists() and (view / "model.safetensors").resolve() == out / "model.safetensors"
    with safe_open(str(view / "embed_tokens.safetensors"), "pt") as fh:
        table = fh.get_tensor("model.embed_tokens.weight")
    assert table.dtype == torch.bfloat16
    torch.testing.assert_close(table.float(), model.model.embed_tokens.weight.to(torch.bfloat16).float())
    bf16_export = tmp_path / "bf16-rows"
    artifacts.save_w8a8(model, sample_tokenizer, bf16_export, name="t", lineage=LINEAGE, max_length=64,
                        int8_embeddings=False)
    assert vllm_directory(bf16_export, tmp_path / "cache") == bf16_export.resolve()  # nothing to convert
