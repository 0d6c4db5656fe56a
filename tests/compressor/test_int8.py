"""Int8 W8A8 runtime: exact quantization grid, int8 GEMM matching the float reference, STE gradients."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from compressor.runtime.int8 import (
    QMAX,
    FusedInt8,
    Int8Embedding,
    Int8Linear,
    dequantize_per_channel,
    fake_quantize_tokens,
    fuse_projections,
    fake_quantize_weight,
    quantize_per_channel,
    quantize_per_token,
)


@settings(max_examples=30, deadline=None)
@given(rows=st.integers(1, 16), cols=st.integers(1, 40), seed=st.integers(0, 10_000))
def test_per_channel_quantization_is_symmetric_and_tight(rows: int, cols: int, seed: int) -> None:
    w = torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed)) * 3
    q, scale = quantize_per_channel(w)
    assert q.dtype == torch.int8 and int(q.abs().max()) <= QMAX
    assert (q.abs().amax(dim=1) == QMAX).all()  # every row uses the full range
    err = (dequantize_per_channel(q, scale) - w).abs()
    assert bool((err <= scale[:, None] / 2 + 1e-6).all())  # within half a step
    assert torch.equal(quantize_per_channel(dequantize_per_channel(q, scale))[0], q)  # the grid is stable


def test_per_token_scales_follow_each_row() -> None:
    x = torch.tensor([[1.0, -2.0, 0.5], [100.0, 0.0, -50.0]])
    q, s = quantize_per_token(x)
    torch.testing.assert_close(s.squeeze(1), torch.tensor([2.0, 100.0]) / QMAX)
    assert q[0, 1] == -QMAX and q[1, 0] == QMAX


def test_int8_linear_matches_the_dequantized_float_computation() -> None:
    g = torch.Generator().manual_seed(0)
    linear = torch.nn.Linear(64, 48)
    x = torch.randn(2, 7, 64, generator=g)
    layer = Int8Linear.from_linear(linear)
    q, sx = quantize_per_token(x.reshape(-1, 64))
    reference = (q.float() * sx) @ layer.dequantized_weight().T + linear.bias
    with torch.no_grad():
        out = layer(x)
        full = linear(x)
    assert out.shape == (2, 7, 48)
    torch.testing.assert_close(out.reshape(-1, 48), reference.detach(), rtol=1e-5, atol=1e-5)
    assert float((out - full).abs().max()) < 0.02 * float(full.abs().max())  # int8 error stays small
    assert layer.qweight_t.dtype == torch.int8


def test_int8_embedding_dequantizes_only_looked_up_rows() -> None:
    table = torch.randn(50, 16)
    emb = Int8Embedding(table, padding_idx=0)
    ids = torch.tensor([[3, 7, 0]])
    out = emb(ids)
    torch.testing.assert_close(out, emb.weight[ids])
    assert float((out - table[ids]).abs().max()) < float(table.abs().max()) / QMAX


def test_fake_quantization_passes_gradients_straight_through() -> None:
    w = torch.randn(8, 16, requires_grad=True)
    x = torch.randn(4, 16, requires_grad=True)
    (fake_quantize_weight(w) * 3).sum().backward()
    (fake_quantize_tokens(x) * 2).sum().backward()
    torch.testing.assert_close(w.grad, torch.full_like(w, 3.0))
    torch.testing.assert_close(x.grad, torch.full_like(x, 2.0))
    q, s = quantize_per_channel(w.detach())
    torch.testing.assert_close(fake_quantize_weight(w).detach(), dequantize_per_channel(q, s))


def test_fused_projections_compute_what_separate_ones_do() -> None:
    from tests.compressor.conftest import batch, make_classifier

    from compressor.stages.quantization import to_int8

    model = make_classifier()
    to_int8(model)
    b = batch()
    with torch.inference_mode():
        separate = model(**b).logits
        assert fuse_projections(model) == 2 * len(model.model.layers)
        fused = model(**b).logits
        again = model(**b).logits  # the per-input cache must not leak between calls
    torch.testing.assert_close(fused, separate, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(again, separate, rtol=1e-5, atol=1e-5)
    assert sum(isinstance(m, FusedInt8) for m in model.modules()) == 2 * len(model.model.layers)


def test_fp32_grid_path_computes_the_int8_gemm_exactly() -> None:
    """CPUs without VNNI/AMX multiply the int8 grid in fp32: the same integers as torch._int_mm."""
    from compressor.runtime.int8 import int8_matmul

    gen = torch.Generator().manual_seed(0)
    q = torch.randint(-127, 128, (40, 576), dtype=torch.int8, generator=gen)
    w = torch.randint(-127, 128, (576, 96), dtype=torch.int8, generator=gen)
    assert torch.equal(int8_matmul(q, w, w.float()), int8_matmul(q, w, None))
