"""Truncated-SVD factorization of decoder linear layers: a comparison row (see README.md)."""

from compressor.stages.lowrank.base import LowRankStage

__all__ = ["LowRankStage"]
