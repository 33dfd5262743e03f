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
import torch.nn.functional as F
from torch import nn

from models.equiformer_v2.radial import RadialFunction
from models.equiformer_v2.so3 import CoefficientLayout


class SO2Convolution(nn.Module):
    """(E, R, C_in) edge-frame features (|m| ≤ mmax, m-major order) → (E, R, C_out) [, extra (E, n_extra)]."""

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

    def forward(
        self, x: torch.Tensor, x_edge: torch.Tensor | None = None, first_layer_done: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``x`` in the edge frame's m-major order (``CoefficientLayout.to_m``); the output too. ``x_edge``:
        the radial function's input, or its first Linear's output with ``first_layer_done``."""
        num_edges = x.shape[0]
        sizes = self.layout.m_size
        parts = x.split([sizes[0]] + [2 * s for s in sizes[1:]], dim=1)
        rads = None
        if self.rad_func is not None:
            rads = self.rad_func(x_edge, first_layer_done).split(self.rad_sizes, dim=1)
        x0 = parts[0].reshape(num_edges, -1)
        if rads is not None:
            x0 = x0 * rads[0]
        y0 = self.fc_m0(x0)
        if self.extra:
            extra, y0 = y0.split([self.extra, y0.shape[1] - self.extra], dim=1)
        else:
            extra = None
        out = [y0.reshape(num_edges, sizes[0], self.out_channels)]
        for m in range(1, self.layout.mmax + 1):
            xm = parts[m]  # (E, 2·size, C_in): the +m block, then the −m block
            if rads is not None:
                xm = (xm.reshape(num_edges, 2, -1) * rads[m].unsqueeze(1)).reshape(num_edges, -1)
            else:
                xm = xm.reshape(num_edges, -1)
            ym = F.linear(xm, self._complex_weight(self.fc_m[m - 1].weight))
            out.append(ym.view(num_edges, -1, self.out_channels))
        return torch.cat(out, dim=1), extra

    @staticmethod
    def _complex_weight(weight: torch.Tensor) -> torch.Tensor:
        """[W_r; W_i] (2K_out, K_in) → [[W_r, −W_i], [W_i, W_r]] (2K_out, 2K_in): [x₊, x₋] ↦ [y₊, y₋] in one GEMM."""
        w_r, w_i = weight.chunk(2, dim=0)
        return torch.cat([torch.cat([w_r, -w_i], dim=1), torch.cat([w_i, w_r], dim=1)], dim=0)
