"""Int8 W8A8 runtime: exact quantization grid, int8 GEMM matching the float reference, STE gradients."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from compressor.runtime import int8
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


KERNELS = [k for k in int8.KERNELS if k != "fbgemm" or "fbgemm" in torch.backends.quantized.supported_engines]


@pytest.fixture(params=KERNELS)
def kernel(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every int8 kernel this PyTorch has, whatever this CPU would choose (`torch._int_mm` runs anywhere)."""
    monkeypatch.setattr(int8, "INT8_KERNEL", request.param)
    return request.param


def fbgemm_reference(x: torch.Tensor, layer: Int8Linear) -> torch.Tensor:
    """What the FBGEMM path computes, written out, for rows scaled to [-1, 1]: the fixed asymmetric 7-bit
    grid on [-1, 1] (FBGEMM's `reduce_range` on AVX2) times the int8 weights."""
    step = 2 / 127
    zero = round(1 / step)
    xq = (torch.round(x / step) + zero).clamp(0, 127)
    return ((xq - zero) * step) @ layer.dequantized_weight().T


def test_int8_linear_matches_the_dequantized_float_computation(kernel: str) -> None:
    g = torch.Generator().manual_seed(0)
    linear = torch.nn.Linear(64, 48)
    x = torch.randn(2, 7, 64, generator=g)
    x[0, 0] *= 40  # a massive first-token activation, as LLaMA has: per-token scaling must absorb it
    layer = Int8Linear.from_linear(linear)
    with torch.no_grad():
        out = layer(x)
        full = linear(x)
    assert out.shape == (2, 7, 48)
    if kernel == "fbgemm":
        assert layer.packed is not None and layer.grid_t is None
        absmax = x.reshape(-1, 64).abs().amax(dim=-1, keepdim=True)
        # per token: FBGEMM may round a value the other way at a half step (one 7-bit step x a weight)
        torch.testing.assert_close((out.reshape(-1, 48) - linear.bias) / absmax,
                                   fbgemm_reference(x.reshape(-1, 64) / absmax, layer).detach(), rtol=0, atol=4e-3)
    else:
        assert layer.packed is None and (layer.grid_t is not None) == (kernel == "fp32")
        q, sx = quantize_per_token(x.reshape(-1, 64))
        reference = (q.float() * sx) @ layer.dequantized_weight().T + linear.bias
        torch.testing.assert_close(out.reshape(-1, 48), reference.detach(), rtol=1e-5, atol=1e-5)
    for row in range(14):  # int8 error stays small for every token, the outlier's neighbours included
        err = (out.reshape(-1, 48)[row] - full.reshape(-1, 48)[row]).abs().max()
        assert float(err) < 0.03 * float(full.reshape(-1, 48)[row].abs().max())
    assert layer.qweight_t.dtype == torch.int8
    with torch.no_grad():  # a token's result does not depend on the others in its batch
        alone = torch.cat([layer(row) for row in x.reshape(-1, 1, 64)])
    torch.testing.assert_close(alone, out.reshape(-1, 48), rtol=1e-5, atol=1e-5)


def test_kernel_copies_are_counted_in_memory_and_follow_loaded_weights(kernel: str) -> None:
    from compressor.artifacts import tensor_bytes

    layer = Int8Linear.from_linear(torch.nn.Linear(64, 48, bias=False))
    own = layer.qweight_t.numel() + 4 * 48  # int8 values + fp32 scales
    extra = {"int_mm": 0, "fp32": 4 * 64 * 48, "fbgemm": 64 * 48 + 4 * 48}[kernel]
    assert tensor_bytes(layer) == own + extra
    other = Int8Linear.from_linear(torch.nn.Linear(64, 48, bias=False))
    layer.load_state_dict(other.state_dict())
    x = torch.randn(3, 64)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), other(x))


def test_kernel_override_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FINSIGNAL_INT8_KERNEL", "vnni")
    with pytest.raises(ValueError, match="FINSIGNAL_INT8_KERNEL='vnni': choose one of int_mm, fbgemm, fp32"):
        int8._choose_kernel()
    monkeypatch.setenv("FINSIGNAL_INT8_KERNEL", "FP32")
    assert int8._choose_kernel() == "fp32"


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


def test_quantization_aware_training_sees_what_the_kernel_computes(kernel: str) -> None:
    """QAT's fake quantization follows the kernel's activation grid, so the trained model is the served one."""
    linear = torch.nn.Linear(64, 48)
    x = torch.randn(9, 64, generator=torch.Generator().manual_seed(1))
    x[0] *= 40
    with torch.no_grad():
        trained = torch.nn.functional.linear(fake_quantize_tokens(x), fake_quantize_weight(linear.weight), linear.bias)
        served = Int8Linear.from_linear(linear)(x)
    # up to FBGEMM rounding a value at a half step the other way (one 7-bit step x a weight, per token)
    atol = 4e-3 * float(x.abs().max()) if kernel == "fbgemm" else 1e-4
    torch.testing.assert_close(served, trained, rtol=1e-4, atol=atol)


def test_fused_projections_compute_what_separate_ones_do(kernel: str) -> None:
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
