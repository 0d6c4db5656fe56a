"""Compact storage formats: 2:4 values + metadata, packed codebook indices; property-tested round trips."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from compressor.runtime.codebook import pack_indices, unpack_indices
from compressor.runtime.sparse24 import is_24, mask_24, pack_24, packed_bytes, unpack_24
from compressor.stages.lowrank.base import factorize
from compressor.stages.weight_sharing import kmeans_1d


@settings(max_examples=40, deadline=None)
@given(rows=st.integers(1, 12), groups8=st.integers(1, 6), seed=st.integers(0, 10_000), int8=st.booleans())
def test_24_pack_round_trip(rows: int, groups8: int, seed: int, int8: bool) -> None:
    g = torch.Generator().manual_seed(seed)
    cols = 8 * groups8
    w = torch.randint(-127, 128, (rows, cols), generator=g, dtype=torch.int8) if int8 else torch.randn(rows, cols, generator=g)
    mask = mask_24(torch.rand(rows, cols, generator=g))
    values, meta = pack_24(w, mask)
    assert is_24(mask)
    assert torch.equal(unpack_24(values, meta), w * mask)
    element = 1 if int8 else 4
    assert packed_bytes(values, meta) == rows * cols * element // 2 + rows * cols // 8


def test_24_mask_keeps_the_two_largest_in_each_group() -> None:
    scores = torch.tensor([[0.1, 0.9, 0.5, 0.2, 4.0, 3.0, 2.0, 1.0]])
    assert mask_24(scores).tolist() == [[False, True, True, False, True, True, False, False]]


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 200), k=st.sampled_from([2, 16, 17, 256]), seed=st.integers(0, 1000))
def test_index_packing_round_trip(n: int, k: int, seed: int) -> None:
    idx = torch.randint(0, k, (n,), generator=torch.Generator().manual_seed(seed)).to(torch.uint8)
    packed = pack_indices(idx, k)
    assert packed.numel() == ((n + 1) // 2 if k <= 16 else n)
    assert torch.equal(unpack_indices(packed, (n,), k), idx)


def test_kmeans_snaps_to_k_values_and_beats_uniform_levels() -> None:
    w = torch.randn(64, 64, generator=torch.Generator().manual_seed(0))
    codebook, idx = kmeans_1d(w, 16)
    shared = codebook[idx.long()]
    assert codebook.numel() == 16 and shared.unique().numel() <= 16
    uniform = torch.linspace(float(w.min()), float(w.max()), 16)
    snapped = uniform[torch.bucketize(w, (uniform[1:] + uniform[:-1]) / 2)]
    assert float((shared - w).pow(2).mean()) < float((snapped - w).pow(2).mean())


def test_full_rank_factorization_is_exact_and_truncation_is_optimal() -> None:
    w = torch.randn(20, 12, generator=torch.Generator().manual_seed(0))
    down, up = factorize(w, 12)
    torch.testing.assert_close(up @ down, w, rtol=1e-4, atol=1e-4)
    down, up = factorize(w, 4)
    s = torch.linalg.svdvals(w.double())
    torch.testing.assert_close(torch.linalg.matrix_norm((up @ down - w).double()), s[4:].norm(), rtol=1e-4, atol=1e-4)
