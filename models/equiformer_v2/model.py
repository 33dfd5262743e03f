"""EquiformerV2 (Liao et al. 2023, arXiv 2306.12059) with the OMat24 energy/force/stress heads
(Barroso-Luque et al. 2024, arXiv 2410.12771), registered as ``equiformer_v2``.

Graph (from ``models.base``/``engine.data.graph``): edges j → i within ``cutoff`` (= max_radius, Å),
at most ``max_neighbors`` per receiver (``strict_neighbors=False`` keeps ties, as for OMat24), edge
vector pos[j] + shift·cell − pos[i]. Forces are direct (``force_mode = "direct"``). Outputs are in
normalized units: ê (B,), f̂ (N, 3), ŝ (B, 3, 3); ``Potential.forward`` applies the scales.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from engine.data.graph import Batch, EdgeGeometry
from engine.errors import ConfigError
from models import register
from models.base import ModelConfig, Potential, RawOutput
from models.equiformer_v2.attention import SO2EquivariantGraphAttention
from models.equiformer_v2.block import TransBlockV2
from models.equiformer_v2.embedding import AtomEmbedding, EdgeDegreeEmbedding
from models.equiformer_v2.ffn import FeedForwardNetwork
from models.equiformer_v2.grid import SphereGrid, default_resolution
from models.equiformer_v2.heads import EnergyHead, ForceHead, Rank2StressHead
from models.equiformer_v2.norm import EquivariantLayerNormSH
from models.equiformer_v2.presets import PRESETS
from models.equiformer_v2.radial import NUM_GAUSSIANS, GaussianSmearing
from models.equiformer_v2.so3 import CoefficientLayout, EdgeFrames, edge_frames, edge_rotation


@dataclass
class EquiformerV2Config(ModelConfig):
    """Every knob of the published configs; defaults are eqV2-S (OMat24, 31M).

    ``avg_num_nodes``: the energy head divides the sum of per-atom energies by it. Published: 31.17, paired
    with fairchem's energy target in eV per structure (no normaliser). Here the head's output ê is in
    units of the engine's per-atom ``energy_scale`` (E = energy_scale · ê + references, models/base.py),
    as every other family's sum is, so the default is 1.0. With 31.17 each atom must output ~31× its
    normalized energy, and training barely moves the energy in a short budget (measured, e0 energy
    only, 150 steps: validation energy MAE 117.7 → 117.4 meV/atom with 31.17, 119.8 → 107.7 with 1.0).
    ``max_radius`` [Å] is the published name of ``cutoff``: when given it sets ``cutoff``.
    ``edge_roll``: "random" rolls each edge frame by a random angle about the edge (as published;
    drawn from a generator seeded by ``edge_roll_seed``), "none" uses a fixed frame per edge vector.
    ``exact_equivariant_gate`` swaps every S² grid operation for an exactly equivariant gate with
    the same parameters (for tests and ablations).
    ``compile``: ``torch.compile`` (inductor, dynamic shapes) each transformer block and the energy and
    force heads, which trace without a graph break; the rest of ``predict`` (edge frames with their
    random rolls and cached sample points, the element check, the stress head) stays eager. The first
    steps pay the compilation (minutes on CPU); the state dict is unchanged.
    """

    cutoff: float = 12.0
    max_neighbors: int = 20
    strict_neighbors: bool = False
    max_radius: float | None = None
    max_num_elements: int = 96
    num_layers: int = 8
    sphere_channels: int = 128
    attn_hidden_channels: int = 64
    num_heads: int = 8
    attn_alpha_channels: int = 64
    attn_value_channels: int = 16
    ffn_hidden_channels: int = 128
    norm_type: str = "layer_norm_sh"
    lmax: int = 4
    mmax: int = 2
    grid_resolution: int | None = 18
    edge_channels: int = 128
    num_distance_basis: int = NUM_GAUSSIANS
    avg_num_nodes: float = 1.0
    avg_degree: float = 61.95
    use_attn_renorm: bool = True
    use_s2_act_attn: bool = False
    use_gate_act: bool = False
    use_grid_mlp: bool = True
    use_sep_s2_act: bool = True
    alpha_drop: float = 0.1
    drop_path_rate: float = 0.1
    edge_roll: Literal["random", "none"] = "random"
    edge_roll_seed: int = 0
    exact_equivariant_gate: bool = False
    compile: bool = False

    def __post_init__(self) -> None:
        if self.max_radius is not None:
            self.cutoff = float(self.max_radius)
        self.max_radius = float(self.cutoff)
        checks = [
            (self.cutoff > 0, f"cutoff/max_radius must be > 0 Å, got {self.cutoff}"),
            (self.lmax >= 1, f"lmax must be ≥ 1 (the force head reads l = 1), got {self.lmax}"),
            (0 <= self.mmax <= self.lmax, f"mmax must be in [0, lmax={self.lmax}], got {self.mmax}"),
            (self.norm_type == "layer_norm_sh", f"norm_type {self.norm_type!r} is not built; use 'layer_norm_sh'"),
            (not self.use_s2_act_attn, "use_s2_act_attn=True is not supported (the reference asserts it off)"),
            (self.use_gate_act or self.use_sep_s2_act, "set use_gate_act or use_sep_s2_act to true"),
            (self.edge_roll in ("random", "none"), f"edge_roll must be 'random' or 'none', got {self.edge_roll!r}"),
            (
                self.grid_resolution is None or self.grid_resolution >= 2 * self.lmax + 1,
                f"grid_resolution must be ≥ 2·lmax+1 = {2 * self.lmax + 1}, got {self.grid_resolution}",
            ),
            (self.num_distance_basis >= 2, f"num_distance_basis must be ≥ 2, got {self.num_distance_basis}"),
            (self.avg_num_nodes > 0 and self.avg_degree > 0, "avg_num_nodes and avg_degree must be > 0"),
            (
                min(
                    self.num_layers,
                    self.sphere_channels,
                    self.attn_hidden_channels,
                    self.num_heads,
                    self.attn_alpha_channels,
                    self.attn_value_channels,
                    self.ffn_hidden_channels,
                    self.edge_channels,
                    self.max_num_elements,
                )
                >= 1,
                "layer and channel counts must be ≥ 1",
            ),
            (
                0 <= self.alpha_drop < 1 and 0 <= self.drop_path_rate < 1,
                "alpha_drop and drop_path_rate must be in [0, 1)",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


@register("equiformer_v2", presets=PRESETS)
class EquiformerV2(Potential):
    force_mode = "direct"
    predicts_stress = True
    config_class = EquiformerV2Config

    def __init__(self, config: EquiformerV2Config) -> None:
        super().__init__(config)
        c = config
        self.layout = CoefficientLayout(c.lmax, c.mmax)
        if c.grid_resolution is None:
            attn_res = default_resolution(c.lmax, c.mmax)
            ffn_res = default_resolution(c.lmax, c.lmax)
        else:
            attn_res = ffn_res = (c.grid_resolution, c.grid_resolution)
        attn_grid = SphereGrid(c.lmax, c.mmax, *attn_res, m_major=True)  # edge-frame features are m-major
        ffn_grid = SphereGrid(c.lmax, c.lmax, *ffn_res)
        edge_channels_list = [c.num_distance_basis, c.edge_channels, c.edge_channels]
        exact = c.exact_equivariant_gate

        def attention(output_channels: int, alpha_drop: float) -> SO2EquivariantGraphAttention:
            return SO2EquivariantGraphAttention(
                c.sphere_channels,
                c.attn_hidden_channels,
                c.num_heads,
                c.attn_alpha_channels,
                c.attn_value_channels,
                output_channels,
                self.layout,
                attn_grid,
                c.max_num_elements,
                edge_channels_list,
                use_attn_renorm=c.use_attn_renorm,
                use_gate_act=c.use_gate_act,
                use_sep_s2_act=c.use_sep_s2_act,
                alpha_drop=alpha_drop,
                exact_equivariant_gate=exact,
            )

        def ffn(output_channels: int) -> FeedForwardNetwork:
            return FeedForwardNetwork(
                c.sphere_channels,
                c.ffn_hidden_channels,
                output_channels,
                c.lmax,
                ffn_grid,
                use_gate_act=c.use_gate_act,
                use_grid_mlp=c.use_grid_mlp,
                use_sep_s2_act=c.use_sep_s2_act,
                exact_equivariant_gate=exact,
            )

        self.atom_embedding = AtomEmbedding(c.max_num_elements, c.sphere_channels, c.lmax)
        self.distance_expansion = GaussianSmearing(c.cutoff, c.num_distance_basis)
        self.edge_degree_embedding = EdgeDegreeEmbedding(
            c.sphere_channels, self.layout, c.max_num_elements, edge_channels_list, c.avg_degree
        )
        self.blocks = nn.ModuleList(
            TransBlockV2(
                attention(c.sphere_channels, c.alpha_drop),
                ffn(c.sphere_channels),
                c.lmax,
                c.sphere_channels,
                c.drop_path_rate,
            )
            for _ in range(c.num_layers)
        )
        self.norm = EquivariantLayerNormSH(c.lmax, c.sphere_channels)
        self.energy_head = EnergyHead(ffn(1), c.avg_num_nodes)
        self.force_head = ForceHead(attention(1, 0.0))
        self.stress_head = Rank2StressHead(c.sphere_channels, c.lmax)
        for m in self.modules():  # reference init: zero Linear biases (weights stay U(±1/sqrt(fan_in)))
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)
        self._roll_generator = torch.Generator().manual_seed(c.edge_roll_seed)
        if c.compile:
            for module in (*self.blocks, self.energy_head, self.force_head):
                module.compile(dynamic=True)

    def generators(self) -> dict[str, torch.Generator]:
        """The edge-roll generator: in the loop's checkpoints and cooldown snapshots (models.base.Potential)."""
        return {"edge_roll": self._roll_generator}

    def reset_edge_roll(self, seed: int) -> None:
        """Reseed the generator of the random edge rolls (for repeatable evaluation)."""
        self._roll_generator.manual_seed(seed)

    def _frames(self, vec: torch.Tensor) -> EdgeFrames:
        roll = None
        if self.config.edge_roll == "random":
            roll = torch.rand(vec.shape[0], generator=self._roll_generator, dtype=torch.float64) * (2 * math.pi)
            roll = roll.to(device=vec.device, dtype=vec.dtype)
        with torch.autocast(device_type=vec.device.type, enabled=False):
            return edge_frames(self.layout, edge_rotation(vec, roll))

    def predict(self, batch: Batch, geometry: EdgeGeometry) -> RawOutput:
        c = self.config
        numbers, edge_index = batch.numbers, batch.edge_index
        if numbers.numel() and int(numbers.max()) >= c.max_num_elements:
            raise ConfigError(
                f"element Z={int(numbers.max())} is outside max_num_elements={c.max_num_elements}; "
                f"raise equiformer_v2 max_num_elements"
            )
        num_nodes, num_graphs = batch.num_atoms, batch.num_graphs
        dtype = geometry.vec.dtype
        frames = self._frames(geometry.vec)
        dist_features = self.distance_expansion(geometry.dist)
        x = self.atom_embedding(numbers, dtype)
        x = x + self.edge_degree_embedding(numbers, dist_features, edge_index, frames, num_nodes)
        for block in self.blocks:
            x = block(x, numbers, dist_features, edge_index, frames, batch.batch, num_graphs)
        x = self.norm(x)
        energy = self.energy_head(x, batch.batch, num_graphs)
        forces = self.force_head(x, numbers, dist_features, edge_index, frames)
        stress = self.stress_head(x, geometry.vec, edge_index, batch.batch, num_graphs)
        return RawOutput(energy=energy, forces=forces, stress=stress)
