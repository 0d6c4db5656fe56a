"""The width-pruning stage: heads, MLP channels and residual channels by activation importance."""

from __future__ import annotations

import structlog
import torch

from compressor.errors import RecipeError
from compressor.model_io import ModelShape
from compressor.recipe import PruneSpec, resolve_count
from compressor.stages.base import Context, Stage
from compressor.stages.calibration import width_importance
from compressor.stages.surgery import prune_ffn, prune_heads, prune_hidden

log = structlog.get_logger(__name__)


def plan_heads(spec: PruneSpec, shape: ModelShape, where: str) -> tuple[int, int]:
    """(query heads, kv heads) to keep, checked against grouped-query attention."""
    h, g = shape.attention_heads, shape.kv_heads
    group = h // g
    if spec.kv_heads is not None:
        g2 = resolve_count(spec.kv_heads, g)
        if g2 > g:
            raise RecipeError(f"{where}: kv_heads {g2} but the model has only {g} key/value heads")
        h2 = resolve_count(spec.attention_heads, h) if spec.attention_heads is not None else g2 * group
    else:
        h2 = resolve_count(spec.attention_heads, h) if spec.attention_heads is not None else h
        g2 = g if h2 % g == 0 else h2 // group if h2 % group == 0 else 0
        if g2 == 0:
            raise RecipeError(
                f"{where}: {h2} query heads fit neither {g} groups evenly nor whole groups of {group}; set kv_heads"
            )
    if h2 > h:
        raise RecipeError(f"{where}: attention_heads {h2} but the model has only {h} query heads")
    if h2 % g2:
        raise RecipeError(f"{where}: attention_heads {h2} is not a multiple of kv_heads {g2}")
    if h2 // g2 > group:
        raise RecipeError(
            f"{where}: {h2 // g2} query heads per key/value head, but the model's groups have only {group}"
        )
    return h2, g2


def select_heads(
    importance: torch.Tensor, kv_heads: int, n_groups: int, per_group: int
) -> tuple[list[int], list[list[int]]]:
    """For one layer: kept groups (best total importance) and kept query heads inside each (best first)."""
    group = importance.numel() // kv_heads
    by_group = importance.reshape(kv_heads, group)
    groups = sorted(torch.argsort(by_group.sum(1), descending=True)[:n_groups].tolist())
    inside = [sorted(torch.argsort(by_group[g], descending=True)[:per_group].tolist()) for g in groups]
    return groups, inside


def _top(scores: torch.Tensor, k: int) -> torch.Tensor:
    return torch.sort(torch.argsort(scores, descending=True)[:k]).values


class PruneStage(Stage):
    type = "prune"
    spec: PruneSpec

    def _plan(self, shape: ModelShape) -> ModelShape:
        where = f"stage {self.name!r}"
        heads, kv = plan_heads(self.spec, shape, where) if (self.spec.attention_heads or self.spec.kv_heads) \
            else (shape.attention_heads, shape.kv_heads)
        ffn = resolve_count(self.spec.ffn, shape.ffn) if self.spec.ffn is not None else shape.ffn
        hidden = resolve_count(self.spec.hidden, shape.hidden) if self.spec.hidden is not None else shape.hidden
        if ffn > shape.ffn:
            raise RecipeError(f"{where}: ffn {ffn} but the model's MLP has only {shape.ffn} channels")
        if hidden > shape.hidden:
            raise RecipeError(f"{where}: hidden {hidden} but the model has only {shape.hidden} channels")
        if hidden % heads:
            # transformers' LlamaConfig refuses this even with an explicit head_dim, so no loader would read it
            raise RecipeError(f"{where}: hidden size {hidden} is not a multiple of {heads} attention heads; "
                              "a LlamaConfig needs hidden_size % num_attention_heads == 0")
        self.targets = {"attention_heads": heads, "kv_heads": kv, "ffn": ffn, "hidden": hidden}
        return shape.with_(attention_heads=heads, kv_heads=kv, ffn=ffn, hidden=hidden)

    def _initialize(self, ctx: Context) -> None:
        self.importance = width_importance(ctx.model, ctx.calibration)

    def _apply(self, ctx: Context) -> None:
        model, config = ctx.model, ctx.model.config
        t = self.targets
        before = {"attention_heads": config.num_attention_heads, "kv_heads": config.num_key_value_heads,
                  "ffn": config.intermediate_size, "hidden": config.hidden_size}
        if (t["attention_heads"], t["kv_heads"]) != (before["attention_heads"], before["kv_heads"]):
            per_group = t["attention_heads"] // t["kv_heads"]
            chosen = [select_heads(self.importance["heads"][l], before["kv_heads"], t["kv_heads"], per_group)
                      for l in range(len(model.model.layers))]
            prune_heads(model, [c[0] for c in chosen], [c[1] for c in chosen])
            self.report.details["heads_kept"] = [{"groups": g, "query_in_group": q} for g, q in chosen]
        if t["ffn"] != before["ffn"]:
            prune_ffn(model, [_top(self.importance["ffn"][l], t["ffn"]) for l in range(len(model.model.layers))])
        if t["hidden"] != before["hidden"]:
            keep = _top(self.importance["hidden"], t["hidden"])
            prune_hidden(model, keep)
            self.report.details["hidden_kept"] = keep.tolist()
        self.report.details.update(before=before, after=t)
        log.info("prune.applied", stage=self.name, before=before, after=t)
        self._record_fit(ctx.finetune(self.finetune_settings, desc=self.name))
