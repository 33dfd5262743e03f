"""Nonlinearities on SO(3) features: the separable S² activation, the gate, the grid MLP.

- Separable S² activation (Liao et al. 2023, arXiv 2306.12059, §3.2): degree 0 takes SiLU of
  separate gating scalars; degrees l > 0 are sampled on the S² grid, passed through SiLU pointwise
  and projected back. Equivariant up to the grid's sampling error.
- Gate activation (Weiler et al. 2018, arXiv 1807.02547; the published ``use_gate_act`` switch):
  SiLU on degree 0, each degree l > 0 scaled by sigmoid of its own gating scalar.
- Grid MLP (the OMat24 feed-forward, ``use_grid_mlp``): a 3-layer bias-free MLP applied pointwise
  on the grid.

``exact`` (the model's ``exact_equivariant_gate`` switch) replaces every grid operation by an
exactly equivariant gate with the *same parameters*: the S² activation becomes l > 0 · sigmoid(gating
scalar) and the grid MLP becomes channel-mixing linear maps (applied to every coefficient, which is
equivariant without a bias) interleaved with a gate driven by each channel's own degree-0 part.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.equiformer_v2.grid import SphereGrid
from models.equiformer_v2.so3 import CoefficientLayout


class SmoothLeakyReLU(nn.Module):
    """x·(1+a)/2 + x·(1−a)/2·(2σ(x)−1), a smooth leaky ReLU (negative slope a = 0.2) for attention logits."""

    def __init__(self, negative_slope: float = 0.2) -> None:
        super().__init__()
        self.alpha = negative_slope

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * (1 + self.alpha) * x + 0.5 * (1 - self.alpha) * x * (2 * torch.sigmoid(x) - 1)


def _gate(h: torch.Tensor) -> torch.Tensor:
    """Exactly equivariant stand-in for pointwise SiLU on the sphere: SiLU(h₀), h_{l>0}·σ(h₀) per channel."""
    h0 = h[:, :1]
    return torch.cat([F.silu(h0), h[:, 1:] * torch.sigmoid(h0)], dim=1)


class SeparableS2Activation(nn.Module):
    """(gating scalars (n, C), features (n, R, C)) → (n, R, C); R is the layout of ``grid``."""

    def __init__(self, grid: SphereGrid, exact: bool = False) -> None:
        super().__init__()
        self.grid, self.exact = grid, exact

    def forward(self, scalars: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        out0 = F.silu(scalars).unsqueeze(1)
        rest = x[:, 1:] * torch.sigmoid(scalars).unsqueeze(1) if self.exact else self.grid.silu_rest(x)
        return torch.cat([out0, rest.to(out0.dtype)], dim=1)


class GateActivation(nn.Module):
    """(gating scalars (n, lmax·C), features (n, R, C)) → (n, R, C), R the |m| ≤ mmax layout
    (l-major, or the edge frame's m-major order with ``m_major``)."""

    def __init__(self, lmax: int, mmax: int, num_channels: int, m_major: bool = False) -> None:
        super().__init__()
        self.lmax, self.num_channels = lmax, num_channels
        if m_major:
            expand = [lval - 1 for lval in CoefficientLayout(lmax, mmax).m_major_degree[1:]]
        else:
            expand = [lval - 1 for lval in range(1, lmax + 1) for _ in range(min(2 * lval + 1, 2 * mmax + 1))]
        self.register_buffer("expand_index", torch.tensor(expand, dtype=torch.long), persistent=False)

    def forward(self, scalars: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        gates = torch.sigmoid(scalars).view(-1, self.lmax, self.num_channels).index_select(1, self.expand_index)
        return torch.cat([F.silu(x[:, :1]), x[:, 1:] * gates], dim=1)


class GridMLP(nn.Module):
    """Pointwise 3-layer MLP (bias-free, SiLU) on the S² grid of full-layout features (n, (lmax+1)², C)."""

    def __init__(self, channels: int, grid: SphereGrid, exact: bool = False) -> None:
        super().__init__()
        self.grid, self.exact = grid, exact
        self.layers = nn.ModuleList([nn.Linear(channels, channels, bias=False) for _ in range(3)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.exact:
            h = x
            for k, lin in enumerate(self.layers):
                h = lin(h)
                if k < len(self.layers) - 1:
                    h = _gate(h)
            return h
        g = self.grid.to_grid(x)
        for k, lin in enumerate(self.layers):
            g = lin(g)
            if k < len(self.layers) - 1:
                g = F.silu(g)
        return self.grid.from_grid(g)
