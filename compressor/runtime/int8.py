"""Int8 inference on CPU: per-channel symmetric weights, dynamic per-token activations.

`Int8Linear` multiplies int8 activations by int8 weights and rescales the result by the token and channel
scales. Which int8 GEMM runs depends on the CPU (`INT8_KERNEL`, overridable with `FINSIGNAL_INT8_KERNEL`):

- `int_mm`: `torch._int_mm` (int32 accumulation; oneDNN with VNNI/AMX), exactly the W8A8 model vLLM serves.
- `fbgemm`: x86 without VNNI/AMX. FBGEMM's AVX2 u8 x s8 kernels (`quantized::linear_dynamic`) on the same
  int8 weights; each token is scaled to [-1, 1] and FBGEMM's per-tensor range pinned to [-1, 1], so the
  activation grid is in effect per token and independent of the batch. FBGEMM keeps activations to 7 bits
  on AVX2 (its `reduce_range`, so pairwise u8 x s8 sums cannot saturate 16 bits): the same weights with a
  coarser activation grid, measured in the compress report.
- `fp32`: the int8 grid multiplied in float32 from an fp32 copy (any other CPU); exact, but no faster.

Projections that read the same input (q/k/v, gate/up) can be fused into one GEMM so each activation is
quantized once. `Int8Embedding` keeps one int8 row and one scale per token and dequantizes only the rows
looked up.

This module imports torch at top level: import it lazily from code on the CLI's start-up path.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import torch
from torch import nn

QMAX = 127  # symmetric int8 in [-127, 127]: negation never overflows, zero point is always 0


KERNELS = ("int_mm", "fbgemm", "fp32")


def _cpu_flags() -> str | None:
    try:
        return open("/proc/cpuinfo").read()
    except OSError:
        return None  # not Linux


def _choose_kernel() -> str:
    """The int8 GEMM for this CPU: `torch._int_mm` with VNNI/AMX, FBGEMM's AVX2 kernels, else fp32.

    Without int8 dot-product instructions `torch._int_mm` falls back to a scalar kernel: measured 59x slower
    than an fp32 matmul on an AVX2 EPYC (864 x 576 by 576 x 1536: 1,451 ms vs 25 ms), where FBGEMM's
    u8 x s8 kernels run 2-3x faster than fp32 at a sentence's 27 tokens.
    """
    forced = os.environ.get("FINSIGNAL_INT8_KERNEL", "").strip().lower()
    if forced:
        if forced not in KERNELS:
            raise ValueError(f"FINSIGNAL_INT8_KERNEL={forced!r}: choose one of {', '.join(KERNELS)}")
        if forced == "fbgemm" and "fbgemm" not in torch.backends.quantized.supported_engines:
            raise ValueError("FINSIGNAL_INT8_KERNEL=fbgemm: this PyTorch build has no FBGEMM")
        return forced
    flags = _cpu_flags()
    if flags is None or any(f" {flag}" in flags for flag in ("avx512_vnni", "avx_vnni", "amx_int8")):
        return "int_mm"  # not Linux: trust the platform's kernel
    if " avx2" in flags and "fbgemm" in torch.backends.quantized.supported_engines:
        return "fbgemm"
    return "fp32"


INT8_KERNEL = _choose_kernel()


def int8_matmul(q: torch.Tensor, weight_t: torch.Tensor, grid_t: torch.Tensor | None) -> torch.Tensor:
    """int8 [M, K] x int8 [K, N] as float32: `torch._int_mm`, or the fp32 copy of the grid when there is one.

    Products of int8 values are exact in fp32 and so are their sums below 2^24 (K x 127^2 for K <= 1040),
    beyond that within one fp32 rounding: the fp32 path computes the same W8A8 model.
    """
    if grid_t is not None:
        return q.float() @ grid_t
    return torch._int_mm(q, weight_t).float()


def fbgemm_pack(qweight_t: torch.Tensor, scale: torch.Tensor) -> Any:
    """FBGEMM's packed form of int8 weights [in, out] with per-output-channel scales (zero points 0)."""
    out = qweight_t.shape[1]
    with warnings.catch_warnings():
        # PyTorch deprecates quantized tensors (in favour of torchao, not a dependency here); the pinned torch
        # has them, and through them FBGEMM's AVX2 u8 x s8 kernels
        warnings.filterwarnings("ignore", message=".*quantized tensor creation functions.*")
        weight = torch._make_per_channel_quantized_tensor(
            qweight_t.t().contiguous(), scale.reshape(-1).double(), torch.zeros(out, dtype=torch.long), 0)
    return torch.ops.quantized.linear_prepack(weight, None)


