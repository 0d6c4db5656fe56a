"""Index packing for codebook (k-means) weights: 4 bits per index when the codebook has <= 16 entries."""

from __future__ import annotations

import torch


def index_bits(codebook_size: int) -> int:
    return 4 if codebook_size <= 16 else 8


def pack_indices(idx: torch.Tensor, codebook_size: int) -> torch.Tensor:
    """Flat uint8 tensor: two 4-bit indices per byte (<= 16 entries), else one index per byte."""
    flat = idx.reshape(-1).to(torch.uint8)
    if index_bits(codebook_size) == 8:
        return flat.clone()
    if flat.numel() % 2:
        flat = torch.cat([flat, flat.new_zeros(1)])
    return flat[0::2] | (flat[1::2] << 4)


def unpack_indices(packed: torch.Tensor, shape: tuple[int, ...], codebook_size: int) -> torch.Tensor:
    """Inverse of `pack_indices`."""
    n = 1
    for d in shape:
        n *= d
    if index_bits(codebook_size) == 8:
        return packed[:n].reshape(shape)
    both = torch.stack([packed & 0x0F, packed >> 4], dim=-1).reshape(-1)
    return both[:n].reshape(shape)
