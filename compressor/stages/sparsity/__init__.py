"""2:4 semi-structured sparsity with a fixed mask kept through fine-tuning (see README.md)."""

from compressor.stages.sparsity.base import MaskHook, Sparsity24Stage, sparsity_masks

__all__ = ["MaskHook", "Sparsity24Stage", "sparsity_masks"]
