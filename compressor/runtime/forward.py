"""A lean inference forward for LLaMA sequence classifiers: the same modules in fewer operations.

At a sentence's ~30 tokens a small LLaMA's forward on CPU is dominated by per-operation overhead, not by
arithmetic: transformers' generic decoder (cache plumbing, mask factories, one Python module call per norm
and projection, rotary embeddings applied to queries and keys apart, every position scored) costs more
than the int8 GEMMs it wraps. `classify` runs the same weights through fewer, fused operations: fused
norms (`F.rms_norm`), one GEMM per fused q/k/v and gate/up group, rotary embeddings on queries and keys at
once, grouped-query attention inside SDPA, and the final norm and score head at the pooled token only.

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
from transformers.models.llama.modeling_llama import rotate_half

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


def _last_tokens(model: Any, input_ids: torch.Tensor) -> torch.Tensor:
    """Index of each row's pooled token: the rightmost non-padding one, as transformers pools."""
    pad = model.config.pad_token_id
    if pad is None:
        if input_ids.shape[0] != 1:
            raise ValueError("Cannot handle batch sizes > 1 if no padding token is defined.")
        return torch.full((1,), input_ids.shape[1] - 1, dtype=torch.long)
    positions = torch.arange(input_ids.shape[1], device=input_ids.device, dtype=torch.int32)
    return (positions * (input_ids != pad).to(torch.int32)).argmax(-1)


def classify(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Pooled logits [B, labels] of a `LlamaForSequenceClassification` (inference only)."""
    config, body = model.config, model.model
    batch, length = input_ids.shape
    hidden = body.embed_tokens(input_ids)
    width = hidden.shape[-1]
    cos, sin = body.rotary_emb(hidden, torch.arange(length, device=input_ids.device).unsqueeze(0))
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)  # [1, 1, T, head_dim]: broadcast over batch and heads
    mask = _mask(attention_mask, length)
    for layer in body.layers[: config.num_hidden_layers]:
        attn = layer.self_attn
        heads, kv_heads, head_dim = config.num_attention_heads, config.num_key_value_heads, attn.head_dim
        x = F.rms_norm(hidden, (width,), layer.input_layernorm.weight, layer.input_layernorm.variance_epsilon)
        q, k, v = _projections(attn, "qkv_int8", ("q_proj", "k_proj", "v_proj"), x.view(-1, width))
        qk = torch.cat((q.view(batch, length, heads, head_dim), k.view(batch, length, kv_heads, head_dim)),
                       dim=2).transpose(1, 2)  # rotate queries and keys in one pass
        qk = qk * cos + rotate_half(qk) * sin
        v = v.view(batch, length, kv_heads, head_dim).transpose(1, 2)
        out = F.scaled_dot_product_attention(qk[:, :heads], qk[:, heads:], v, attn_mask=mask, is_causal=mask is None,
                                             scale=attn.scaling, enable_gqa=heads != kv_heads)
        hidden = hidden + attn.o_proj(out.transpose(1, 2).reshape(batch * length, heads * head_dim)).view_as(hidden)
        mlp, norm = layer.mlp, layer.post_attention_layernorm
        x = F.rms_norm(hidden, (width,), norm.weight, norm.variance_epsilon)
        gate, up = _projections(mlp, "gate_up_int8", ("gate_proj", "up_proj"), x.view(-1, width))
        hidden = hidden + mlp.down_proj(mlp.act_fn(gate) * up).view_as(hidden)
    pooled = hidden[torch.arange(batch, device=hidden.device), _last_tokens(model, input_ids)]
    pooled = F.rms_norm(pooled, (width,), body.norm.weight, body.norm.variance_epsilon)
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
