"""``fcn``: a fully connected baseline, a per-atom MLP on a radial descriptor of its neighbors.

The descriptor of atom i is a Behler–Parrinello G2 radial symmetry function (Behler 2011,
JCP 134, 074106, eq. 6) resolved by neighbor species:

    G_i[c, k] = (1/n_norm) Σ_j a_c(Z_j) · exp(−(r_ij − μ_k)² / (2w²)) · f_c(r_ij)

with Gaussians μ_k on [0, r_c], Behler's cosine cutoff f_c, and a_c(Z_j) a learned species
weight per channel c (the element-weighted ACSF of Gastegger et al. 2018, JCP 148, 241709,
which keeps the input small for 118 elements). The MLP sees [G_i, b(Z_i)] with b a learned
embedding of the central species, so every (center, neighbor) element pair gets its own
channel mix. Distances come from ``geometry.dist`` so the energy is differentiable in
positions and strain: forces = −∂E/∂x and stress = (1/V) ∂E/∂ε come from the base class.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from engine.data.graph import Batch, EdgeGeometry
from models import register
from models.base import MAX_Z, ModelConfig, Potential, RawOutput
from models.layers import MLP, GaussianBasis, cosine_cutoff, scatter_sum


@dataclass
class FCNConfig(ModelConfig):
    """Size knobs: species channels, Gaussians, MLP width and depth; cutoff in Å."""

    species_channels: int = 4
    num_rbf: int = 16
    hidden: int = 64
    depth: int = 2
    neighbor_norm: float = 16.0  # descriptor divided by this (a typical neighbor count) to keep inputs O(1)

    def __post_init__(self) -> None:
        for key in ("species_channels", "hidden", "depth"):
            if int(getattr(self, key)) < 1:
                raise ValueError(f"{key} must be ≥ 1, got {getattr(self, key)}")
        if self.neighbor_norm <= 0:
            raise ValueError(f"neighbor_norm must be > 0, got {self.neighbor_norm}")
        if self.num_rbf < 2:
            raise ValueError(f"num_rbf must be ≥ 2, got {self.num_rbf}")
        if self.cutoff <= 0:
            raise ValueError(f"cutoff must be > 0 Å, got {self.cutoff}")


# species channels, Gaussians, hidden width, depth: ~10³ → ~10⁶ parameters. f5 (9.5·10⁵, f4's descriptor with a
# wider MLP) tops the default params ladder; f6 (1.6·10⁶, named f5 until 2026-11-30) costs ~4× f4 per step.
PRESETS = {
    f"f{k}": {"species_channels": c, "num_rbf": r, "hidden": h, "depth": L}
    for k, (c, r, h, L) in enumerate(
        [(2, 8, 16, 2), (4, 12, 48, 2), (4, 16, 128, 2), (8, 16, 256, 3), (8, 24, 512, 3), (8, 24, 640, 3),
         (16, 32, 768, 3)]
    )
}


@register("fcn", presets=PRESETS)
class FCN(Potential):
    """Per-atom MLP on species-weighted G2 descriptors, energy summed, conservative forces."""

    force_mode = "conservative"
    config_class = FCNConfig

    def __init__(self, config: FCNConfig) -> None:
        super().__init__(config)
        c = config
        self.rbf = GaussianBasis(0.0, c.cutoff, c.num_rbf)
        self.neighbor_species = nn.Embedding(MAX_Z, c.species_channels)
        self.center_species = nn.Embedding(MAX_Z, c.species_channels)
        self.mlp = MLP(c.species_channels * c.num_rbf + c.species_channels, c.hidden, 1, depth=c.depth)

    def descriptor(self, batch: Batch, geometry: EdgeGeometry) -> torch.Tensor:
        """G_i (N, species_channels · num_rbf), see module docstring."""
        c = self.config
        src, dst = batch.edge_index[0], batch.edge_index[1]
        radial = self.rbf(geometry.dist) * cosine_cutoff(geometry.dist, c.cutoff).unsqueeze(-1)  # (E, K)
        weights = self.neighbor_species(batch.numbers[src]).to(radial.dtype)  # (E, C)
        per_edge = (weights.unsqueeze(-1) * radial.unsqueeze(-2)).flatten(1)  # (E, C·K)
        return scatter_sum(per_edge, dst, batch.num_atoms) / c.neighbor_norm

    def predict(self, batch: Batch, geometry: EdgeGeometry) -> RawOutput:
        g = self.descriptor(batch, geometry)
        center = self.center_species(batch.numbers).to(g.dtype)
        e_atom = self.mlp(torch.cat([g, center], dim=-1)).squeeze(-1).to(batch.positions.dtype)
        return RawOutput(energy=scatter_sum(e_atom, batch.batch, batch.num_graphs))
