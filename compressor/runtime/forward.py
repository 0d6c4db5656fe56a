"""A lean inference forward for LLaMA sequence classifiers: the same modules in fewer operations.

At a sentence's ~30 tokens a small LLaMA's forward on CPU is dominated by per-operation overhead, not by
arithmetic: transformers' generic decoder (cache plumbing, mask factories, one Python module call per norm
and projection, rotary embeddings applied to queries and keys apart, every position scored) costs more
than the int8 GEMMs it wraps. `classify` runs the same weights through fewer, fused operations: fused
norms (`F.rms_norm`), one GEMM per fused q/k/v and gate/up group, rotary embeddings on queries and keys at
once (read as one view of the fused GEMM's output, rotate_half's sign folded into the sine table once per
call), grouped-query attention inside SDPA. Only the pooled token reaches the score head, so the last
layer computes its query, attention output and MLP for that token alone, and the final norm and head too.

`LeanLlamaForSequenceClassification` takes that path for inference calls (eval mode, no gradients, fp32,
token ids in, logits out) and transformers' own forward for everything else (training, caches, labels,
other dtypes), so it is a drop-in class for the runtime loader. Its output equals transformers' to float
rounding on padded and unpadded batches (tests/compressor/test_forward.py).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import LlamaForSequenceClassification
from transformers.modeling_outputs import SequenceClassifierOutputWithPast

_PASSIVE = {"use_cache": (None, False), "return_dict": (None, True)}  # keywords the lean path honours as given


def _projections(block: nn.Module, fused: str, names: tuple[str, ...], x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The outputs of `names` on x [N, hidden]: one GEMM when the block holds their fused int8 group."""
    group = getattr(block, fused, None)
    if group is not None:
        return group.project(x)
    return tuple(getattr(block, n)(x) for n in names)


def _mask(attention_mask: torch.Tensor | None, length: int) -> torch.Tensor | None:
    """SDPA's boolean mask [B, 1, T, T] for a padded batch; None when no position is padding (causal flag).

    Every query may also see itself: a padding query otherwise has no key at all and SDPA returns NaN for
    it, which would reach real tokens through the next layer's values (weight 0 times NaN is NaN).
    """
    if attention_mask is None or bool(attention_mask.all()):
        return None
    causal = torch.ones(length, length, dtype=torch.bool, device=attention_mask.device).tril_()
    mask = causal & attention_mask.bool()[:, None, None, :]
    return mask | torch.eye(length, dtype=torch.bool, device=attention_mask.device)


def _pooled_mask(attention_mask: torch.Tensor | None, last: torch.Tensor, length: int) -> torch.Tensor | None:
    """SDPA's boolean mask [B, 1, 1, T] for one query per row at its pooled position; None when it sees all."""
    keys = torch.arange(length, device=last.device) <= last[:, None]
    if attention_mask is not None:
        keys &= attention_mask.bool()
    return None if bool(keys.all()) else keys[:, None, None, :]


def _last_tokens(model: Any, input_ids: torch.Tensor) -> torch.Tensor:
    """Index of each row's pooled token: the rightmost non-padding one, as transformers pools."""
    pad = model.config.pad_token_id
    if pad is None:
        if input_ids.shape[0] != 1:
            raise ValueError("Cannot handle batch sizes > 1 if no padding token is defined.")
        return torch.full((1,), input_ids.shape[1] - 1, dtype=torch.long)
    positions = torch.arange(input_ids.shape[1], device=input_ids.device, dtype=torch.int32)
    return (positions * (input_ids != pad).to(torch.int32)).argmax(-1)


