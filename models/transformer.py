"""``transformer``: the seed study's baseline (arXiv 2509.21811), atoms as tokens.

Each atom is a token: a learned element embedding (119 types) concatenated with its raw
Cartesian x, y, z [Å] (width d_model + 3), projected back to d_model by one linear layer
(we project rather than carry d_model + 3, so ``heads`` divides the width). No positional
encoding, no periodic boundary handling. A pre-norm encoder (Xiong et al. 2020, arXiv
2002.04745) attends only among atoms of the same structure: tokens are padded per
structure and padded keys are masked. Attention is written with explicit matmuls and a
softmax so ``torch.utils.flop_counter`` counts it (the fused kernel counts 0 FLOPs).

Direct heads, in normalized units: energy = Σ_atoms e_i, forces f_i (3 per atom), stress =
Σ_atoms s_i with s_i a Voigt 6-vector made symmetric 3×3. The plain model is not
invariant to rotation, translation or the choice of periodic image (it sees raw xyz);
its per-atom force head plateaus (about 0.83 eV/Å force L2-MAE on EMT data).

``periodic=True`` adds geometry from the minimum-image edges of the neighbor graph (exact
under PBC): each layer gets a per-head attention bias from a Gaussian expansion of the edge
distance times a cosine cutoff, and the force head becomes pairwise,
f_i = Σ_j w_ij · r_ij / r_c with w_ij = MLP(h_i + h_j, h_i ⊙ h_j, rbf(r_ij)) · f_c(r_ij)
symmetric in i, j (so Σ_i f_i = 0 when the edge list is symmetric) and r_ij the edge vector
from i to j's image; stress becomes ŝ = (1/n_atoms) Σ_edges u_ij r̂_ij ⊗ r̂_ij; and the
energy gains a pair term (1/k) Σ_edges v_ij (softmax attention averages and cannot count
neighbors, so energy alone would miss density). w, u, v are the pair MLP's three outputs, all
times f_c(r_ij). Forces and stress follow the geometry and rotate with it. With
``xyz_input=False`` (the ``p*`` presets) the periodic model is invariant to translation,
rotation and image choice, and its forces and stress are equivariant.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from engine.data.graph import Batch, EdgeGeometry
from models import register
from models.base import MAX_Z, ModelConfig, Potential, RawOutput
from models.layers import MLP, GaussianBasis, autocast_off, cosine_cutoff, scatter_sum, to_full, voigt_to_matrix


@dataclass
class TransformerConfig(ModelConfig):
    """Size knobs of the atoms-as-tokens transformer (widths in features, cutoff in Å)."""

    d_model: int = 64
    depth: int = 2
    heads: int = 2
    ff_mult: int = 4
    xyz_input: bool = True  # concatenate raw Cartesian coordinates to the element embedding (the seed's input)
    periodic: bool = False  # attention bias + pairwise force/stress heads from minimum-image edges
    num_rbf: int = 16  # Gaussians over [0, cutoff] for the periodic bias and pair head
    pair_hidden: int = 0  # width of the pair MLP; 0 = d_model

    def __post_init__(self) -> None:
        for key in ("d_model", "depth", "heads", "ff_mult"):
            if int(getattr(self, key)) < 1:
                raise ValueError(f"{key} must be ≥ 1, got {getattr(self, key)}")
        if self.d_model % self.heads:
            raise ValueError(f"d_model={self.d_model} is not divisible by heads={self.heads}; pick heads dividing it")
        if self.pair_hidden < 0:
            raise ValueError(f"pair_hidden must be ≥ 0 (0 = d_model), got {self.pair_hidden}")
        if not (self.xyz_input or self.periodic):
            raise ValueError("with xyz_input=False and periodic=False the model sees no geometry; enable one")
        if self.num_rbf < 2:
            raise ValueError(f"num_rbf must be ≥ 2, got {self.num_rbf}")
        if self.cutoff <= 0:
            raise ValueError(f"cutoff must be > 0 Å, got {self.cutoff}")


class _Layout:
    """Where each atom sits in the (structures B, max atoms L) padded token grid."""

    def __init__(self, batch: Batch) -> None:
        n_atoms = batch.n_atoms
        self.num_graphs = batch.num_graphs
        self.length = int(n_atoms.max()) if n_atoms.numel() else 0
        offsets = torch.cumsum(n_atoms, 0) - n_atoms
        self.graph = batch.batch
        # slot of each atom within its structure; a stable sort keeps this right even if atoms are not contiguous
        order = torch.argsort(batch.batch, stable=True)
        self.local = torch.empty_like(batch.batch)
        self.local[order] = torch.arange(batch.num_atoms, device=n_atoms.device) - offsets[batch.batch[order]]
        slots = torch.arange(self.length, device=n_atoms.device)
        self.key_mask = slots.unsqueeze(0) < n_atoms.unsqueeze(1)  # (B, L) True for real atoms

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        out = x.new_zeros((self.num_graphs, self.length, x.shape[-1]))
        out[self.graph, self.local] = x
        return out

    def unpad(self, x: torch.Tensor) -> torch.Tensor:
        return x[self.graph, self.local]


class Attention(nn.Module):
    """Multi-head self-attention within each structure, explicit matmuls (Vaswani et al. 2017, eq. 1)."""

    def __init__(self, d_model: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.head_dim = d_model // heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor, layout: _Layout, bias: torch.Tensor | None) -> torch.Tensor:
        B, L, H, dh = layout.num_graphs, layout.length, self.heads, self.head_dim
        qkv = layout.pad(self.qkv(x)).view(B, L, 3, H, dh).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # (B, H, L, dh)
        # q scaled before the product (keeps fp16 scores far from overflow); the softmax over keys, its
        # bias and mask run in float32 (at least) under autocast, the two matmuls in the autocast dtype
        scores = to_full(torch.matmul(q * (1.0 / math.sqrt(dh)), k.transpose(-1, -2)))
        if bias is not None:
            scores = scores + to_full(bias)
        scores = scores.masked_fill(~layout.key_mask[:, None, None, :], float("-inf"))
        attn = torch.softmax(scores, dim=-1)
        ctx = torch.matmul(attn, v).transpose(1, 2).reshape(B, L, H * dh)
        return self.out(layout.unpad(ctx))


class Block(nn.Module):
    """Pre-norm encoder layer: x + Attn(LN(x)), then x + FF(LN(x))."""

    def __init__(self, d_model: int, heads: int, ff_mult: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(d_model)
        self.attn = Attention(d_model, heads)
        self.norm2 = nn.LayerNorm(d_model)
        self.ff = nn.Sequential(nn.Linear(d_model, ff_mult * d_model), nn.GELU(), nn.Linear(ff_mult * d_model, d_model))

    def forward(self, x: torch.Tensor, layout: _Layout, bias: torch.Tensor | None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), layout, bias)
        return x + self.ff(self.norm2(x))


def _ladder(prefix: str, extra: dict) -> dict[str, dict]:
    # d_model, depth, heads: ~2·10³ → ~10⁶ parameters, the seed's grid (d_model 2–256, depth 1–3, heads 1–2, ff 4)
    sizes = [(8, 1, 1), (16, 1, 1), (32, 2, 2), (64, 2, 2), (96, 3, 2), (128, 3, 2), (160, 3, 2)]
    return {
        f"{prefix}{k}": {"d_model": d, "depth": L, "heads": h, "ff_mult": 4, **extra}
        for k, (d, L, h) in enumerate(sizes)
    }


PRESETS = {**_ladder("t", {}), **_ladder("p", {"periodic": True, "xyz_input": False})}


@register("transformer", presets=PRESETS)
class Transformer(Potential):
    """Atoms-as-tokens transformer with direct heads (see module docstring)."""

    force_mode = "direct"
    config_class = TransformerConfig

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__(config)
        c = config
        d = c.d_model
        self.embed = nn.Embedding(MAX_Z, d)
        self.input_proj = nn.Linear(d + 3, d) if c.xyz_input else None
        self.blocks = nn.ModuleList(Block(d, c.heads, c.ff_mult) for _ in range(c.depth))
        self.norm = nn.LayerNorm(d)
        self.energy_head = nn.Linear(d, 1)
        if c.periodic:
            self.rbf = GaussianBasis(0.0, c.cutoff, c.num_rbf)
            self.bias_proj = nn.Linear(c.num_rbf, c.depth * c.heads)
            self.pair_head = MLP(2 * d + c.num_rbf, c.pair_hidden or d, 3)
            # a typical neighbor count, so Σ_j v_ij stays O(1) at initialization
            self.pair_energy_norm = float(c.max_neighbors if c.max_neighbors > 0 else 32)
        else:
            self.force_head = nn.Linear(d, 3)
            self.stress_head = nn.Linear(d, 6)

    def _attention_bias(self, rbf: torch.Tensor, fc: torch.Tensor, batch: Batch, layout: _Layout) -> torch.Tensor:
        """Per-layer (B, H, L, L) bias: Σ over j's images within the cutoff of Linear(rbf(r_ij)) · f_c(r_ij)."""
        c = self.config
        src, dst = batch.edge_index[0], batch.edge_index[1]
        values = self.bias_proj(rbf) * fc.unsqueeze(-1)  # (E, depth·H)
        B, L = layout.num_graphs, layout.length
        flat = (layout.graph[dst] * L + layout.local[dst]) * L + layout.local[src]
        bias = scatter_sum(values, flat, B * L * L).view(B, L, L, c.depth, c.heads)
        return bias.permute(3, 0, 4, 1, 2)  # (depth, B, H, L_query, L_key)

    def predict(self, batch: Batch, geometry: EdgeGeometry) -> RawOutput:
        c = self.config
        dtype = batch.positions.dtype
        layout = _Layout(batch)
        h = self.embed(batch.numbers)
        if self.input_proj is not None:
            h = self.input_proj(torch.cat([h, batch.positions.to(h.dtype)], dim=-1))
        biases: Sequence[torch.Tensor | None] = [None] * c.depth
        if c.periodic:
            rbf = self.rbf(geometry.dist)
            fc = cosine_cutoff(geometry.dist, c.cutoff)
            biases = self._attention_bias(rbf, fc, batch, layout)
        for block, bias in zip(self.blocks, biases):
            h = block(h, layout, bias)
        h = self.norm(h)
        B = batch.num_graphs
        energy = scatter_sum(self.energy_head(h).squeeze(-1).to(dtype), batch.batch, B)
        if not c.periodic:
            forces = self.force_head(h).to(dtype)
            stress = voigt_to_matrix(scatter_sum(self.stress_head(h).to(dtype), batch.batch, B))
            return RawOutput(energy=energy, forces=forces, stress=stress)
        src, dst = batch.edge_index[0], batch.edge_index[1]
        pair_in = torch.cat([h[dst] + h[src], h[dst] * h[src], rbf.to(h.dtype)], dim=-1)
        *body, last = self.pair_head
        hidden = pair_in
        for layer in body:
            hidden = layer(hidden)
        # the pair weights' sums over edges cancel to the net force and stress: their last layer and
        # the decomposition run in float32 (at least) under autocast (bf16 weights: 4 % force error)
        with autocast_off(pair_in.device.type):
            wuv = last(hidden.to(dtype)) * fc.unsqueeze(-1).to(dtype)  # (E, 3): force, stress, energy
            forces = scatter_sum(wuv[:, :1] * geometry.vec / c.cutoff, dst, batch.num_atoms)
            unit = geometry.vec / geometry.dist.clamp_min(1e-9).unsqueeze(-1)
            outer = wuv[:, 1, None, None] * unit.unsqueeze(-1) * unit.unsqueeze(-2)  # (E, 3, 3)
            stress = scatter_sum(outer, batch.batch[dst], B) / batch.n_atoms.to(dtype).view(-1, 1, 1)
            # softmax attention averages, it cannot count neighbors: a pair energy term restores density sensitivity
            energy = energy + scatter_sum(wuv[:, 2] / self.pair_energy_norm, batch.batch[dst], B)
        return RawOutput(energy=energy, forces=forces, stress=stress)


