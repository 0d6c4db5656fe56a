"""The lean inference forward equals transformers' forward, and steps aside whenever it would not."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForSequenceClassification

from compressor.runtime.forward import LeanLlamaForSequenceClassification, classify
from compressor.runtime.int8 import fuse_projections
from compressor.stages.quantization.base import to_int8

PAD = 0


def _pair(int8: bool, **overrides: object) -> tuple[LlamaForSequenceClassification, LeanLlamaForSequenceClassification]:
    """The same random weights as transformers' class and as the lean one."""
    settings = dict(vocab_size=97, hidden_size=48, intermediate_size=80, num_hidden_layers=3, num_attention_heads=6,
                    num_key_value_heads=2, num_labels=3, pad_token_id=PAD, max_position_embeddings=64,
                    rms_norm_eps=1e-5)
    settings.update(overrides)
    config = LlamaConfig(**settings)
    torch.manual_seed(0)
    reference = LlamaForSequenceClassification(config).eval()
    lean = LeanLlamaForSequenceClassification(config).eval()
    lean.load_state_dict(reference.state_dict())
    for model in ((reference, lean) if int8 else ()):
        to_int8(model, embeddings=True)
        fuse_projections(model)
    return reference, lean


def _batch(padding: str) -> dict[str, torch.Tensor]:
    ids = torch.randint(1, 97, (4, 11), generator=torch.Generator().manual_seed(1))
    lengths = [11, 7, 3, 1]
    mask = torch.zeros_like(ids)
    for row, n in enumerate(lengths):
        if padding == "right":
            mask[row, :n] = 1
        else:
            mask[row, ids.shape[1] - n:] = 1
    return {"input_ids": ids.masked_fill(mask == 0, PAD), "attention_mask": mask}


@pytest.mark.parametrize("int8", [False, True], ids=["fp32", "int8"])
@pytest.mark.parametrize("padding", ["right", "left", "none"])
def test_lean_forward_equals_transformers(int8: bool, padding: str) -> None:
    reference, lean = _pair(int8)
    batch = _batch("right")
    if padding == "none":
        batch = {"input_ids": batch["input_ids"][:1], "attention_mask": batch["attention_mask"][:1]}
    else:
        batch = _batch(padding)
    with torch.inference_mode():
        expected = reference(**batch).logits
        got = lean(**batch, use_cache=False).logits
        assert lean.lean_applies(batch["input_ids"], {"use_cache": False})
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("padding", ["right", "left"])
def test_last_layer_at_the_pooled_token_alone(layers: int, padding: str) -> None:
    """The last layer runs for the pooled token only; at any depth (the first layer being the last too)."""
    reference, lean = _pair(int8=True, num_hidden_layers=layers)
    batch = _batch(padding)
    with torch.inference_mode():
        torch.testing.assert_close(lean(**batch).logits, reference(**batch).logits, rtol=1e-4, atol=1e-5)


def test_each_document_scores_the_same_alone_and_padded() -> None:
    _, lean = _pair(int8=False)
    batch = _batch("right")
    with torch.inference_mode():
        together = lean(**batch).logits
        for row, n in enumerate([11, 7, 3, 1]):
            alone = classify(lean, batch["input_ids"][row:row + 1, :n], batch["attention_mask"][row:row + 1, :n])
            torch.testing.assert_close(alone[0], together[row], rtol=1e-4, atol=1e-5)


def test_llama3_rope_scaling_and_explicit_head_dim() -> None:
    rope = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 16}
    reference, lean = _pair(int8=False, rope_parameters=rope, head_dim=16, tie_word_embeddings=True)
    batch = _batch("right")
    with torch.inference_mode():
        torch.testing.assert_close(lean(**batch).logits, reference(**batch).logits, rtol=1e-4, atol=1e-5)


def test_training_and_other_calls_take_transformers_path() -> None:
    reference, lean = _pair(int8=False)
    batch = _batch("right")
    lean.train()
    assert not lean.lean_applies(batch["input_ids"], {})
    labels = torch.tensor([0, 1, 2, 1])
    out = lean(**batch, labels=labels)  # labels: a loss, through transformers' forward
    out.loss.backward()
    assert lean.model.layers[0].mlp.down_proj.weight.grad is not None
    lean.eval()
    with torch.no_grad():
        assert not lean.lean_applies(batch["input_ids"], {"output_hidden_states": True})
        hidden = lean(**batch, output_hidden_states=True)
        assert hidden.hidden_states is not None and len(hidden.hidden_states) == 4
    with torch.inference_mode():
        assert lean.to(torch.bfloat16).lean_applies(batch["input_ids"], {}) is False
