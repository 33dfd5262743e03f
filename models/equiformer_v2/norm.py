"""Separable equivariant layer norm, ``layer_norm_sh`` (Liao et al. 2023, arXiv 2306.12059, §3.3).

Degree 0 gets an ordinary LayerNorm over channels. All degrees l > 0 share one scale: the RMS over
channels of the degree-balanced mean square (each degree weighted 1/(2l+1), degrees averaged), so
the norm treats every l equally however many orders it has. Each l > 0 then gets its own affine
gain per channel; no bias (a bias on l > 0 would break equivariance). Runs with autocast off (float32 or
float64): its mean squares overflow fp16 and would zero every l > 0 coefficient.
"""

from __future__ import annotations

import torch
from torch import nn

from models.layers import full_precision


class EquivariantLayerNormSH(nn.Module):
    """(n, (lmax+1)², C) → same shape. Parameters: LayerNorm(C) for l = 0 and a (lmax, C) gain."""

    def __init__(self, lmax: int, num_channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.lmax, self.num_channels, self.eps = lmax, num_channels, eps
        self.norm_l0 = nn.LayerNorm(num_channels, eps=eps)
        self.affine_weight = nn.Parameter(torch.ones(lmax, num_channels))
        balance = torch.zeros((lmax + 1) ** 2 - 1)
        expand = torch.zeros((lmax + 1) ** 2 - 1, dtype=torch.long)
        for lval in range(1, lmax + 1):
            s = slice(lval**2 - 1, (lval + 1) ** 2 - 1)
            balance[s] = 1.0 / ((2 * lval + 1) * lmax)
            expand[s] = lval - 1
        self.register_buffer("balance_degree_weight", balance, persistent=False)
        self.register_buffer("expand_index", expand, persistent=False)

    @full_precision  # mean squares of l > 0 overflow fp16; the residual stream stays ≥ float32
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out0 = self.norm_l0(x[:, :1])
        if self.lmax == 0:
            return out0
        rest = x[:, 1:]
        mean_sq = torch.einsum("nic,i->nc", rest.pow(2), self.balance_degree_weight.to(rest.dtype))
        inv = (mean_sq.mean(dim=1, keepdim=True) + self.eps).rsqrt().unsqueeze(1)  # (n, 1, 1)
        gain = self.affine_weight.index_select(0, self.expand_index).unsqueeze(0)  # (1, F-1, C)
        return torch.cat([out0, rest * inv * gain], dim=1)

    def extra_repr(self) -> str:
        return f"lmax={self.lmax}, num_channels={self.num_channels}, eps={self.eps}"
