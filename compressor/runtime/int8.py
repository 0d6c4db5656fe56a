"""Int8 inference on CPU: per-channel symmetric weights, dynamic per-token symmetric activations.

`Int8Linear` multiplies int8 activations by int8 weights with `torch._int_mm` (int32 accumulation;
oneDNN with VNNI on x86) and rescales the int32 result by the token and channel scales. Projections that
read the same input (q/k/v, gate/up) can be fused into one `Int8Linear` so each activation is quantized
once. `Int8Embedding` keeps one int8 row and one scale per token and dequantizes only the rows looked up.

This module imports torch at top level: import it lazily from code on the CLI's start-up path.
"""

from __future__ import annotations

import torch
from torch import nn

QMAX = 127  # symmetric int8 in [-127, 127]: negation never overflows, zero point is always 0


def _native_int8_gemm() -> bool:
    """Whether the CPU has int8 dot-product instructions (VNNI or AMX) for `torch._int_mm`.

    Without them PyTorch's int8 GEMM falls back to a scalar kernel: measured 59x slower than an fp32
    matmul on an AVX2 EPYC (864 x 576 by 576 x 1536: 1,451 ms vs 25 ms). There the same int8 grid is
    multiplied in fp32 instead (see `Int8Linear`).
    """
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return True  # not Linux: trust the platform's kernel
    return any(f" {flag}" in flags for flag in ("avx512_vnni", "avx_vnni", "amx_int8"))


INT8_GEMM = _native_int8_gemm()


def int8_matmul(q: torch.Tensor, weight_t: torch.Tensor, grid_t: torch.Tensor | None) -> torch.Tensor:
    """int8 [M, K] x int8 [K, N] as float32: `torch._int_mm`, or the fp32 copy of the grid when there is one.

    Products of int8 values are exact in fp32 and so are their sums below 2^24 (K x 127^2 for K <= 1040),
    beyond that within one fp32 rounding: the fp32 path computes the same W8A8 model.
    """
    if grid_t is not None:
        return q.float() @ grid_t
    return torch._int_mm(q, weight_t).float()


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
    """Per-token int8 round trip; the gradient passes straight through."""
    scale = (x.detach().abs().amax(dim=-1, keepdim=True) / QMAX).clamp_min(1e-12)
    q = torch.round(x.detach() / scale).clamp_(-QMAX, QMAX) * scale
    return x + (q - x).detach()


class Int8Linear(nn.Module):
    """y = (int8(x) @ int8(W)^T) * s_x * s_w + b: one int8 GEMM per call, int32 accumulation."""

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
        # no int8 dot products on this CPU: an fp32 copy of the grid (never saved, counted in memory)
        self.register_buffer("grid_t", None if INT8_GEMM else self.qweight_t.float(), persistent=False)

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
        q, sx = quantize_per_token(x.reshape(-1, self.in_features).float())
        # an explicit float() then in-place scaling beats type-promoting int32 * float32 kernels on CPU
        y = int8_matmul(q, self.qweight_t, self.grid_t).mul_(sx).mul_(self.scale)
        if self.bias is not None:
            y.add_(self.bias)
        return y.reshape(*lead, self.out_features).to(x.dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, W8A8 int8"


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


class FusedInt8(nn.Module):
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
        self.register_buffer("grid_t", None if INT8_GEMM else self.qweight_t.float(), persistent=False)
        for p in parts:  # the fused copy replaces theirs
            p.grid_t = None
        biases = [p.bias for p in parts]
        self.register_buffer("bias", None if all(b is None for b in biases) else torch.cat(
            [b if b is not None else torch.zeros(n) for b, n in zip(biases, self.sizes)]))
        self._input: torch.Tensor | None = None
        self._outputs: tuple[torch.Tensor, ...] = ()
        self._served = 0

    def output(self, x: torch.Tensor, index: int) -> torch.Tensor:
        if self._input is not x:
            lead = x.shape[:-1]
            q, sx = quantize_per_token(x.reshape(-1, self.in_features).float())
            y = int8_matmul(q, self.qweight_t, self.grid_t).mul_(sx).mul_(self.scale)
            if self.bias is not None:
                y.add_(self.bias)
            self._outputs = tuple(part.reshape(*lead, -1).to(x.dtype) for part in y.split(self.sizes, dim=-1))
            self._input, self._served = x, 0
        out = self._outputs[index]
        self._served += 1
        if self._served == len(self.sizes):
            self._input, self._outputs = None, ()
        return out

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.sizes}, W8A8 int8 fused"


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
