"""Token-budget batching: sort pieces by length and pack them so padded tokens stay under a budget.

A forward pass costs about `batch_size x longest_sequence` tokens, padding included. Sorting
by length before packing puts similar lengths together, so padding nearly vanishes, and the
budget keeps every pass near the size the hardware likes, whether the inputs are 15-token
headlines or 500-token filing chunks. Fixed-size batches of mixed lengths waste most of their
compute on padding.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class BatchPlan:
    """Indices of the pieces in each batch, and what the padding will cost."""

    batches: tuple[tuple[int, ...], ...]
    real_tokens: int
    padded_tokens: int

    @property
    def padding_fraction(self) -> float:
        """Share of the computed tokens that are padding."""
        return 1.0 - self.real_tokens / self.padded_tokens if self.padded_tokens else 0.0


def pack_by_budget(lengths: Sequence[int], token_budget: int, max_batch: int) -> BatchPlan:
    """Batches whose padded size (count x longest) stays within `token_budget` and `max_batch` items.

    A piece longer than the budget on its own still gets a batch of one: it has to be scored.
    Order within the plan is shortest first; callers map results back by index.
    """
    if token_budget < 1 or max_batch < 1:
        raise ValueError("token_budget and max_batch must be positive")
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    batches: list[tuple[int, ...]] = []
    current: list[int] = []
    padded = 0
    for i in order:
        longest = lengths[i]  # sorted ascending: the newcomer is the longest so far
        if current and ((len(current) + 1) * longest > token_budget or len(current) == max_batch):
            batches.append(tuple(current))
            padded += len(current) * lengths[current[-1]]
            current = []
        current.append(i)
    if current:
        batches.append(tuple(current))
        padded += len(current) * lengths[current[-1]]
    return BatchPlan(tuple(batches), sum(lengths), padded)


def pack_fixed(lengths: Sequence[int], batch_size: int) -> BatchPlan:
    """Fixed-size batches in arrival order, each padded to its longest: the baseline to beat."""
    if batch_size < 1:
        raise ValueError("batch_size must be positive")
    batches = tuple(tuple(range(s, min(s + batch_size, len(lengths)))) for s in range(0, len(lengths), batch_size))
    padded = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    return BatchPlan(batches, sum(lengths), padded)
