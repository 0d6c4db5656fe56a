"""Backends: zero-shot prompt mode on a causal LLaMA, and a clear refusal when vLLM is missing."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from compressor.train import train_tokenizer
from signals.backends import load_backend
from signals.model import ModelLoadError
from signals.settings import WorkerSettings


@pytest.fixture(scope="module")
def causal_dir(tmp_path_factory):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    texts = ["the outlook is bearish", "the outlook is neutral", "the outlook is bullish"] * 50 + [
        "Apple beats estimates", "Intel misses estimates", "Board meets on Tuesday"] * 20
    tokenizer = train_tokenizer(texts, vocab_size=400, max_length=256)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=True)
    out = tmp_path_factory.mktemp("causal")
    LlamaForCausalLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def test_prompt_mode_scores_label_words_and_is_batch_invariant(causal_dir):
    model = load_backend(causal_dir, WorkerSettings(mode="prompt"))
    texts = ["Apple beats estimates", "Intel misses estimates by a wide margin this quarter", "Board meets"]
    pieces = [chunks[0] for chunks in model.encode_chunks(texts, overlap=8)]
    together = model.score_ids(pieces)
    alone = np.stack([model.score_ids([p])[0] for p in pieces])
    np.testing.assert_allclose(together.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(together, alone, atol=1e-4)
    assert model.info.version.startswith("prompt-")


def test_prompt_mode_refuses_ambiguous_label_words(tiny_model_dir):
    # This tokenizer splits " bearish" and " bullish" into pieces starting with the same token.
    with pytest.raises(ModelLoadError, match="share a first token"):
        load_backend(tiny_model_dir, WorkerSettings(mode="prompt"))


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here")
def test_vllm_backend_without_vllm_says_how_to_get_it(tiny_model_dir):
    with pytest.raises(ModelLoadError, match=r"finsignal\[gpu\]"):
        load_backend(tiny_model_dir, WorkerSettings(backend="vllm"))


@pytest.mark.requires_gpu
@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vLLM is not installed")
def test_vllm_classifier_matches_transformers(tiny_model_dir):
    from signals.model import SentimentModel

    cpu = SentimentModel.load(tiny_model_dir)
    gpu = load_backend(tiny_model_dir, WorkerSettings(backend="vllm"))
    texts = ["Apple beats estimates", "Intel misses estimates"]
    pieces = [c[0] for c in cpu.encode_chunks(texts, 0)]
    np.testing.assert_allclose(gpu.score_ids(pieces), cpu.score_ids(pieces), atol=2e-2)
