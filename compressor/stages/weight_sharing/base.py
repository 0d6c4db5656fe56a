"""The weight-sharing stage: 1-D k-means per linear layer, weights snapped to their centroids."""

from __future__ import annotations

import torch

from compressor.recipe import WeightSharingSpec
from compressor.stages.base import Context, Stage
from compressor.stages.calibration import linear_layers

KMEANS = "kmeans"  # Context.properties key: {linear name: (codebook, indices)}


def kmeans_1d(values: torch.Tensor, k: int, iterations: int = 25) -> tuple[torch.Tensor, torch.Tensor]:
    """(sorted codebook [k], index per value [same shape], uint8) minimizing squared error, Lloyd's method."""
    flat = values.detach().reshape(-1).float()
    k = min(k, flat.numel())
    centroids = torch.quantile(flat, torch.linspace(0, 1, k + 2)[1:-1].to(flat.dtype)) if flat.numel() < 2**24 \
        else flat[torch.linspace(0, flat.numel() - 1, k).long()].sort().values
    for _ in range(iterations):
        idx = torch.bucketize(flat, (centroids[1:] + centroids[:-1]) / 2)
        sums = torch.zeros(k).scatter_add_(0, idx, flat)
        counts = torch.zeros(k).scatter_add_(0, idx, torch.ones_like(flat))
        updated = torch.where(counts > 0, sums / counts.clamp_min(1), centroids)
        updated, _ = updated.sort()
        if torch.allclose(updated, centroids):
            break
        centroids = updated
    idx = torch.bucketize(flat, (centroids[1:] + centroids[:-1]) / 2)
    return centroids, idx.to(torch.uint8).reshape(values.shape)


class WeightSharingStage(Stage):
    type = "weight_sharing"
    spec: WeightSharingSpec

    def _apply(self, ctx: Context) -> None:
        tables = {}
        err = []
        with torch.no_grad():
            for name, linear in linear_layers(ctx.model).items():
                codebook, idx = kmeans_1d(linear.weight, self.spec.clusters, self.spec.iterations)
                shared = codebook[idx.long()]
                err.append(float((shared - linear.weight).pow(2).mean() / linear.weight.pow(2).mean()))
                linear.weight.copy_(shared)
                tables[name] = (codebook, idx)
        ctx.properties[KMEANS] = tables
        self.report.details.update(clusters=self.spec.clusters, layers=len(tables),
                                   mean_relative_sq_error=round(sum(err) / len(err), 6))
        self.report.notes.append("codebook + indices on disk; expanded to dense float32 on CPU (storage only)")
