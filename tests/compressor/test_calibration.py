"""Importance measurements: a layer or channel that does nothing scores lowest."""

from __future__ import annotations

import torch

from compressor.stages.calibration import input_norms, layer_scores, linear_layers, width_importance
from compressor.stages.layer_drop import choose_layers_to_drop
from tests.compressor.conftest import batch, make_classifier


def test_an_identity_layer_has_zero_influence_by_every_criterion() -> None:
    model = make_classifier(layers=3)
    with torch.no_grad():
        model.model.layers[1].self_attn.o_proj.weight.zero_()
        model.model.layers[1].mlp.down_proj.weight.zero_()
    batches = [batch(seed=s) for s in range(2)]
    layers = model.model.layers
    for criterion in ("block_influence", "angular", "output_kl"):
        scores = layer_scores(model, batches, criterion)
        assert scores[1] < 1e-4 < min(scores[0], scores[2]), criterion
        assert choose_layers_to_drop(scores, 1) == [1]
    assert model.model.layers is layers and len(layers) == 3  # the bypass probes leave the model whole


def test_output_kl_is_the_divergence_of_the_bypassed_model() -> None:
    model = make_classifier(layers=3).eval()
    b = batch(seed=0)
    scores = layer_scores(model, [b], "output_kl")
    with torch.no_grad():
        full = torch.log_softmax(model(**b).logits, -1)
        model.model.layers = torch.nn.ModuleList([model.model.layers[0], model.model.layers[2]])
        skipped = torch.log_softmax(model(**b).logits, -1)
    expected = float((full.exp() * (full - skipped)).sum(-1).mean())
    assert abs(scores[1] - expected) < 1e-5


def test_the_last_layer_is_never_chosen() -> None:
    assert choose_layers_to_drop([0.5, 0.4, 0.0], 1) == [1]


def test_silent_heads_and_channels_score_zero() -> None:
    model = make_classifier(heads=8, kv_heads=2, ffn=96)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.v_proj.weight[8:16] = 0  # kv head 1 -> query heads 4..7 output zero
            layer.mlp.up_proj.weight[5] = 0  # MLP channel 5 is always zero
    imp = width_importance(model, [batch()])
    assert imp["heads"].shape == (3, 8) and imp["ffn"].shape == (3, 96) and imp["hidden"].shape == (64,)
    assert float(imp["heads"][:, 4:].max()) < 1e-6 < float(imp["heads"][:, :4].min())
    assert float(imp["ffn"][:, 5].max()) < 1e-6


def test_wanda_norms_ignore_padding() -> None:
    model = make_classifier(layers=1)
    names = list(linear_layers(model))
    b = batch(n=2)
    full = input_norms(model, [b], names)
    padded = dict(b)
    padded["input_ids"] = torch.cat([b["input_ids"], torch.zeros(2, 5, dtype=torch.long)], 1)
    padded["attention_mask"] = torch.cat([b["attention_mask"], torch.zeros(2, 5, dtype=torch.long)], 1)
    torch.testing.assert_close(input_norms(model, [padded], names)[names[0]], full[names[0]], rtol=1e-4, atol=1e-5)


def test_the_last_layer_goes_when_allowed_and_least_important() -> None:
    assert choose_layers_to_drop([0.5, 0.4, 0.0], 1, protect_last=False) == [2]
    assert choose_layers_to_drop([0.5, 0.1, 0.3, 0.2], 2) == [1, 2]  # index 3 scores lower but is last