def fbgemm_matmul(x: torch.Tensor, packed: Any) -> torch.Tensor:
    """x [M, K] float32 times the packed int8 weights (scales applied), activations quantized per token.

    Each row is scaled to [-1, 1] and one extra row holding -1 and 1 pins FBGEMM's dynamic range for the
    whole tensor to [-1, 1]: every token gets the same 7-bit grid of its own range, so a document scores the
    same alone or in any batch, next to LLaMA's massive first-token activations or padding.
    """
    rows, width = x.shape
    absmax = torch.maximum(x.amax(dim=-1, keepdim=True), x.amin(dim=-1, keepdim=True).neg_()).clamp_min_(1e-12)
    scaled = x.new_zeros(rows + 1, width)
    torch.div(x, absmax, out=scaled[:rows])
    scaled[rows, 0], scaled[rows, -1] = -1.0, 1.0
    return torch.ops.quantized.linear_dynamic(scaled, packed, True)[:rows].mul_(absmax)


def _packed_bytes(qweight_t: torch.Tensor) -> int:
    """Bytes of FBGEMM's packed copy: the int8 values plus one int32 column offset per output channel."""
    return qweight_t.numel() + 4 * qweight_t.shape[1]


def quantize_per_channel(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-output-channel int8: (int8 weight [out, in], float32 scale [out])."""
    w = weight.detach().float()
    scale = (w.abs().amax(dim=1) / QMAX).clamp_min(1e-12)
    q = torch.round(w / scale[:, None]).clamp_(-QMAX, QMAX).to(torch.int8)
    return q, scale


def dequantize_per_channel(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Float32 weight from int8 values and per-channel scales."""
    return q.float() * scale.float().reshape(-1, 1)


def quantize_per_token(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric dynamic int8 over the last dimension: (int8 values, float32 scales [..., 1])."""
    # max(amax, -amin) is several times faster on CPU than abs().amax() or an inf-norm reduction
    absmax = torch.maximum(x.amax(dim=-1, keepdim=True), x.amin(dim=-1, keepdim=True).neg_())
    scale = absmax.div_(QMAX).clamp_min_(1e-12)
    return torch.round(x / scale).to(torch.int8), scale


def fake_quantize_weight(weight: torch.Tensor) -> torch.Tensor:
    """Per-channel int8 round trip; the gradient passes straight through (quantization-aware training)."""
    scale = (weight.detach().abs().amax(dim=1, keepdim=True) / QMAX).clamp_min(1e-12)
    q = torch.round(weight.detach() / scale).clamp_(-QMAX, QMAX) * scale
    return weight + (q - weight).detach()


def fake_quantize_tokens(x: torch.Tensor) -> torch.Tensor:
    """Per-token round trip through the activation grid this CPU's int8 kernel uses; the gradient passes
    straight through. FBGEMM's 7-bit grid on [-1, 1] (see `fbgemm_matmul`) is coarser than int8's, and a
    model trained on it loses nothing on the finer one, so quantization-aware training uses the coarser."""
    absmax = x.detach().abs().amax(dim=-1, keepdim=True).clamp_min(1e-12)
    if INT8_KERNEL == "fbgemm":
        step = absmax * (2 / 127)
        q = torch.round(x.detach() / step).clamp_(-64, 63) * step
    else:
        scale = absmax / QMAX
        q = torch.round(x.detach() / scale).clamp_(-QMAX, QMAX) * scale
    return x + (q - x).detach()


class _Int8Weights(nn.Module):
    """Holds int8 weights `qweight_t` [in, out] and scales [1, out]; runs them on this CPU's int8 kernel."""

    qweight_t: torch.Tensor
    scale: torch.Tensor
    bias: torch.Tensor | None

    def _prepare_kernel(self) -> None:
        """Build what `INT8_KERNEL` multiplies: nothing, an fp32 copy of the grid, or FBGEMM's packed copy.

        Neither copy is saved; `tensor_bytes` counts both (`packed_bytes` for the one that is no tensor).
        """
        self.register_buffer("grid_t", self.qweight_t.float() if INT8_KERNEL == "fp32" else None, persistent=False)
        self.packed = fbgemm_pack(self.qweight_t, self.scale) if INT8_KERNEL == "fbgemm" else None
        self.packed_bytes = _packed_bytes(self.qweight_t) if self.packed is not None else 0

    def _release_kernel(self) -> None:
        self.grid_t, self.packed, self.packed_bytes = None, None, 0

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        if self.packed is not None or self.grid_t is not None:
            self._prepare_kernel()  # new weights: the kernel's copy must follow them

    def gemm(self, x: torch.Tensor) -> torch.Tensor:
        """y [N, out] float32 for x [N, in] float32, bias included (a fused group's outputs side by side):
        the forward without reshaping, casting or caching."""
        y = self._gemm(x)
        if self.bias is not None:
            y.add_(self.bias)
        return y

    def _gemm(self, x: torch.Tensor) -> torch.Tensor:
        """x [M, in] float32 -> [M, out] float32, scales applied, no bias."""
        if self.packed is not None:
            return fbgemm_matmul(x, self.packed)
        q, sx = quantize_per_token(x)
        # an explicit float() then in-place scaling beats type-promoting int32 * float32 kernels on CPU
        return int8_matmul(q, self.qweight_t, self.grid_t).mul_(sx).mul_(self.scale)


class Int8Linear(_Int8Weights):
    """y = (int8(x) @ int8(W)^T) * s_x * s_w + b: one int8 GEMM per call."""

    def __init__(self, qweight: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None = None) -> None:
        super().__init__()
        if qweight.dtype != torch.int8 or qweight.dim() != 2:
            raise ValueError(f"Int8Linear needs a 2-D int8 weight, got {qweight.dtype} {tuple(qweight.shape)}")
        if scale.numel() != qweight.shape[0]:
            raise ValueError(f"{scale.numel()} scales for {qweight.shape[0]} output channels")
        self.out_features, self.in_features = qweight.shape
        # stored [in, out] contiguous: the operand layout torch._int_mm consumes without a copy
        self.register_buffer("qweight_t", qweight.t().contiguous())
        self.register_buffer("scale", scale.detach().float().reshape(1, -1).contiguous())
        self.register_buffer("bias", None if bias is None else bias.detach().float().clone())
        self._prepare_kernel()

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> Int8Linear:
        q, scale = quantize_per_channel(linear.weight)
        return cls(q, scale, linear.bias)

    @property
    def qweight(self) -> torch.Tensor:
        """The int8 weight as [out, in] (a view)."""
        return self.qweight_t.t()

    def dequantized_weight(self) -> torch.Tensor:
        return dequantize_per_channel(self.qweight, self.scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        return self.gemm(x.reshape(-1, self.in_features).float()).reshape(*lead, self.out_features).to(x.dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, W8A8 int8 ({INT8_KERNEL})"


class Int8Embedding(nn.Module):
    """Token embedding stored as int8 rows with one float32 scale per row."""

    def __init__(self, weight: torch.Tensor, padding_idx: int | None = None) -> None:
        super().__init__()
        q, scale = quantize_per_channel(weight)
        self.num_embeddings, self.embedding_dim = q.shape
        self.padding_idx = padding_idx
        self.register_buffer("qweight", q)
        self.register_buffer("scale", scale.reshape(-1, 1).contiguous())

    @classmethod
    def from_quantized(cls, qweight: torch.Tensor, scale: torch.Tensor, padding_idx: int | None = None) -> Int8Embedding:
        """The embedding as stored: int8 rows [vocab, hidden] and one scale per row."""
        if qweight.dtype != torch.int8 or qweight.dim() != 2 or scale.numel() != qweight.shape[0]:
            raise ValueError(f"Int8Embedding needs int8 rows and one scale each, got {qweight.dtype} "
                             f"{tuple(qweight.shape)} and {scale.numel()} scales")
        module = cls.__new__(cls)
        nn.Module.__init__(module)
        module.num_embeddings, module.embedding_dim = qweight.shape
        module.padding_idx = padding_idx
        module.register_buffer("qweight", qweight.contiguous())
        module.register_buffer("scale", scale.detach().float().reshape(-1, 1).contiguous())
        return module

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.qweight[ids].float().mul_(self.scale[ids])

    @property
    def weight(self) -> torch.Tensor:
        """The dequantized table, for code that reads `embed_tokens.weight` (its dtype or device)."""
        return dequantize_per_channel(self.qweight, self.scale)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, int8 rows"


class FusedInt8(_Int8Weights):
    """Several `Int8Linear`s reading the same input (q/k/v, gate/up) as one int8 GEMM.

    The input is quantized once and multiplied once; each projection's `Int8Slice` returns its columns.
    The result is cached for the input object it was computed from (held by reference, so no other
    tensor can take its identity) and dropped once every slice has been served.
    """

    def __init__(self, parts: list[Int8Linear]) -> None:
        super().__init__()
        in_features = {p.in_features for p in parts}
        if len(in_features) != 1:
            raise ValueError(f"fused projections must share the input width, got {sorted(in_features)}")
        self.in_features = in_features.pop()
        self.sizes = [p.out_features for p in parts]
        self.register_buffer("qweight_t", torch.cat([p.qweight_t for p in parts], dim=1).contiguous())
        self.register_buffer("scale", torch.cat([p.scale for p in parts], dim=1).contiguous())
        self._prepare_kernel()
        for p in parts:  # the fused copy replaces theirs
            p._release_kernel()
        biases = [p.bias for p in parts]
        self.register_buffer("bias", None if all(b is None for b in biases) else torch.cat(
            [b if b is not None else torch.zeros(n) for b, n in zip(biases, self.sizes)]))
        self._input: torch.Tensor | None = None
        self._outputs: tuple[torch.Tensor, ...] = ()
        self._served = 0

    def project(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Every projection's output for x [N, in] float32, from one GEMM (uncached)."""
        return self.gemm(x).split(self.sizes, dim=-1)

    def output(self, x: torch.Tensor, index: int) -> torch.Tensor:
        if self._input is not x:
            lead = x.shape[:-1]
            parts = self.project(x.reshape(-1, self.in_features).float())
            self._outputs = tuple(part.reshape(*lead, -1).to(x.dtype) for part in parts)
            self._input, self._served = x, 0
        out = self._outputs[index]
        self._served += 1
        if self._served == len(self.sizes):
            self._input, self._outputs = None, ()
        return out

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.sizes}, W8A8 int8 fused ({INT8_KERNEL})"


class Int8Slice(nn.Module):
    """One projection's share of a `FusedInt8` (the fused module is owned by the parent block)."""

    def __init__(self, fused: FusedInt8, index: int) -> None:
        super().__init__()
        self._fused = (fused,)  # a tuple, so the fused weights are registered (and counted) once
        self.index = index
        self.in_features, self.out_features = fused.in_features, fused.sizes[index]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._fused[0].output(x, self.index)


def fuse_projections(model: nn.Module) -> int:
    """In every LLaMA decoder layer, fuse q/k/v and gate/up `Int8Linear`s; return the groups fused."""
    fused = 0
    for layer in model.model.layers:  # type: ignore[union-attr]
        for block, names, attr in ((layer.self_attn, ("q_proj", "k_proj", "v_proj"), "qkv_int8"),
                                   (layer.mlp, ("gate_proj", "up_proj"), "gate_up_int8")):
            parts = [getattr(block, n) for n in names]
            if not all(isinstance(p, Int8Linear) for p in parts):
                continue
            group = FusedInt8(parts)
            setattr(block, attr, group)
            for i, n in enumerate(names):
                setattr(block, n, Int8Slice(group, i))
            fused += 1
    return fused
