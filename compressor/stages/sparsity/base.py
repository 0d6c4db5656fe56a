"""The 2:4 stage: choose masks (magnitude or Wanda), zero the pruned weights, keep them zero while training."""

from __future__ import annotations

from typing import Any

import structlog
import torch

from compressor.errors import RecipeError
from compressor.loop import BaseHook
from compressor.model_io import ModelShape
from compressor.recipe import Sparsity24Spec
from compressor.runtime.sparse24 import mask_24
from compressor.stages.base import Context, Stage
from compressor.stages.calibration import input_norms, linear_layers

log = structlog.get_logger(__name__)

MASKS = "sparsity_masks"  # Context.properties key: {linear name: bool mask}


class MaskHook(BaseHook):
    """Re-applies fixed masks after every optimizer step, so pruned weights stay exactly zero."""

    def __init__(self, masks: dict[str, torch.Tensor]) -> None:
        self.masks = masks

    def after_step(self, model: Any) -> None:
        modules = dict(model.named_modules())
        with torch.no_grad():
            for name, mask in self.masks.items():
                module = modules[name]
                weight = module.weight if isinstance(module, torch.nn.Linear) else None
                if weight is not None:
                    weight.mul_(mask)


def sparsity_masks(ctx: Context) -> dict[str, torch.Tensor]:
    """The masks a previous 2:4 stage fixed on this model (empty if none)."""
    return ctx.properties.get(MASKS, {})


class Sparsity24Stage(Stage):
    type = "sparsity_24"
    spec: Sparsity24Spec

    def _plan(self, shape: ModelShape) -> ModelShape:
        inputs = {"hidden": shape.hidden, "ffn": shape.ffn, "attention output": shape.attention_heads * shape.head_dim}
        bad = {k: v for k, v in inputs.items() if v % 8}
        if bad:
            raise RecipeError(f"stage {self.name!r}: 2:4 packing needs input widths divisible by 8, got {bad}")
        return shape

    def _initialize(self, ctx: Context) -> None:
        self.linears = linear_layers(ctx.model)
        self.norms = input_norms(ctx.model, ctx.calibration, list(self.linears)) if self.spec.mask == "wanda" else {}

    def _apply(self, ctx: Context) -> None:
        masks: dict[str, torch.Tensor] = {}
        with torch.no_grad():
            for name, linear in self.linears.items():
                scores = linear.weight.abs()
                if self.spec.mask == "wanda":
                    scores = scores * self.norms[name][None, :]
                masks[name] = mask_24(scores)
                linear.weight.mul_(masks[name])
        ctx.properties[MASKS] = masks
        hook = MaskHook(masks)
        ctx.hooks.append(hook)  # every later fine-tune keeps the mask
        total = sum(m.numel() for m in masks.values())
        self.report.details.update(mask=self.spec.mask, layers=len(masks), weights=total,
                                   zeros=total - sum(int(m.sum()) for m in masks.values()))
        self.report.notes.append("2:4 on CPU saves storage only (no CPU kernels); the runtime expands to dense")
        log.info("sparsity.applied", stage=self.name, **self.report.details)
        self._record_fit(ctx.finetune(self.finetune_settings, desc=self.name))
