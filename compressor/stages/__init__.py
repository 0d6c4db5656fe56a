"""Compression stages, one subpackage each, with a shared lifecycle (`compressor.stages.base`).

Importing this package imports torch; the CLI imports it lazily.
"""

from __future__ import annotations

from typing import Any

from compressor.stages.base import Context, Stage, StageReport
from compressor.stages.layer_drop import LayerDropStage
from compressor.stages.lowrank import LowRankStage
from compressor.stages.prune import PruneStage
from compressor.stages.quantization import QuantizeStage
from compressor.stages.sparsity import Sparsity24Stage
from compressor.stages.weight_sharing import WeightSharingStage

STAGES: dict[str, type[Stage]] = {
    cls.type: cls
    for cls in (LayerDropStage, PruneStage, Sparsity24Stage, QuantizeStage, LowRankStage, WeightSharingStage)
}


def build_stage(spec: Any, recipe: Any, name: str) -> Stage:
    """The stage object for a recipe spec."""
    return STAGES[spec.type](spec, recipe, name)


__all__ = ["STAGES", "Context", "Stage", "StageReport", "build_stage"]
