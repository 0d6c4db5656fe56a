"""A linear layer stored as two low-rank factors (x -> down -> up), for the truncated-SVD comparison row."""

from __future__ import annotations

import torch
from torch import nn


class LowRankLinear(nn.Module):
    """y = up(down(x)) + b, with down [r, in] and up [out, r]."""

    def __init__(self, down: torch.Tensor, up: torch.Tensor, bias: torch.Tensor | None = None) -> None:
        super().__init__()
        self.in_features, self.out_features, self.rank = down.shape[1], up.shape[0], down.shape[0]
        self.down = nn.Linear(self.in_features, self.rank, bias=False)
        self.up = nn.Linear(self.rank, self.out_features, bias=bias is not None)
        with torch.no_grad():
            self.down.weight.copy_(down)
            self.up.weight.copy_(up)
            if bias is not None:
                self.up.bias.copy_(bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.down(x))
