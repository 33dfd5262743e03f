"""Input embeddings: atom (degree-0) embedding and the edge-degree embedding (Liao et al. 2023, §3.3).

The edge-degree embedding gives every atom non-scalar features from the start: each edge's radial
function produces m = 0 coefficients for l = 0..lmax in the edge frame, which are rotated back to
the global frame (the truncated |m| ≤ mmax rotation, with its l > mmax rescaling), summed over the
edges into each target atom, and divided by ``avg_degree``.
"""

from __future__ import annotations

import torch
from torch import nn

from models.equiformer_v2.radial import EdgeElementEmbedding, RadialFunction
from models.equiformer_v2.so3 import CoefficientLayout, EdgeFrames


class EdgeDegreeEmbedding(nn.Module):
    """(numbers, distance features, edges, frames) → (N, (lmax+1)², C) node features."""

    def __init__(
        self,
        sphere_channels: int,
        layout: CoefficientLayout,
        max_num_elements: int,
        edge_channels_list: list[int],
        avg_degree: float,
    ) -> None:
        super().__init__()
        self.sphere_channels, self.layout, self.avg_degree = sphere_channels, layout, avg_degree
        self.edge_embedding = EdgeElementEmbedding(max_num_elements, edge_channels_list[-1])
        rad_channels = [edge_channels_list[0] + 2 * edge_channels_list[-1], *edge_channels_list[1:]]
        self.rad_func = RadialFunction([*rad_channels, (layout.lmax + 1) * sphere_channels])

    def forward(
        self,
        numbers: torch.Tensor,
        dist_features: torch.Tensor,
        edge_index: torch.Tensor,
        frames: EdgeFrames,
        num_nodes: int,
    ) -> torch.Tensor:
        h_edge = self.edge_embedding.project(self.rad_func.net[0], dist_features, numbers, edge_index)
        m0 = self.rad_func(h_edge, first_layer_done=True).view(-1, self.layout.lmax + 1, self.sphere_channels)
        msg = frames.rotate_back_m0(m0)  # only the m = 0 columns are non-zero
        msg = msg.to(dist_features.dtype)  # sum in the geometry's dtype under autocast
        out = msg.new_zeros(num_nodes, msg.shape[1], msg.shape[2]).index_add_(0, edge_index[1], msg)
        return out / self.avg_degree


class AtomEmbedding(nn.Module):
    """Degree-0 coefficients from the element; all l > 0 start at zero."""

    def __init__(self, max_num_elements: int, sphere_channels: int, lmax: int) -> None:
        super().__init__()
        self.lmax = lmax
        self.sphere_embedding = nn.Embedding(max_num_elements, sphere_channels)

    def forward(self, numbers: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        x0 = self.sphere_embedding(numbers).to(dtype).unsqueeze(1)
        rest = x0.new_zeros(x0.shape[0], (self.lmax + 1) ** 2 - 1, x0.shape[2])
        return torch.cat([x0, rest], dim=1)
