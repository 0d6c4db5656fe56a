"""Measure activations on calibration batches: the evidence every pruning decision is based on.

All statistics average over real tokens only (padding masked out) and are gathered with forward hooks on
an unmodified transformers model, so they work for any LLaMA-architecture checkpoint.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn


def calibration_batches(tokenizer: Any, texts: list[str], batch_size: int, max_length: int) -> list[dict[str, Any]]:
    """Padded batches of `texts`, sorted by length so that little compute goes to padding."""
    ordered = sorted(texts, key=len)
    batches = []
    for start in range(0, len(ordered), batch_size):
        enc = tokenizer(ordered[start : start + batch_size], padding=True, truncation=True,
                        max_length=max_length, return_tensors="pt")
        batches.append({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]})
    return batches


def decoder_layers(model: Any) -> nn.ModuleList:
    return model.model.layers


def linear_layers(model: Any) -> dict[str, nn.Linear]:
    """Every linear layer inside the decoder blocks, by qualified name (the score head is left out)."""
    return {
        f"model.layers.{i}.{name}": module
        for i, layer in enumerate(decoder_layers(model))
        for name, module in layer.named_modules()
        if isinstance(module, nn.Linear)
    }


class _Mask:
    """The attention mask of the batch currently running, for hooks to weight tokens with."""

    value: torch.Tensor | None = None

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """`x` [B, T, D] flattened to the real tokens' rows [N, D]."""
        assert self.value is not None
        return x.reshape(-1, x.shape[-1])[self.value.reshape(-1).bool()]


@contextmanager
def _hooks(handles: list[Any]) -> Iterator[None]:
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _run(model: Any, batches: list[dict[str, Any]], mask: _Mask) -> None:
    model.eval()
    with torch.inference_mode():
        for batch in batches:
            mask.value = batch["attention_mask"]
            model(**batch, use_cache=False)
    mask.value = None


def _hidden(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output


def output_shift(model: Any, batches: list[dict[str, Any]]) -> list[float]:
    """Per decoder layer, KL(model || model without that layer) of the label distribution, mean per text.

    The label-free task loss of bypassing a layer: what the classifier would lose, measured on what it
    says rather than on how much the layer turns the residual stream (which a fine-tuned head may ignore).
    """
    layers = decoder_layers(model)
    model.eval()

    def log_probs() -> list[torch.Tensor]:
        return [torch.log_softmax(model(**b, use_cache=False).logits.float(), dim=-1) for b in batches]

    scores = []
    with torch.inference_mode():
        full = log_probs()
        n = sum(f.shape[0] for f in full)
        for i in range(len(layers)):
            model.model.layers = nn.ModuleList(layer for j, layer in enumerate(layers) if j != i)
            try:
                kl = sum(float(torch.nn.functional.kl_div(s, f, log_target=True, reduction="sum"))
                         for s, f in zip(log_probs(), full))
            finally:
                model.model.layers = layers
            scores.append(kl / max(1, n))
    return scores


def layer_scores(model: Any, batches: list[dict[str, Any]], criterion: str) -> list[float]:
    """Per decoder layer, how much it matters: low means the layer can go.

    block_influence (ShortGPT): mean over tokens of 1 - cos(h_in, h_out).
    angular (Gromov et al.): mean over tokens of arccos(cos(h_in, h_out)) / pi.
    output_kl: KL divergence of the model's labels with the layer bypassed (`output_shift`).
    """
    if criterion == "output_kl":
        return output_shift(model, batches)
    mask = _Mask()
    layers = decoder_layers(model)
    sums = [0.0] * len(layers)
    count = [0] * len(layers)

    def hook(i: int) -> Any:
        def fn(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
            h_in = args[0] if args else kwargs["hidden_states"]
            cos = torch.nn.functional.cosine_similarity(
                mask.tokens(h_in).float(), mask.tokens(_hidden(output)).float(), dim=-1
            ).clamp(-1, 1)
            score = 1 - cos if criterion == "block_influence" else torch.arccos(cos) / torch.pi
            sums[i] += float(score.sum())
            count[i] += score.numel()

        return fn

    handles = [layer.register_forward_hook(hook(i), with_kwargs=True) for i, layer in enumerate(layers)]
    with _hooks(handles):
        _run(model, batches, mask)
    return [s / max(1, n) for s, n in zip(sums, count)]


def width_importance(model: Any, batches: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Activation-based importance (Minitron): attention heads, MLP channels and residual channels.

    heads [L, H]: mean L2 norm of each head's attention output (the input of o_proj).
    ffn [L, F]: mean |act(gate) * up| per channel (the input of down_proj).
    hidden [D]: mean |x| per residual channel after every RMSNorm, summed over norms.
    """
    mask = _Mask()
    layers = decoder_layers(model)
    n_layers = len(layers)
    attn = layers[0].self_attn
    heads, head_dim = model.config.num_attention_heads, attn.head_dim
    head_sum = torch.zeros(n_layers, heads, dtype=torch.float64)
    ffn_sum = torch.zeros(n_layers, layers[0].mlp.down_proj.in_features, dtype=torch.float64)
    hidden_sum = torch.zeros(model.config.hidden_size, dtype=torch.float64)
    tokens = [0]

    def o_proj_hook(i: int) -> Any:
        def fn(module: nn.Module, args: tuple) -> None:
            x = mask.tokens(args[0]).float().reshape(-1, heads, head_dim)
            head_sum[i] += x.norm(dim=-1).sum(0).double()
            if i == 0:
                tokens[0] += x.shape[0]

        return fn

    def down_hook(i: int) -> Any:
        def fn(module: nn.Module, args: tuple) -> None:
            ffn_sum[i] += mask.tokens(args[0]).float().abs().sum(0).double()

        return fn

    def norm_hook(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        hidden_sum.add_(mask.tokens(output).float().abs().sum(0).double())

    handles = []
    for i, layer in enumerate(layers):
        handles.append(layer.self_attn.o_proj.register_forward_pre_hook(o_proj_hook(i)))
        handles.append(layer.mlp.down_proj.register_forward_pre_hook(down_hook(i)))
        handles.append(layer.input_layernorm.register_forward_hook(norm_hook))
        handles.append(layer.post_attention_layernorm.register_forward_hook(norm_hook))
    handles.append(model.model.norm.register_forward_hook(norm_hook))
    with _hooks(handles):
        _run(model, batches, mask)
    n = max(1, tokens[0])
    return {"heads": (head_sum / n).float(), "ffn": (ffn_sum / n).float(), "hidden": (hidden_sum / n).float()}


def input_norms(model: Any, batches: list[dict[str, Any]], names: list[str]) -> dict[str, torch.Tensor]:
    """Per linear layer, the L2 norm of each input channel over all calibration tokens (Wanda's ||X_j||)."""
    mask = _Mask()
    modules = dict(model.named_modules())
    sq = {name: torch.zeros(modules[name].in_features, dtype=torch.float64) for name in names}

    def hook(name: str) -> Any:
        def fn(module: nn.Module, args: tuple) -> None:
            sq[name] += mask.tokens(args[0]).float().pow(2).sum(0).double()

        return fn

    handles = [modules[name].register_forward_pre_hook(hook(name)) for name in names]
    with _hooks(handles):
        _run(model, batches, mask)
    return {name: v.sqrt().float() for name, v in sq.items()}
