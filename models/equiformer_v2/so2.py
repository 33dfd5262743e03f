"""eSCN SO(2) convolution (Passaro & Zitnick 2023, arXiv 2302.03655, §3; EquiformerV2 §3.1).

In each edge's frame (edge along ẑ) a rotation about the edge mixes only the (+m, −m) pair of
each order m, so the most general equivariant linear map is, per m, a complex multiplication:
  y₊ = W_r x₊ − W_i x₋,   y₋ = W_r x₋ + W_i x₊,
with W_r, W_i mixing degrees l ≥ m and channels; m = 0 is a plain real linear map (with bias).
Optionally each order's input is first scaled elementwise by a radial function of the edge's
invariant features, and the m = 0 map emits extra invariant channels (attention logits, gates).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from models.equiformer_v2.radial import RadialFunction
from models.equiformer_v2.so3 import CoefficientLayout


class SO2Convolution(nn.Module):
    """(E, R, C_in) edge-frame features (|m| ≤ mmax layout) → (E, R, C_out) [, extra (E, n_extra)]."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        layout: CoefficientLayout,
        edge_channels_list: list[int] | None = None,
        extra_m0_output_channels: int = 0,
    ) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.layout = in_channels, out_channels, layout
        self.extra = extra_m0_output_channels
        sizes = layout.m_size
        self.fc_m0 = nn.Linear(sizes[0] * in_channels, sizes[0] * out_channels + self.extra)
        self.fc_m = nn.ModuleList()
        for m in range(1, layout.mmax + 1):
            fc = nn.Linear(sizes[m] * in_channels, 2 * sizes[m] * out_channels, bias=False)
            with torch.no_grad():
                fc.weight.mul_(1 / math.sqrt(2))  # W_r and W_i both act: keep the output variance
            self.fc_m.append(fc)
        self.rad_sizes = [s * in_channels for s in sizes]
        self.rad_func = None
        if edge_channels_list is not None:
            self.rad_func = RadialFunction([*edge_channels_list, sum(self.rad_sizes)])
        self.register_buffer("to_m", layout.to_m.clone(), persistent=False)
        self.register_buffer("from_m", layout.from_m.clone(), persistent=False)

    def forward(self, x: torch.Tensor, x_edge: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        num_edges = x.shape[0]
        x = x.index_select(1, self.to_m)
        rad = self.rad_func(x_edge) if self.rad_func is not None else None
        sizes = self.layout.m_size
        x0 = x[:, : sizes[0]].reshape(num_edges, -1)
        if rad is not None:
            x0 = x0 * rad[:, : self.rad_sizes[0]]
        y0 = self.fc_m0(x0)
        extra = y0[:, : self.extra] if self.extra else None
        out = [y0[:, self.extra :].reshape(num_edges, sizes[0], self.out_channels)]
        offset, offset_rad = sizes[0], self.rad_sizes[0]
        for m in range(1, self.layout.mmax + 1):
            xm = x[:, offset : offset + 2 * sizes[m]].reshape(num_edges, 2, -1)
            if rad is not None:
                xm = xm * rad[:, offset_rad : offset_rad + self.rad_sizes[m]].unsqueeze(1)
            ym = self.fc_m[m - 1](xm)
            half = ym.shape[-1] // 2
            yr, yi = ym[..., :half], ym[..., half:]
            y_plus = yr[:, 0] - yi[:, 1]
            y_minus = yr[:, 1] + yi[:, 0]
            out.append(torch.stack([y_plus, y_minus], dim=1).reshape(num_edges, 2 * sizes[m], self.out_channels))
            offset += 2 * sizes[m]
            offset_rad += self.rad_sizes[m]
        y = torch.cat(out, dim=1).index_select(1, self.from_m)
        return y, extra
