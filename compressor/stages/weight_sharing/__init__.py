"""k-means weight sharing per decoder linear layer: a comparison row (see README.md)."""

from compressor.stages.weight_sharing.base import WeightSharingStage, kmeans_1d

__all__ = ["WeightSharingStage", "kmeans_1d"]
