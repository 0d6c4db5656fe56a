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

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import LlamaForSequenceClassification
from transformers.modeling_outputs import SequenceClassifierOutputWithPast

from compressor.runtime.int8 import Int8Linear

_PASSIVE = {"use_cache": (None, False), "return_dict": (None, True)}  # keywords the lean path honours as given


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


@dataclass(frozen=True)
class _Heads:
    """Attention geometry, read once per call: config attributes cost a microsecond each to look up."""

    heads: int
    kv_heads: int
    dim: int
    scaling: float

    @classmethod
    def of(cls, config: Any, attn: Any) -> _Heads:
        return cls(config.num_attention_heads, config.num_key_value_heads, attn.head_dim, attn.scaling)


def _linear(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """module(x) for x [N, in] float32; an `Int8Linear`'s GEMM is called without its reshaping wrapper."""
    return module.gemm(x) if isinstance(module, Int8Linear) else module(x)


def _qkv(attn: Any, geo: _Heads, x: torch.Tensor, shape: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Queries and keys together [B, H + KV, T, D], not yet rotated, and values [B, KV, T, D] for x [N, width]."""
    batch, length = shape
    group = getattr(attn, "qkv_int8", None)
    if group is not None:  # one GEMM: queries and keys are adjacent columns of its output, a view away
        y = group.gemm(x)
        split = (geo.heads + geo.kv_heads) * geo.dim
        qk, v = y[:, :split], y[:, split:]
    else:
        qk, v = torch.cat((attn.q_proj(x), attn.k_proj(x)), dim=-1), attn.v_proj(x)
    return (qk.view(batch, length, geo.heads + geo.kv_heads, geo.dim).transpose(1, 2),
            v.view(batch, length, geo.kv_heads, geo.dim).transpose(1, 2))


def _rotate(x: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding: x * cos + rotate_half(x) * sin, with rotate_half's sign folded into `signed_sin`."""
    return x * cos + torch.roll(x, x.shape[-1] // 2, dims=-1) * signed_sin


def _attend(attn: Any, geo: _Heads, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
            causal: bool) -> torch.Tensor:
    """The attention block's output projection [B * queries, width] for rotated queries and keys."""
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, scale=geo.scaling,
                                         enable_gqa=geo.heads != geo.kv_heads)
    return _linear(attn.o_proj, out.transpose(1, 2).reshape(-1, geo.heads * geo.dim))


def _mlp(mlp: Any, norm: Any, hidden: torch.Tensor) -> torch.Tensor:
    """The layer's post-attention half on hidden states [N, width], residual included."""
    x = F.rms_norm(hidden, (hidden.shape[-1],), norm.weight, norm.variance_epsilon)
    group = getattr(mlp, "gate_up_int8", None)
    gate, up = group.project(x) if group is not None else (mlp.gate_proj(x), mlp.up_proj(x))
    return hidden + _linear(mlp.down_proj, mlp.act_fn(gate).mul_(up))


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
    layers = list(body.layers[: config.num_hidden_layers])
    pick, last = torch.arange(batch, device=hidden.device), _last_tokens(model, input_ids)
    rows = pick * length + last  # pooled tokens in [B * T, width]
    if not layers:
        hidden = hidden[rows]
    else:
        geo = _Heads.of(config, layers[0].self_attn)
        for i, layer in enumerate(layers):
            attn, norm = layer.self_attn, layer.input_layernorm
            x = F.rms_norm(hidden, (width,), norm.weight, norm.variance_epsilon)
            qk, v = _qkv(attn, geo, x, (batch, length))
            if i < len(layers) - 1:
                qk = _rotate(qk, cos, sin)  # queries and keys in one pass
                hidden = hidden + _attend(attn, geo, qk[:, : geo.heads], qk[:, geo.heads:], v, mask, mask is None)
            else:  # the last layer: one query per row, at its pooled token
                q = _rotate(qk[pick, : geo.heads, last], cos[0, 0, last].unsqueeze(1), sin[0, 0, last].unsqueeze(1))
                k = _rotate(qk[:, geo.heads:], cos, sin)
                keys = _pooled_mask(attention_mask, last, length)
                hidden = hidden[rows] + _attend(attn, geo, q.unsqueeze(2), k, v, keys, False)
            hidden = _mlp(layer.mlp, layer.post_attention_layernorm, hidden)
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
