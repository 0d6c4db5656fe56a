"""Small random LLaMA classifiers (grouped-query attention, as in LLaMA 3) for compressor unit tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from compressor.data import LABELS


def make_classifier(
    *, layers: int = 3, hidden: int = 64, heads: int = 8, kv_heads: int = 2, ffn: int = 96, vocab: int = 300,
    seed: int = 0, tied: bool = False, rope_scaling: dict[str, Any] | None = None,
) -> Any:
    """A randomly initialised `LlamaForSequenceClassification` in eval mode (float32)."""
    import torch
    from transformers import LlamaConfig, LlamaForSequenceClassification

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=ffn, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=256,
        tie_word_embeddings=tied, pad_token_id=0, bos_token_id=1, eos_token_id=2, use_cache=False,
        num_labels=3, id2label=dict(enumerate(LABELS)), label2id={l: i for i, l in enumerate(LABELS)},
        rope_scaling=rope_scaling,
    )
    model = LlamaForSequenceClassification(config).eval()
    with torch.no_grad():  # random init is tiny; larger weights make every layer matter in the tests
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.08)
    return model


def batch(vocab: int = 300, n: int = 4, length: int = 12, seed: int = 1) -> dict[str, Any]:
    """Right-padded token ids and mask; the last row is shorter so padding is exercised."""
    import torch

    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (n, length), generator=g)
    mask = torch.ones_like(ids)
    ids[-1, length // 2 :] = 0
    mask[-1, length // 2 :] = 0
    return {"input_ids": ids, "attention_mask": mask}


@pytest.fixture(scope="session")
def sample_tokenizer() -> Any:
    """A BPE tokenizer trained on the shipped sample corpus."""
    from compressor.data import load_corpus
    from compressor.train import train_tokenizer
    from finsignal.demo import sample_corpus

    train_path, _ = sample_corpus()
    return train_tokenizer(load_corpus(train_path).texts, 300, 64)


@pytest.fixture
def classifier_dir(tmp_path: Path, sample_tokenizer: Any) -> Path:
    """A random 3-layer GQA classifier saved as a checkpoint with the sample tokenizer."""
    model = make_classifier(vocab=len(sample_tokenizer))
    out = tmp_path / "dense"
    model.save_pretrained(out, safe_serialization=True)
    sample_tokenizer.save_pretrained(out)
    return out
