"""Equivariant graph attention of EquiformerV2 (Liao et al. 2023, arXiv 2306.12059, §3.1–3.2, Fig. 1).

For each edge j → i: concatenate the source and target features, rotate into the edge frame
keeping |m| ≤ mmax, apply an SO(2) convolution whose inputs are scaled by a radial function of
(600 Gaussians ‖ source/target element embeddings); its m = 0 part also emits the attention logits'
features and the activation's gating scalars. Logits: LayerNorm ("attention re-normalization") →
smooth leaky ReLU → dot with a learned vector per head; softmax over the edges into each target i.
Values: separable S² activation → second SO(2) convolution; heads are weighted, rotated back,
summed over incoming edges and projected by a per-degree linear map.
"""

from __future__ import annotations

import torch
from torch import nn

from models.equiformer_v2.activation import GateActivation, SeparableS2Activation, SmoothLeakyReLU
from models.equiformer_v2.grid import SphereGrid
from models.equiformer_v2.radial import EdgeElementEmbedding
from models.equiformer_v2.so2 import SO2Convolution
from models.equiformer_v2.so3 import CoefficientLayout, EdgeFrames, SO3Linear
from models.layers import full_precision


@full_precision
def segment_softmax(logits: torch.Tensor, index: torch.Tensor, num_segments: int) -> torch.Tensor:
    """Softmax of ``logits`` (E, H) over the edges sharing the same ``index`` (E,) entry, autocast off (sums
    of exponentials over up to ~100 edges lose the small weights in half precision)."""
    idx = index.unsqueeze(-1).expand_as(logits)
    seg_max = logits.new_full((num_segments, logits.shape[1]), float("-inf"))
    seg_max = seg_max.scatter_reduce(0, idx, logits, reduce="amax", include_self=True)
    ex = torch.exp(logits - seg_max.index_select(0, index).detach())
    denom = torch.zeros_like(seg_max).index_add_(0, index, ex)
    return ex / denom.index_select(0, index).clamp_min(torch.finfo(logits.dtype).tiny)


class _GatherPair(torch.autograd.Function):
    """[x[src] ‖ x[dst]] along channels, (N, F, C) → (E, F, 2C). Its backward hands index_add_ contiguous
    halves: the strided halves autograd would pass after ``torch.cat`` make index_add_ several times slower."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(src, dst)
        ctx.num_nodes = x.shape[0]
        return torch.cat([x.index_select(0, src), x.index_select(0, dst)], dim=2)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        src, dst = ctx.saved_tensors
        g_src, g_dst = grad.chunk(2, dim=2)
        out = grad.new_zeros(ctx.num_nodes, grad.shape[1], g_src.shape[2])
        return out.index_add_(0, src, g_src.contiguous()).index_add_(0, dst, g_dst.contiguous()), None, None


def gather_pair(x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
    """Source and target node features of every edge, concatenated along channels: (E, F, 2C)."""
    return _GatherPair.apply(x, edge_index[0], edge_index[1])


class SO2EquivariantGraphAttention(nn.Module):
    """Node features (N, (lmax+1)², C) → messages aggregated at targets (N, (lmax+1)², output_channels)."""

    def __init__(
        self,
        sphere_channels: int,
        hidden_channels: int,
        num_heads: int,
        attn_alpha_channels: int,
        attn_value_channels: int,
        output_channels: int,
        layout: CoefficientLayout,
        grid: SphereGrid,
        max_num_elements: int,
        edge_channels_list: list[int],
        use_attn_renorm: bool = True,
        use_gate_act: bool = False,
        use_sep_s2_act: bool = True,
        alpha_drop: float = 0.0,
        exact_equivariant_gate: bool = False,
    ) -> None:
        super().__init__()
        if not (use_gate_act or use_sep_s2_act):
            raise ValueError("the attention needs use_gate_act or use_sep_s2_act (plain S² activation is not built)")
        self.num_heads, self.alpha_channels, self.value_channels = num_heads, attn_alpha_channels, attn_value_channels
        self.hidden_channels, self.lmax = hidden_channels, layout.lmax
        self.use_gate_act = use_gate_act
        self.edge_embedding = EdgeElementEmbedding(max_num_elements, edge_channels_list[-1])
        rad_channels = [edge_channels_list[0] + 2 * edge_channels_list[-1], *edge_channels_list[1:]]
        n_alpha = num_heads * attn_alpha_channels
        n_gate = layout.lmax * hidden_channels if use_gate_act else hidden_channels
        self.so2_conv_1 = SO2Convolution(
            2 * sphere_channels, hidden_channels, layout, rad_channels, extra_m0_output_channels=n_alpha + n_gate
        )
        self.alpha_norm = nn.LayerNorm(attn_alpha_channels) if use_attn_renorm else nn.Identity()
        self.alpha_act = SmoothLeakyReLU()
        bound = attn_alpha_channels**-0.5
        self.alpha_dot = nn.Parameter(torch.empty(num_heads, attn_alpha_channels).uniform_(-bound, bound))
        self.alpha_dropout = nn.Dropout(alpha_drop) if alpha_drop > 0 else None
        if use_gate_act:
            self.act = GateActivation(layout.lmax, layout.mmax, hidden_channels, m_major=True)
        else:
            self.act = SeparableS2Activation(grid, exact=exact_equivariant_gate)
        self.so2_conv_2 = SO2Convolution(hidden_channels, num_heads * attn_value_channels, layout)
        self.proj = SO3Linear(num_heads * attn_value_channels, output_channels, lmax=layout.lmax)

    def forward(
        self,
        x: torch.Tensor,
        numbers: torch.Tensor,
        dist_features: torch.Tensor,
        edge_index: torch.Tensor,
        frames: EdgeFrames,
    ) -> torch.Tensor:
        dst = edge_index[1]
        h_edge = self.edge_embedding.project(self.so2_conv_1.rad_func.net[0], dist_features, numbers, edge_index)
        msg = gather_pair(x, edge_index)
        msg = frames.rotate(msg)
        msg, extra = self.so2_conv_1(msg, h_edge, first_layer_done=True)
        n_alpha = self.num_heads * self.alpha_channels
        alpha_feat, gating = extra[:, :n_alpha], extra[:, n_alpha:]
        msg = self.act(gating, msg)
        msg, _ = self.so2_conv_2(msg)

        alpha = self.alpha_act(self.alpha_norm(alpha_feat.reshape(-1, self.num_heads, self.alpha_channels)))
        alpha = torch.einsum("ehk,hk->eh", alpha, self.alpha_dot.to(alpha.dtype))
        alpha = segment_softmax(alpha, dst, x.shape[0])
        if self.alpha_dropout is not None:
            alpha = self.alpha_dropout(alpha)
        e, r = msg.shape[0], msg.shape[1]
        msg = (msg.view(e, r, self.num_heads, self.value_channels) * alpha.view(e, 1, self.num_heads, 1)).view(e, r, -1)
        msg = frames.rotate_back(msg)
        out = x.new_zeros(x.shape[0], msg.shape[1], msg.shape[2]).index_add_(
            0, dst, msg.to(x.dtype)
        )  # sum in x's dtype under autocast
        return self.proj(out)
