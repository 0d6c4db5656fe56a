"""Token-budget batching: sort pieces by length and pack them so padded tokens stay under a budget.

A forward pass costs about `batch_size x longest_sequence` tokens, padding included, plus a
fixed overhead. Sorting by length before packing puts similar lengths together, so padding nearly
vanishes, and the budget keeps every pass near the size the hardware likes, whether the inputs
are 15-token headlines or 500-token filing chunks. Fixed-size batches of mixed lengths waste most
of their compute on padding.
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


def pack_by_budget(
    lengths: Sequence[int], token_budget: int, max_batch: int, batch_overhead_tokens: int = 128
) -> BatchPlan:
    """Batches whose padded size (count x longest) stays within `token_budget` and `max_batch` items.

    Pieces are sorted by length and cut into contiguous runs chosen by dynamic programming to
    minimize padded tokens plus `batch_overhead_tokens` per batch (the fixed cost of a forward
    pass, in token equivalents): one batch per distinct length would pad nothing but pay that
    overhead every time. O(n * max_batch). A piece longer than the budget on its own still gets
    a batch of one: it has to be scored. Callers map results back by index.
    """
    if token_budget < 1 or max_batch < 1:
        raise ValueError("token_budget and max_batch must be positive")
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    sorted_lengths = [lengths[i] for i in order]
    n = len(order)
    cost = [0.0] + [float("inf")] * n  # cost[i]: best plan for the i shortest pieces
    cut = [0] * (n + 1)
    for i in range(1, n + 1):
        longest = sorted_lengths[i - 1]
        for j in range(i - 1, max(-1, i - 1 - max_batch), -1):
            size = i - j
            if size > 1 and size * longest > token_budget:
                break  # earlier cuts only make this batch bigger
            candidate = cost[j] + size * longest + batch_overhead_tokens
            if candidate < cost[i]:
                cost[i], cut[i] = candidate, j
    batches: list[tuple[int, ...]] = []
    i = n
    while i > 0:
        batches.append(tuple(order[cut[i] : i]))
        i = cut[i]
    batches.reverse()
    padded = sum(len(b) * lengths[b[-1]] for b in batches)
    return BatchPlan(tuple(batches), sum(lengths), padded)


def pack_fixed(lengths: Sequence[int], batch_size: int) -> BatchPlan:
    """Fixed-size batches in arrival order, each padded to its longest: the baseline to beat."""
    if batch_size < 1:
        raise ValueError("batch_size must be positive")
    batches = tuple(tuple(range(s, min(s + batch_size, len(lengths)))) for s in range(0, len(lengths), batch_size))
    padded = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    return BatchPlan(batches, sum(lengths), padded)
