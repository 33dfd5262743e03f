"""Feed-forward network of EquiformerV2 (Liao et al. 2023, arXiv 2306.12059, §3.2).

Per-degree linear map → nonlinearity → per-degree linear map. The nonlinearity is, by switch:
the grid MLP (``use_grid_mlp``; OMat24 models) with degree 0 replaced by SiLU(Linear(x₀)) when
``use_sep_s2_act``; otherwise the gate (``use_gate_act``) or the separable S² activation, both
driven by gating scalars from a linear map of x₀.
"""

from __future__ import annotations

import torch
from torch import nn

from models.equiformer_v2.activation import GateActivation, GridMLP, SeparableS2Activation
from models.equiformer_v2.grid import SphereGrid
from models.equiformer_v2.so3 import SO3Linear


class FeedForwardNetwork(nn.Module):
    """(N, (lmax+1)², C_in) → (N, (lmax+1)², C_out); ``grid`` is the full-layout (mmax = lmax) S² grid."""

    def __init__(
        self,
        sphere_channels: int,
        hidden_channels: int,
        output_channels: int,
        lmax: int,
        grid: SphereGrid,
        use_gate_act: bool = False,
        use_grid_mlp: bool = True,
        use_sep_s2_act: bool = True,
        exact_equivariant_gate: bool = False,
    ) -> None:
        super().__init__()
        self.use_grid_mlp, self.use_sep_s2_act, self.use_gate_act = use_grid_mlp, use_sep_s2_act, use_gate_act
        self.so3_linear_1 = SO3Linear(sphere_channels, hidden_channels, lmax)
        self.scalar_mlp = None
        self.gating_linear = None
        if use_grid_mlp:
            if use_sep_s2_act:
                self.scalar_mlp = nn.Sequential(nn.Linear(sphere_channels, hidden_channels), nn.SiLU())
            self.grid_mlp = GridMLP(hidden_channels, grid, exact=exact_equivariant_gate)
        elif use_gate_act:
            self.gating_linear = nn.Linear(sphere_channels, lmax * hidden_channels)
            self.act = GateActivation(lmax, lmax, hidden_channels)
        elif use_sep_s2_act:
            self.gating_linear = nn.Linear(sphere_channels, hidden_channels)
            self.act = SeparableS2Activation(grid, exact=exact_equivariant_gate)
        else:
            raise ValueError("the FFN needs use_grid_mlp, use_gate_act or use_sep_s2_act (plain S² act is not built)")
        self.so3_linear_2 = SO3Linear(hidden_channels, output_channels, lmax)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x0 = x[:, 0]
        h = self.so3_linear_1(x)
        if self.use_grid_mlp:
            h = self.grid_mlp(h)
            if self.scalar_mlp is not None:
                h = torch.cat([self.scalar_mlp(x0).unsqueeze(1), h[:, 1:]], dim=1)
        else:
            h = self.act(self.gating_linear(x0), h)
        return self.so3_linear_2(h)
