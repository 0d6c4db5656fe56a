"""The low-rank stage: replace each decoder linear layer by two thin ones from its truncated SVD."""

from __future__ import annotations

import torch

from compressor.errors import RecipeError
from compressor.model_io import ModelShape
from compressor.recipe import LowRankSpec
from compressor.runtime.lowrank import LowRankLinear
from compressor.stages.base import Context, Stage
from compressor.stages.calibration import linear_layers

LOWRANK = "lowrank"


def factorize(weight: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(down [r, in], up [out, r]) with up @ down the best rank-r approximation of `weight`."""
    u, s, vh = torch.linalg.svd(weight.detach().double(), full_matrices=False)
    root = s[:rank].sqrt()
    return (root[:, None] * vh[:rank]).float(), (u[:, :rank] * root[None, :]).float()


class LowRankStage(Stage):
    type = "lowrank"
    spec: LowRankSpec

    def _plan(self, shape: ModelShape) -> ModelShape:
        smallest = min(shape.hidden, shape.ffn, shape.kv_heads * shape.head_dim)
        if round(self.spec.rank_fraction * smallest) < 1:
            raise RecipeError(f"stage {self.name!r}: rank_fraction {self.spec.rank_fraction} leaves rank 0")
        return shape

    def _apply(self, ctx: Context) -> None:
        ranks = {}
        energy = []
        for name, linear in linear_layers(ctx.model).items():
            rank = max(1, round(self.spec.rank_fraction * min(linear.in_features, linear.out_features)))
            down, up = factorize(linear.weight, rank)
            s = torch.linalg.svdvals(linear.weight.detach().double())
            energy.append(float((s[:rank] ** 2).sum() / (s**2).sum()))
            parent, _, child = name.rpartition(".")
            setattr(ctx.model.get_submodule(parent), child, LowRankLinear(down, up, linear.bias))
            ranks[name] = rank
        ctx.properties[LOWRANK] = ranks
        self.report.details.update(rank_fraction=self.spec.rank_fraction, ranks=ranks,
                                   mean_energy_kept=round(sum(energy) / len(energy), 4))
        self.report.notes.append("factored weights are not a LlamaConfig checkpoint: comparison only")
        self._record_fit(ctx.finetune(self.finetune_settings, desc=self.name))
