"""The quantization stage: PTQ, or QAT then PTQ of the trained weights; always the last stage."""

from __future__ import annotations

from typing import Any

import structlog
from torch import nn

from compressor.model_io import ModelShape
from compressor.recipe import QuantizeSpec
from compressor.runtime.int8 import Int8Linear
from compressor.stages.base import Context, Stage
from compressor.stages.calibration import linear_layers
from compressor.stages.quantization.qat import QATEmbedding, QATLinear

log = structlog.get_logger(__name__)

INT8 = "int8"  # Context.properties key: {"embeddings": bool}


def _set(model: Any, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent), child, module)


def to_int8(model: Any, embeddings: bool = False) -> int:
    """Replace every decoder linear layer by an `Int8Linear` (per-channel absmax scales); return the count.

    The token embedding becomes int8 rows (`embeddings`) or is rounded to bfloat16, whichever the W8A8
    export stores, so the model in memory computes exactly what the saved artifact computes.
    """
    import torch

    from compressor.runtime.int8 import Int8Embedding

    linears = linear_layers(model)
    for name, linear in linears.items():
        _set(model, name, Int8Linear.from_linear(linear))
    emb = model.model.embed_tokens
    if embeddings and not isinstance(emb, Int8Embedding):
        model.model.embed_tokens = Int8Embedding(emb.weight.detach(), emb.padding_idx)
    elif not embeddings:
        with torch.no_grad():
            emb.weight.copy_(emb.weight.to(torch.bfloat16).to(emb.weight.dtype))
    return len(linears)


class QuantizeStage(Stage):
    type = "quantize"
    spec: QuantizeSpec

    def _plan(self, shape: ModelShape) -> ModelShape:
        return shape

    def _apply(self, ctx: Context) -> None:
        settings = self.finetune_settings
        if self.spec.mode == "qat" and settings.epochs > 0:
            for name, linear in linear_layers(ctx.model).items():
                _set(ctx.model, name, QATLinear.from_linear(linear))
            if self.spec.embeddings:
                ctx.model.model.embed_tokens = QATEmbedding.from_embedding(ctx.model.model.embed_tokens)
            self._record_fit(ctx.finetune(settings, desc=self.name))
        elif self.spec.mode == "qat":
            self.report.notes.append("qat with 0 epochs is plain post-training quantization")

    def _finalize(self, ctx: Context) -> None:
        emb = ctx.model.model.embed_tokens
        if isinstance(emb, QATEmbedding):
            plain = nn.Embedding(emb.num_embeddings, emb.embedding_dim, padding_idx=emb.padding_idx)
            plain.weight = emb.weight
            ctx.model.model.embed_tokens = plain
        n = to_int8(ctx.model, embeddings=self.spec.embeddings)
        ctx.properties[INT8] = {"embeddings": self.spec.embeddings}
        self.report.details.update(mode=self.spec.mode, linear_layers=n, embeddings_int8=self.spec.embeddings,
                                   scheme="W8A8: int8 per-channel symmetric weights, dynamic per-token activations")
        log.info("quantize.done", stage=self.name, mode=self.spec.mode, linear_layers=n)
