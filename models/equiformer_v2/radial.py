"""Invariant edge features: Gaussian distance basis, per-block element embeddings, radial MLP.

EquiformerV2 as published (fairchem 1.x) expands distances in 600 Gaussians on [0, cutoff] with
width 2× their spacing and no envelope; every block concatenates its own source/target element
embeddings (edge_channels each), so each radial network reads 600 + 2·edge_channels features.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.layers import full_precision

NUM_GAUSSIANS = 600  # fixed by the reference implementation; `num_distance_basis` is not used there


class GaussianSmearing(nn.Module):
    """exp(−(d − μ_k)² / (2 (w·Δ)²)) for centers μ_k on [0, cutoff] Å, spacing Δ, width factor w = 2."""

    def __init__(self, cutoff: float, num_basis: int = NUM_GAUSSIANS, width: float = 2.0) -> None:
        super().__init__()
        self.num_basis = num_basis
        offset = torch.linspace(0.0, cutoff, num_basis, dtype=torch.float64)
        self.coeff = -0.5 / (width * cutoff / (num_basis - 1)) ** 2
        self.register_buffer("offset", offset, persistent=False)

    @full_precision  # far-neighbour Gaussians are far below fp16's smallest subnormal
    def forward(self, dist: torch.Tensor) -> torch.Tensor:
        return torch.exp(self.coeff * (dist.unsqueeze(-1) - self.offset.to(dist.dtype)).pow(2))


class RadialFunction(nn.Module):
    """MLP over ``channels`` = [in, hidden, ..., out]: Linear → LayerNorm → SiLU between layers."""

    def __init__(self, channels: list[int]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for k in range(1, len(channels)):
            layers.append(nn.Linear(channels[k - 1], channels[k]))
            if k < len(channels) - 1:
                layers += [nn.LayerNorm(channels[k]), nn.SiLU()]
        self.net = nn.Sequential(*layers)
        for m in self.net:
            if isinstance(m, nn.Linear):  # reference init: U(±1/sqrt(fan_in)), zero bias
                bound = m.in_features**-0.5
                nn.init.uniform_(m.weight, -bound, bound)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor, first_layer_done: bool = False) -> torch.Tensor:
        """``x``: the input features, or (``first_layer_done``) the first Linear's output already."""
        return self.net[1:](x) if first_layer_done else self.net(x)


class EdgeElementEmbedding(nn.Module):
    """Concatenate distance features with source (j) and target (i) element embeddings of one block."""

    def __init__(self, max_num_elements: int, edge_channels: int) -> None:
        super().__init__()
        self.source_embedding = nn.Embedding(max_num_elements, edge_channels)
        self.target_embedding = nn.Embedding(max_num_elements, edge_channels)
        nn.init.uniform_(self.source_embedding.weight, -0.001, 0.001)
        nn.init.uniform_(self.target_embedding.weight, -0.001, 0.001)

    def forward(self, dist_features: torch.Tensor, numbers: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        src = self.source_embedding(numbers[edge_index[0]]).to(dist_features.dtype)
        dst = self.target_embedding(numbers[edge_index[1]]).to(dist_features.dtype)
        return torch.cat([dist_features, src, dst], dim=-1)

    def project(
        self, linear: nn.Linear, dist_features: torch.Tensor, numbers: torch.Tensor, edge_index: torch.Tensor
    ) -> torch.Tensor:
        """``linear(self(dist_features, numbers, edge_index))`` without building the (E, D + 2C) input:
        the embedding part goes through ``linear`` once per element (table of max_num_elements rows) and is
        gathered per edge, and no gradient is formed for the (constant) distance features."""
        d, c = dist_features.shape[-1], self.source_embedding.embedding_dim
        w_dist, w_src, w_dst = linear.weight.split([d, c, c], dim=1)
        h = F.linear(dist_features, w_dist, linear.bias)
        src = F.linear(self.source_embedding.weight, w_src).index_select(0, numbers[edge_index[0]])
        dst = F.linear(self.target_embedding.weight, w_dst).index_select(0, numbers[edge_index[1]])
        return h + (src + dst).to(h.dtype)
