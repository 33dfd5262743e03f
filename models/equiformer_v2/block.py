"""One EquiformerV2 block (Liao et al. 2023, arXiv 2306.12059, Fig. 1): pre-norm attention and FFN
with residuals, each branch under graph drop-path (Huang et al. 2016 stochastic depth, per structure)."""

from __future__ import annotations

import torch
from torch import nn

from models.equiformer_v2.attention import SO2EquivariantGraphAttention
from models.equiformer_v2.ffn import FeedForwardNetwork
from models.equiformer_v2.norm import EquivariantLayerNormSH
from models.equiformer_v2.so3 import EdgeFrames


class GraphDropPath(nn.Module):
    """In training, zero a residual branch for whole structures with probability p and rescale by 1/(1−p)."""

    def __init__(self, drop_prob: float) -> None:
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor, batch: torch.Tensor, num_graphs: int) -> torch.Tensor:
        if not self.training or self.drop_prob == 0.0:
            return x
        keep = 1.0 - self.drop_prob
        mask = torch.bernoulli(torch.full((num_graphs,), keep, dtype=x.dtype, device=x.device)) / keep
        return x * mask.index_select(0, batch).view(-1, *([1] * (x.dim() - 1)))

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"


class TransBlockV2(nn.Module):
    def __init__(
        self,
        attention: SO2EquivariantGraphAttention,
        ffn: FeedForwardNetwork,
        lmax: int,
        channels: int,
        drop_path_rate: float,
    ) -> None:
        super().__init__()
        self.norm_1 = EquivariantLayerNormSH(lmax, channels)
        self.ga = attention
        self.norm_2 = EquivariantLayerNormSH(lmax, channels)
        self.ffn = ffn
        self.drop_path = GraphDropPath(drop_path_rate) if drop_path_rate > 0 else None

    def forward(
        self,
        x: torch.Tensor,
        numbers: torch.Tensor,
        dist_features: torch.Tensor,
        edge_index: torch.Tensor,
        frames: EdgeFrames,
        batch: torch.Tensor,
        num_graphs: int,
    ) -> torch.Tensor:
        h = self.ga(self.norm_1(x), numbers, dist_features, edge_index, frames)
        if self.drop_path is not None:
            h = self.drop_path(h, batch, num_graphs)
        x = x + h
        h = self.ffn(self.norm_2(x))
        if self.drop_path is not None:
            h = self.drop_path(h, batch, num_graphs)
        return x + h
