"""Fake-quantized modules for quantization-aware training: int8 round trips, straight-through gradients."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from compressor.runtime.int8 import fake_quantize_tokens, fake_quantize_weight


class QATLinear(nn.Linear):
    """A linear layer that sees its weights and inputs as the int8 runtime will (W8A8, per channel/token)."""

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> QATLinear:
        new = cls(linear.in_features, linear.out_features, bias=linear.bias is not None, dtype=linear.weight.dtype)
        new.weight = linear.weight
        new.bias = linear.bias
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(fake_quantize_tokens(x), fake_quantize_weight(self.weight), self.bias)


class QATEmbedding(nn.Embedding):
    """A token embedding whose rows are seen as int8 with one scale per row."""

    @classmethod
    def from_embedding(cls, emb: nn.Embedding) -> QATEmbedding:
        new = cls(emb.num_embeddings, emb.embedding_dim, padding_idx=emb.padding_idx, dtype=emb.weight.dtype)
        new.weight = emb.weight
        return new

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(ids, fake_quantize_weight(self.weight), self.padding_idx)
