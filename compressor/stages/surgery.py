"""Structural edits of a transformers LLaMA model that leave a standard `LlamaConfig` behind.

Every function edits the model in place and updates `model.config` to match, so `save_pretrained` writes a
checkpoint any LLaMA loader reads: fewer layers, fewer heads (whole grouped-query groups, or the same
number of query heads in every group), a narrower MLP, or a narrower residual stream. `head_dim` is
written explicitly whenever it no longer equals hidden_size / num_attention_heads.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn


def _linear(old: nn.Linear, weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    new = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, dtype=weight.dtype)
    with torch.no_grad():
        new.weight.copy_(weight)
        if bias is not None:
            new.bias.copy_(bias)
    new.train(old.training)
    return new


def _rows(linear: nn.Linear, keep: torch.Tensor) -> nn.Linear:
    """Keep output channels `keep`."""
    bias = linear.bias[keep] if linear.bias is not None else None
    return _linear(linear, linear.weight[keep], bias)


def _cols(linear: nn.Linear, keep: torch.Tensor) -> nn.Linear:
    """Keep input channels `keep`."""
    return _linear(linear, linear.weight[:, keep], linear.bias)


def drop_layers(model: Any, drop: Sequence[int]) -> None:
    """Remove decoder layers by index and renumber the rest."""
    layers = model.model.layers
    drop_set = set(drop)
    if not drop_set <= set(range(len(layers))):
        raise IndexError(f"layers {sorted(drop_set)} out of range for {len(layers)} layers")
    kept = [layer for i, layer in enumerate(layers) if i not in drop_set]
    if not kept:
        raise ValueError("cannot drop every layer")
    model.model.layers = nn.ModuleList(kept)
    for i, layer in enumerate(kept):
        layer.self_attn.layer_idx = i
    config = model.config
    layer_types = getattr(config, "layer_types", None)
    if layer_types:
        config.layer_types = [t for i, t in enumerate(layer_types) if i not in drop_set]
    config.num_hidden_layers = len(kept)


def _set_head_dim(config: Any, head_dim: int) -> None:
    config.head_dim = head_dim


def prune_heads(model: Any, keep_groups: list[list[int]], keep_in_group: list[list[list[int]]]) -> None:
    """Keep, in layer l, kv heads `keep_groups[l]` and within each kept group g the query heads
    `keep_in_group[l][k]` (indices inside the group). Every layer keeps the same counts."""
    config = model.config
    group = config.num_attention_heads // config.num_key_value_heads
    counts = {(len(g), len(q[0]) if q else 0) for g, q in zip(keep_groups, keep_in_group)}
    if len(counts) != 1:
        raise ValueError(f"every layer must keep the same number of heads, got {sorted(counts)}")
    for l, layer in enumerate(model.model.layers):
        attn = layer.self_attn
        d = attn.head_dim
        q_heads = [g * group + j for k, g in enumerate(keep_groups[l]) for j in keep_in_group[l][k]]
        q_idx = torch.tensor([h * d + i for h in q_heads for i in range(d)])
        kv_idx = torch.tensor([g * d + i for g in keep_groups[l] for i in range(d)])
        attn.q_proj = _rows(attn.q_proj, q_idx)
        attn.k_proj = _rows(attn.k_proj, kv_idx)
        attn.v_proj = _rows(attn.v_proj, kv_idx)
        attn.o_proj = _cols(attn.o_proj, q_idx)
        n_groups, per_group = len(keep_groups[l]), len(keep_in_group[l][0])
        attn.num_key_value_groups = per_group
        if hasattr(attn, "num_heads"):
            attn.num_heads = n_groups * per_group
        if hasattr(attn, "num_key_value_heads"):
            attn.num_key_value_heads = n_groups
    head_dim = model.model.layers[0].self_attn.head_dim
    n_groups, per_group = len(keep_groups[0]), len(keep_in_group[0][0])
    _set_head_dim(config, head_dim)
    config.num_attention_heads = n_groups * per_group
    config.num_key_value_heads = n_groups


def prune_ffn(model: Any, keep: list[torch.Tensor]) -> None:
    """Keep MLP intermediate channels `keep[l]` in layer l (same count everywhere)."""
    if len({len(k) for k in keep}) != 1:
        raise ValueError("every layer must keep the same number of MLP channels")
    for layer, idx in zip(model.model.layers, keep):
        mlp = layer.mlp
        mlp.gate_proj = _rows(mlp.gate_proj, idx)
        mlp.up_proj = _rows(mlp.up_proj, idx)
        mlp.down_proj = _cols(mlp.down_proj, idx)
        if hasattr(mlp, "intermediate_size"):
            mlp.intermediate_size = len(idx)
    model.config.intermediate_size = len(keep[0])


def prune_hidden(model: Any, keep: torch.Tensor) -> None:
    """Keep residual-stream channels `keep` everywhere: embeddings, norms, every projection, score head."""
    config = model.config
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    emb = model.model.embed_tokens
    new_emb = nn.Embedding(emb.num_embeddings, len(keep), padding_idx=emb.padding_idx, dtype=emb.weight.dtype)
    with torch.no_grad():
        new_emb.weight.copy_(emb.weight[:, keep])
    model.model.embed_tokens = new_emb

    def norm(n: nn.Module) -> None:
        n.weight = nn.Parameter(n.weight.detach()[keep].clone())

    for layer in model.model.layers:
        attn, mlp = layer.self_attn, layer.mlp
        attn.q_proj, attn.k_proj, attn.v_proj = (_cols(p, keep) for p in (attn.q_proj, attn.k_proj, attn.v_proj))
        attn.o_proj = _rows(attn.o_proj, keep)
        mlp.gate_proj, mlp.up_proj = _cols(mlp.gate_proj, keep), _cols(mlp.up_proj, keep)
        mlp.down_proj = _rows(mlp.down_proj, keep)
        if hasattr(mlp, "hidden_size"):
            mlp.hidden_size = len(keep)
        norm(layer.input_layernorm)
        norm(layer.post_attention_layernorm)
    norm(model.model.norm)
    model.score = _cols(model.score, keep)
    _set_head_dim(config, head_dim)  # head_dim no longer follows from hidden_size
    config.hidden_size = len(keep)
