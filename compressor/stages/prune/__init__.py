"""Width pruning: attention heads (grouped-query aware), MLP channels, residual channels (see README.md)."""

from compressor.stages.prune.base import PruneStage, plan_heads, select_heads

__all__ = ["PruneStage", "plan_heads", "select_heads"]