def forward_flops(config: TransformerConfig, n_atoms: Sequence[int], n_edges: int) -> int:
    """Matmul FLOPs of one forward pass (2·m·n·k per product, as ``torch.utils.flop_counter`` counts).

    ``n_atoms``: atoms of each structure in the batch (attention runs on the padded (B, L) grid);
    ``n_edges``: graph edges (the base class's edge vectors, and the periodic bias and pair head).
    Activations, softmax and norms are not matmuls and count 0, as in the flop counter.
    """
    c = config
    d, f = c.d_model, c.ff_mult * c.d_model
    N, B, L = sum(n_atoms), len(n_atoms), max(n_atoms)
    flops = 2 * n_edges * 3 * 3  # edge_geometry: shift (1×3) · cell (3×3) per edge
    flops += 2 * N * (d + 3) * d if c.xyz_input else 0
    # per layer: qkv, QKᵀ and AV on the padded grid, output projection, two feed-forward matmuls
    per_layer = 2 * N * d * 3 * d + 2 * (2 * B * L * L * d) + 2 * N * d * d + 2 * (2 * N * d * f)
    flops += c.depth * per_layer
    if c.periodic:
        hidden = c.pair_hidden or d
        flops += 2 * N * d  # energy head
        flops += 2 * n_edges * c.num_rbf * c.depth * c.heads  # attention bias projection
        flops += 2 * n_edges * (2 * d + c.num_rbf) * hidden + 2 * n_edges * hidden * 3  # pair MLP
    else:
        flops += 2 * N * d * (1 + 3 + 6)  # energy, forces, stress heads
    return int(flops)