def _qkv(layer: Any, config: Any, x: torch.Tensor, shape: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Queries and keys together [B, H + KV, T, D], not yet rotated, and values [B, KV, T, D] for x [N, width]."""
    attn, (batch, length) = layer.self_attn, shape
    heads, kv_heads, head_dim = config.num_attention_heads, config.num_key_value_heads, attn.head_dim
    group = getattr(attn, "qkv_int8", None)
    if group is not None:  # one GEMM: queries and keys are adjacent columns of its output, a view away
        y = group.gemm(x)
        qk, v = y[:, : (heads + kv_heads) * head_dim], y[:, (heads + kv_heads) * head_dim:]
    else:
        qk, v = torch.cat((attn.q_proj(x), attn.k_proj(x)), dim=-1), attn.v_proj(x)
    return (qk.view(batch, length, heads + kv_heads, head_dim).transpose(1, 2),
            v.view(batch, length, kv_heads, head_dim).transpose(1, 2))


def _rotate(x: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding: x * cos + rotate_half(x) * sin, with rotate_half's sign folded into `signed_sin`."""
    return x * cos + torch.roll(x, x.shape[-1] // 2, dims=-1) * signed_sin


def _mlp(layer: Any, hidden: torch.Tensor) -> torch.Tensor:
    """The layer's post-attention half on hidden states [N, width], residual included."""
    mlp, norm = layer.mlp, layer.post_attention_layernorm
    x = F.rms_norm(hidden, (hidden.shape[-1],), norm.weight, norm.variance_epsilon)
    gate, up = _projections(mlp, "gate_up_int8", ("gate_proj", "up_proj"), x)
    return hidden + mlp.down_proj(mlp.act_fn(gate).mul_(up))


def _sdpa(layer: Any, config: Any, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
          causal: bool) -> torch.Tensor:
    """Attention output [B * queries, H * D] of rotated queries and keys."""
    heads = config.num_attention_heads
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, scale=layer.self_attn.scaling,
                                         enable_gqa=heads != config.num_key_value_heads)
    return out.transpose(1, 2).reshape(-1, heads * layer.self_attn.head_dim)


def classify(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Pooled logits [B, labels] of a `LlamaForSequenceClassification` (inference only).

    Only the pooled token's hidden state reaches the head, so the last layer runs its queries, attention
    output, MLP and residual for that token alone; keys and values still come from every token.
    """
    config, body = model.config, model.model
    batch, length = input_ids.shape
    hidden = body.embed_tokens(input_ids).view(batch * length, -1)
    width = hidden.shape[-1]
    cos, sin = body.rotary_emb(hidden, torch.arange(length, device=input_ids.device).unsqueeze(0))
    half = cos.shape[-1] // 2
    sin = torch.cat((-sin[..., :half], sin[..., half:]), dim=-1)  # rotate_half's sign, applied once
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)  # [1, 1, T, head_dim]: broadcast over batch and heads
    mask = _mask(attention_mask, length)
    layers = body.layers[: config.num_hidden_layers]
    heads = config.num_attention_heads
    for layer in layers[:-1]:
        norm = layer.input_layernorm
        x = F.rms_norm(hidden, (width,), norm.weight, norm.variance_epsilon)
        qk, v = _qkv(layer, config, x, (batch, length))
        qk = _rotate(qk, cos, sin)  # queries and keys in one pass
        hidden = hidden + layer.self_attn.o_proj(_sdpa(layer, config, qk[:, :heads], qk[:, heads:], v, mask,
                                                       mask is None))
        hidden = _mlp(layer, hidden)
    last = _last_tokens(model, input_ids)
    rows = torch.arange(batch, device=hidden.device) * length + last  # pooled tokens in [B * T, width]
    if layers:
        layer = layers[-1]
        norm = layer.input_layernorm
        x = F.rms_norm(hidden, (width,), norm.weight, norm.variance_epsilon)
        qk, v = _qkv(layer, config, x, (batch, length))
        pick = torch.arange(batch, device=hidden.device)
        q = _rotate(qk[pick, :heads, last], cos[0, 0, last].unsqueeze(1), sin[0, 0, last].unsqueeze(1))  # [B, H, D]
        k = _rotate(qk[:, heads:], cos, sin)
        hidden = hidden[rows] + layer.self_attn.o_proj(
            _sdpa(layer, config, q.unsqueeze(2), k, v, _pooled_mask(attention_mask, last, length), False))
        hidden = _mlp(layer, hidden)
    else:
        hidden = hidden[rows]
    pooled = F.rms_norm(hidden, (width,), body.norm.weight, body.norm.variance_epsilon)
    return model.score(pooled)


class LeanLlamaForSequenceClassification(LlamaForSequenceClassification):
    """`LlamaForSequenceClassification` whose inference calls run `classify`; everything else is unchanged."""

    def lean_applies(self, input_ids: Any, kwargs: dict[str, Any]) -> bool:
        """Whether this call is plain inference the lean forward computes exactly."""
        return (input_ids is not None and not self.training and not torch.is_grad_enabled()
                and self.model.norm.weight.dtype == torch.float32  # `self.dtype` walks the parameters: 35 us
                and all(k in _PASSIVE and v in _PASSIVE[k] for k, v in kwargs.items()))

    def forward(self, input_ids: Any = None, attention_mask: Any = None, **kwargs: Any) -> Any:
        if not self.lean_applies(input_ids, kwargs):
            return super().forward(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        return SequenceClassifierOutputWithPast(logits=classify(self, input_ids, attention_mask))
