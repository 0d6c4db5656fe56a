"""Compact storage of 2:4 semi-structured sparse weights: the kept values plus 2-bit position metadata.

In every group of 4 consecutive input weights of a row exactly 2 are kept. A row of `in` weights is
stored as `in / 2` values (same dtype as the weight: float32, or int8 after quantization) and `in / 8`
bytes of metadata: each group's two kept positions as two 2-bit indices (4 bits), two groups per byte.
Bytes per weight: float32 2.125 instead of 4 (53%); int8 0.625 instead of 1 (62.5%).

This is a storage format. CPUs have no 2:4 kernels, so the runtime expands it to dense weights on load.
"""

from __future__ import annotations

import torch


def mask_24(scores: torch.Tensor) -> torch.Tensor:
    """Boolean mask keeping the 2 highest scores in every group of 4 along the input dimension."""
    out_f, in_f = scores.shape
    if in_f % 4:
        raise ValueError(f"2:4 needs the input dimension to be a multiple of 4, got {in_f}")
    groups = scores.reshape(out_f, in_f // 4, 4)
    top = groups.topk(2, dim=-1).indices
    mask = torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, top, True)
    return mask.reshape(out_f, in_f)


def is_24(mask: torch.Tensor) -> bool:
    """True when every group of 4 keeps exactly 2."""
    out_f, in_f = mask.shape
    return in_f % 4 == 0 and bool((mask.reshape(out_f, in_f // 4, 4).sum(-1) == 2).all())


def pack_24(weight: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(values [out, in/2], metadata uint8 [out, in/8]) of `weight` at the positions `mask` keeps."""
    if not is_24(mask):
        raise ValueError("mask is not 2:4 (exactly 2 kept in every group of 4 inputs)")
    out_f, in_f = weight.shape
    if in_f % 8:
        raise ValueError(f"packing needs the input dimension to be a multiple of 8, got {in_f}")
    groups = mask.reshape(out_f, in_f // 4, 4)
    # kept positions in increasing order: argsort of (not kept, position) puts the 2 kept first
    pos = torch.argsort((~groups).to(torch.int8) * 4 + torch.arange(4), dim=-1)[..., :2]
    values = torch.gather(weight.reshape(out_f, in_f // 4, 4), -1, pos).reshape(out_f, in_f // 2)
    nibble = (pos[..., 0] | (pos[..., 1] << 2)).to(torch.uint8)  # [out, in/4], 4 bits each
    meta = nibble[:, 0::2] | (nibble[:, 1::2] << 4)
    return values.contiguous(), meta.contiguous()


def unpack_24(values: torch.Tensor, meta: torch.Tensor) -> torch.Tensor:
    """Dense [out, in] weight (zeros where pruned) from `pack_24`'s output."""
    out_f, half = values.shape
    in_f = half * 2
    nibble = torch.stack([meta & 0x0F, meta >> 4], dim=-1).reshape(out_f, in_f // 4).long()
    pos = torch.stack([nibble & 0x3, (nibble >> 2) & 0x3], dim=-1)  # [out, in/4, 2]
    dense = torch.zeros(out_f, in_f // 4, 4, dtype=values.dtype)
    dense.scatter_(-1, pos, values.reshape(out_f, in_f // 4, 2))
    return dense.reshape(out_f, in_f)


def packed_bytes(values: torch.Tensor, meta: torch.Tensor) -> int:
    return values.numel() * values.element_size() + meta.numel() * meta.element_size()
