"""Output heads of the OMat24 EquiformerV2 models (Barroso-Luque et al. 2024, arXiv 2410.12771, §4).

- Energy: the FFN applied to the final features, its degree-0 output per atom, summed over each
  structure and divided by ``avg_num_nodes`` (1.0 in the engine, 31.17 as published: see
  ``EquiformerV2Config``).
- Forces (direct): a separate equivariant graph attention block with one output channel, whose
  l = 1 coefficients are the per-atom force vector.
- Stress (rank-2 symmetric, decomposed): per edge, the invariant x_e = LN(Σ_lm [x_j ‖ x_i]_lm ·
  LN_sh(Y_lm(r_ij))); per atom, the mean over incoming edges of x_e (isotropic, l = 0 path) and of
  Y₂(r̂_ij) ⊗ x_e (anisotropic, l = 2 path); a 2-layer MLP on each; the mean over atoms of each
  structure; σ = iso · I/√3 + Σ_m aniso_m B_m with {I/√3, B_m} an orthonormal basis of symmetric 3×3.
  The reference applies Linear+bias and SiLU to each of the five l = 2 components, which is not
  equivariant; here the l = 2 MLP uses the same parameters equivariantly: h = W₁v gated by
  σ(‖h‖ + b₁) (a norm nonlinearity, Weiler et al. 2018, arXiv 1807.02547), output W₂h · exp(b₂).
"""

from __future__ import annotations

import math
from functools import cache

import torch
import torch.nn.functional as F
from torch import nn

from models.equiformer_v2.attention import SO2EquivariantGraphAttention, gather_pair
from models.equiformer_v2.ffn import FeedForwardNetwork
from models.equiformer_v2.norm import EquivariantLayerNormSH
from models.equiformer_v2.so3 import EdgeFrames, spherical_harmonics
from models.layers import full_precision


def _segment_sum(values: torch.Tensor, index: torch.Tensor, num: int) -> torch.Tensor:
    return values.new_zeros(num, *values.shape[1:]).index_add_(0, index, values)


def _segment_mean(values: torch.Tensor, index: torch.Tensor, num: int) -> torch.Tensor:
    counts = torch.zeros(num, dtype=values.dtype, device=values.device).index_add_(
        0, index, torch.ones_like(index, dtype=values.dtype)
    )
    return _segment_sum(values, index, num) / counts.clamp_min(1).view(-1, *([1] * (values.dim() - 1)))


@cache
def l2_basis() -> torch.Tensor:
    """(5, 3, 3) symmetric traceless matrices B_m, Frobenius-orthonormal, with Y₂ₘ(r) ∝ rᵀ B_m r."""
    eye = torch.eye(3, dtype=torch.float64, device="cpu")
    y_axes = spherical_harmonics(2, eye, normalize=False)[:, 4:9]  # (3, 5)
    q = torch.zeros(5, 3, 3, dtype=torch.float64, device="cpu")
    for i in range(3):
        q[:, i, i] = y_axes[i]
        for j in range(i + 1, 3):
            yij = spherical_harmonics(2, (eye[i] + eye[j]).unsqueeze(0), normalize=False)[0, 4:9]
            q[:, i, j] = q[:, j, i] = 0.5 * (yij - y_axes[i] - y_axes[j])
    return q / torch.linalg.norm(q.reshape(5, 9), dim=1).view(5, 1, 1)


class EnergyHead(nn.Module):
    def __init__(self, ffn: FeedForwardNetwork, avg_num_nodes: float) -> None:
        super().__init__()
        self.energy_block, self.avg_num_nodes = ffn, avg_num_nodes

    def forward(self, x: torch.Tensor, batch: torch.Tensor, num_graphs: int) -> torch.Tensor:
        node_energy = self.energy_block(x)[:, 0, 0]
        return _segment_sum(node_energy, batch, num_graphs) / self.avg_num_nodes


