"""Structural edits keep a standard LlamaConfig and compute exactly what the unpruned model computes
whenever the removed part contributed nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from compressor.stages.prune import select_heads
from compressor.stages.surgery import drop_layers, prune_ffn, prune_heads, prune_hidden
from tests.compressor.conftest import batch, make_classifier


def logits(model, b):
    with torch.inference_mode():
        return model(**b).logits


def roundtrip(model, tmp_path: Path):
    """Save and reload with plain transformers: the edited config must describe the weights."""
    from transformers import LlamaForSequenceClassification

    model.save_pretrained(tmp_path / "m", safe_serialization=True)
    return LlamaForSequenceClassification.from_pretrained(tmp_path / "m").eval()


def test_dropping_an_identity_layer_changes_nothing(tmp_path: Path) -> None:
    model = make_classifier(layers=3)
    layer = model.model.layers[1]
    with torch.no_grad():  # a layer whose attention and MLP write nothing to the residual stream
        layer.self_attn.o_proj.weight.zero_()
        layer.mlp.down_proj.weight.zero_()
    b = batch()
    before = logits(model, b)

    drop_layers(model, [1])

    assert model.config.num_hidden_layers == 2
    assert [l.self_attn.layer_idx for l in model.model.layers] == [0, 1]
    torch.testing.assert_close(logits(model, b), before)
    torch.testing.assert_close(logits(roundtrip(model, tmp_path), b), before)


def test_dropping_every_layer_is_refused() -> None:
    model = make_classifier(layers=2)
    with pytest.raises(ValueError, match="every layer"):
        drop_layers(model, [0, 1])


def test_pruning_silent_query_heads_keeps_outputs_and_gqa_groups(tmp_path: Path) -> None:
    model = make_classifier(heads=8, kv_heads=2)  # 2 groups of 4 query heads, head_dim 8
    d = 8
    with torch.no_grad():  # heads 1, 3, 5, 6 write nothing: zero their o_proj input columns
        for layer in model.model.layers:
            for head in (1, 3, 5, 6):
                layer.self_attn.o_proj.weight[:, head * d : (head + 1) * d] = 0
    b = batch()
    before = logits(model, b)
    keep_groups = [[0, 1]] * 3
    keep_in_group = [[[0, 2], [0, 3]]] * 3  # heads 0, 2 of group 0 and heads 4, 7 of group 1

    prune_heads(model, keep_groups, keep_in_group)

    assert (model.config.num_attention_heads, model.config.num_key_value_heads, model.config.head_dim) == (4, 2, 8)
    torch.testing.assert_close(logits(model, b), before)
    torch.testing.assert_close(logits(roundtrip(model, tmp_path), b), before)


def test_pruning_a_whole_silent_kv_group(tmp_path: Path) -> None:
    model = make_classifier(heads=8, kv_heads=2)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight[:, 32:] = 0  # group 1 (heads 4..7) silent
    b = batch()
    before = logits(model, b)

    prune_heads(model, [[0]] * 3, [[[0, 1, 2, 3]]] * 3)

    assert (model.config.num_attention_heads, model.config.num_key_value_heads) == (4, 1)
    torch.testing.assert_close(logits(roundtrip(model, tmp_path), b), before)


def test_pruning_silent_mlp_channels(tmp_path: Path) -> None:
    model = make_classifier(ffn=96)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.mlp.down_proj.weight[:, 48:] = 0
    b = batch()
    before = logits(model, b)

    prune_ffn(model, [torch.arange(48)] * 3)

    assert model.config.intermediate_size == 48
    torch.testing.assert_close(logits(roundtrip(model, tmp_path), b), before)


def test_hidden_pruning_writes_head_dim_and_reloads(tmp_path: Path) -> None:
    model = make_classifier(hidden=64, heads=8, kv_heads=2)
    b = batch()

    prune_hidden(model, torch.arange(0, 64, 2))

    assert model.config.hidden_size == 32 and model.config.head_dim == 8
    reloaded = roundtrip(model, tmp_path)
    torch.testing.assert_close(logits(reloaded, b), logits(model, b))


def test_select_heads_keeps_best_groups_then_best_heads_inside() -> None:
    importance = torch.tensor([1.0, 5.0, 0.1, 0.2, 9.0, 0.5, 3.0, 0.4])  # groups [1,5,.1,.2] and [9,.5,3,.4]
    groups, inside = select_heads(importance, kv_heads=2, n_groups=1, per_group=2)
    assert groups == [1] and inside == [[0, 2]]
    groups, inside = select_heads(importance, kv_heads=2, n_groups=2, per_group=1)
    assert groups == [0, 1] and inside == [[1], [0]]
