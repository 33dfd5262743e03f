"""``schnet``: SchNet (Schütt et al. 2017, arXiv 1706.08566; JCP 148, 241722 (2018)).

Element embedding → ``num_interactions`` residual interaction blocks (continuous-filter
convolutions whose filters are an MLP of Gaussian-expanded distances times a cosine
cutoff) → atom-wise MLP with shifted softplus → energy summed over atoms. The blocks are
torch_geometric's (``InteractionBlock``, ``ShiftedSoftplus``; the Gaussian expansion is
``models.layers.GaussianBasis``, PyG's formula with float64-exact centers), fed
with OUR periodic edges: ``batch.edge_index`` (source j → target i, PyG's default flow)
and ``geometry.dist`` (minimum-image lengths, differentiable in positions and strain).
PyG's own ``radius_graph`` is not used (it needs pyg-lib). Forces are −∂E/∂x and stress
(1/V) ∂E/∂ε, both from the base class.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn
from torch_geometric.nn.models.schnet import InteractionBlock, ShiftedSoftplus

from engine.data.graph import Batch, EdgeGeometry
from models import register
from models.base import MAX_Z, ModelConfig, Potential, RawOutput
from models.layers import GaussianBasis, scatter_sum


@dataclass
class SchNetConfig(ModelConfig):
    """Size knobs (feature widths); Gaussians span [0, cutoff] Å."""

    hidden_channels: int = 64
    num_filters: int = 64
    num_interactions: int = 3
    num_gaussians: int = 50

    def __post_init__(self) -> None:
        for key in ("hidden_channels", "num_filters", "num_interactions"):
            if int(getattr(self, key)) < 1:
                raise ValueError(f"{key} must be ≥ 1, got {getattr(self, key)}")
        if self.num_gaussians < 2:
            raise ValueError(f"num_gaussians must be ≥ 2, got {self.num_gaussians}")
        if self.hidden_channels < 2:
            raise ValueError(f"hidden_channels must be ≥ 2 (the output MLP halves it), got {self.hidden_channels}")
        if self.cutoff <= 0:
            raise ValueError(f"cutoff must be > 0 Å, got {self.cutoff}")


# hidden = filters, interactions: ~2·10³ → ~2·10⁶ parameters; s4 is the paper's 128/128/6 (Schütt et al. 2017)
PRESETS = {
    f"s{k}": {"hidden_channels": h, "num_filters": h, "num_interactions": T}
    for k, (h, T) in enumerate([(8, 1), (16, 2), (32, 3), (64, 3), (128, 6), (256, 6)])
}


@register("schnet", presets=PRESETS)
class SchNet(Potential):
    """SchNet energy model with conservative forces and strain-derivative stress."""

    force_mode = "conservative"
    config_class = SchNetConfig

    def __init__(self, config: SchNetConfig) -> None:
        super().__init__(config)
        c = config
        self.embedding = nn.Embedding(MAX_Z, c.hidden_channels)
        # PyG's GaussianSmearing formula (width = spacing), with centers in the input's dtype: exact in float64
        self.distance_expansion = GaussianBasis(0.0, c.cutoff, c.num_gaussians)
        self.interactions = nn.ModuleList(
            InteractionBlock(c.hidden_channels, c.num_gaussians, c.num_filters, c.cutoff)
            for _ in range(c.num_interactions)
        )
        self.output = nn.Sequential(
            nn.Linear(c.hidden_channels, c.hidden_channels // 2),
            ShiftedSoftplus(),
            nn.Linear(c.hidden_channels // 2, 1),
        )

    def predict(self, batch: Batch, geometry: EdgeGeometry) -> RawOutput:
        dist = geometry.dist
        h = self.embedding(batch.numbers).to(dist.dtype)
        edge_attr = self.distance_expansion(dist)
        for block in self.interactions:
            h = h + block(h, batch.edge_index, dist, edge_attr)
        e_atom = self.output(h).squeeze(-1).to(batch.positions.dtype)
        return RawOutput(energy=scatter_sum(e_atom, batch.batch, batch.num_graphs))