class ForceHead(nn.Module):
    # full-layout indices of the l = 1 coefficients (m = +1, −1, 0) ↔ (x, y, z) in our real SH convention
    _XYZ = (3, 1, 2)

    def __init__(self, attention: SO2EquivariantGraphAttention) -> None:
        super().__init__()
        self.force_block = attention

    def forward(
        self,
        x: torch.Tensor,
        numbers: torch.Tensor,
        dist_features: torch.Tensor,
        edge_index: torch.Tensor,
        frames: EdgeFrames,
    ) -> torch.Tensor:
        out = self.force_block(x, numbers, dist_features, edge_index, frames)
        return out[:, list(self._XYZ), 0]


class NormGatedL2MLP(nn.Module):
    """Equivariant 2-layer MLP on l = 2 features (n, 5, C) → (n, 5); same parameters as Linear(C,C)+Linear(C,1)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        bound = channels**-0.5
        self.weight_1 = nn.Parameter(torch.empty(channels, channels).uniform_(-bound, bound))
        self.gate_bias = nn.Parameter(torch.zeros(channels))
        self.weight_2 = nn.Parameter(torch.empty(1, channels).uniform_(-bound, bound))
        self.log_gain = nn.Parameter(torch.zeros(1))

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        h = F.linear(v, self.weight_1)
        norm = torch.sqrt(h.pow(2).sum(dim=1, keepdim=True) + 1e-12)
        h = h * torch.sigmoid(norm + self.gate_bias)
        return F.linear(h, self.weight_2).squeeze(-1) * torch.exp(self.log_gain)


class Rank2StressHead(nn.Module):
    """Decomposed symmetric rank-2 head: returns (B, 3, 3) in the model's normalized stress units."""

    def __init__(self, sphere_channels: int, lmax: int) -> None:
        super().__init__()
        emb = 2 * sphere_channels  # source and target features (use_source_target_embedding)
        self.lmax = lmax
        self.sphharm_norm = EquivariantLayerNormSH(lmax, 1)
        self.xedge_layer_norm = nn.LayerNorm(emb)
        self.scalar_mlp = nn.Sequential(nn.Linear(emb, emb), nn.SiLU(), nn.Linear(emb, 1))
        self.irrep2_mlp = NormGatedL2MLP(emb)

    @full_precision
    def edge_weights(self, edge_vec: torch.Tensor) -> torch.Tensor:
        """Layer-normed solid harmonics (E, (lmax+1)²) of the edge vectors [Å], autocast off: under fp16 the
        l > 0 weights of a 12 Å edge were exactly 0 (|r|^l and its mean square overflow)."""
        sh = spherical_harmonics(self.lmax, edge_vec, normalize=False)
        return self.sphharm_norm(sh.unsqueeze(-1)).squeeze(-1)

    @full_precision  # the decomposition (harmonics, norms, basis contraction) in float32 or float64
    def forward(
        self, x: torch.Tensor, edge_vec: torch.Tensor, edge_index: torch.Tensor, batch: torch.Tensor, num_graphs: int
    ) -> torch.Tensor:
        dst = edge_index[1]
        n = x.shape[0]
        sh = self.edge_weights(edge_vec)
        x_edge = gather_pair(x, edge_index)
        x_edge = self.xedge_layer_norm(torch.einsum("efc,ef->ec", x_edge, sh))
        y2 = spherical_harmonics(2, edge_vec)[:, 4:9]  # (E, 5)
        node_scalar = self.scalar_mlp(_segment_mean(x_edge, dst, n)).squeeze(-1)
        node_irrep2 = self.irrep2_mlp(_segment_mean(y2.unsqueeze(-1) * x_edge.unsqueeze(1), dst, n))
        iso = _segment_mean(node_scalar, batch, num_graphs)
        aniso = _segment_mean(node_irrep2, batch, num_graphs)
        eye = torch.eye(3, dtype=x.dtype, device=x.device) / math.sqrt(3.0)
        basis = l2_basis().to(dtype=x.dtype, device=x.device)
        return iso.view(-1, 1, 1) * eye + torch.einsum("bm,mij->bij", aniso, basis)
