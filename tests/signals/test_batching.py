"""Token-budget packing: every piece scored once, budgets respected, padding small."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from signals.batching import pack_by_budget, pack_fixed

lengths_st = st.lists(st.integers(1, 600), max_size=300)


@given(lengths_st, st.integers(1, 8192), st.integers(1, 128))
def test_every_piece_in_exactly_one_batch_within_limits(lengths, budget, max_batch):
    plan = pack_by_budget(lengths, budget, max_batch)
    flat = [i for b in plan.batches for i in b]
    assert sorted(flat) == list(range(len(lengths)))
    for batch in plan.batches:
        assert 1 <= len(batch) <= max_batch
        padded = len(batch) * max(lengths[i] for i in batch)
        assert padded <= budget or len(batch) == 1  # an over-long piece still gets scored, alone
    assert plan.real_tokens == sum(lengths)
    assert plan.padded_tokens >= plan.real_tokens


@given(lengths_st)
def test_sorted_packing_never_pads_more_than_fixed_batches(lengths):
    budget_plan = pack_by_budget(lengths, token_budget=32 * 600, max_batch=32)
    fixed_plan = pack_fixed(lengths, 32)
    assert budget_plan.padded_tokens <= fixed_plan.padded_tokens


def test_realistic_mix_pads_under_five_percent():
    import random

    rng = random.Random(0)
    lengths = [rng.randint(10, 25) for _ in range(600)] + [rng.randint(200, 800) for _ in range(150)] \
        + [1024] * 50
    rng.shuffle(lengths)
    assert pack_by_budget(lengths, 16384, 64).padding_fraction < 0.05
    assert pack_fixed(lengths, 32).padding_fraction > 0.5


def test_invalid_limits_are_refused():
    with pytest.raises(ValueError):
        pack_by_budget([1, 2], 0, 4)
