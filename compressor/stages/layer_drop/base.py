"""The layer-dropping stage: successive (drop, re-measure, fine-tune) or one-shot."""

from __future__ import annotations

from typing import Any

import structlog

from compressor.errors import RecipeError
from compressor.loop import BaseHook
from compressor.model_io import ModelShape
from compressor.recipe import LayerDropSpec, resolve_count
from compressor.stages.base import Context, Stage
from compressor.stages.calibration import layer_scores
from compressor.stages.surgery import drop_layers

log = structlog.get_logger(__name__)


def choose_layers_to_drop(scores: list[float], n: int, protect_last: bool = True) -> list[int]:
    """Indices of the `n` lowest-scoring layers; the last layer is kept (the classifier reads its output)."""
    candidates = list(range(len(scores) - 1 if protect_last and len(scores) > 1 else len(scores)))
    return sorted(sorted(candidates, key=lambda i: (scores[i], i))[:n])


class _SuccessiveDrop(BaseHook):
    """After each epoch, re-measure and drop until the target depth is reached."""

    def __init__(self, stage: LayerDropStage, ctx: Context, target: int) -> None:
        self.stage, self.ctx, self.target = stage, ctx, target

    def after_epoch(self, epoch: int, model: Any) -> bool:
        current = len(model.model.layers)
        if current <= self.target:
            return False
        return self.stage.drop(self.ctx, min(self.stage.spec.layers_per_drop, current - self.target), epoch)


class LayerDropStage(Stage):
    type = "layer_drop"
    spec: LayerDropSpec

    def _plan(self, shape: ModelShape) -> ModelShape:
        target = resolve_count(self.spec.target_layers, shape.layers)
        if target > shape.layers:
            raise RecipeError(
                f"stage {self.name!r}: target_layers {target} but the model has only {shape.layers} layers"
            )
        self.target = target
        return shape.with_(layers=target)

    def drop(self, ctx: Context, n: int, epoch: int | None) -> bool:
        """Measure layer scores now and drop the `n` least important layers; record the decision."""
        scores = layer_scores(ctx.model, ctx.calibration, self.spec.criterion)
        victims = choose_layers_to_drop(scores, n, protect_last=self.spec.keep_last_layer)
        drop_layers(ctx.model, victims)
        decision = {"after_epoch": epoch, "scores": [round(s, 5) for s in scores], "dropped": victims,
                    "layers_left": len(ctx.model.model.layers)}
        self.report.details.setdefault("drops", []).append(decision)
        log.info("layer_drop.drop", stage=self.name, **decision)
        return True

    def _apply(self, ctx: Context) -> None:
        n_drop = len(ctx.model.model.layers) - self.target
        settings = self.finetune_settings
        self.report.details.update(criterion=self.spec.criterion, mode=self.spec.mode, target_layers=self.target)
        if n_drop == 0:
            self.report.notes.append("already at the target depth: nothing dropped")
        if self.spec.mode == "one_shot" or n_drop == 0:
            if n_drop:
                self.drop(ctx, n_drop, epoch=None)
            self._record_fit(ctx.finetune(settings, desc=self.name))
            return
        # successive: the input is already fine-tuned, so the first drop happens before any training;
        # then one epoch of recovery per further drop, then the final epochs at the target depth
        self.drop(ctx, min(self.spec.layers_per_drop, n_drop), epoch=0)
        rounds = -(-n_drop // self.spec.layers_per_drop)
        epochs = rounds - 1 + self.spec.final_epochs
        if settings.epochs < epochs:
            settings = settings.model_copy(update={"epochs": epochs})
        self.report.details["epochs"] = settings.epochs
        hook = _SuccessiveDrop(self, ctx, self.target)
        self._record_fit(ctx.finetune(settings, hooks=[hook], desc=self.name))
        if len(ctx.model.model.layers) > self.target:  # not enough epochs to get there: finish now
            self.drop(ctx, len(ctx.model.model.layers) - self.target, epoch=settings.epochs)
            self.report.notes.append("fine-tune ended before the target depth; the rest dropped without recovery")
