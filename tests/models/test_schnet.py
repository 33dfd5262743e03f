"""SchNet-specific checks: presets and parameter formula, the message direction on our edges vs a hand-written
SchNet (Schütt et al. 2017, eqs. 2–5), and training on 200 EMT structures."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch_geometric.nn.models.schnet import InteractionBlock

import models
from engine.data.graph import GraphDataset, GraphSpec, iterate_batches
from engine.data.normalize import fit_normalization
from engine.data.records import Record
from engine.errors import ConfigError
from tests.models.conftest import emt_records, make_batch


def _schnet_params(h: int, f: int, T: int, G: int) -> int:
    """Embedding, T × (filter MLP, cfconv in/out, atom-wise linear), output MLP h → h/2 → 1."""
    interaction = (G * f + f) + (f * f + f) + h * f + (f * h + h) + (h * h + h)
    return 119 * h + T * interaction + (h * (h // 2) + h // 2) + (h // 2 + 1)


def test_presets_and_parameter_formula():
    table = models.presets("schnet")
    assert list(table) == [f"s{k}" for k in range(len(table))] and len(table) >= 6
    counts = []
    for name in table:
        model = models.build("schnet", preset=name)
        c = model.config
        assert model.num_parameters() == _schnet_params(
            c.hidden_channels, c.num_filters, c.num_interactions, c.num_gaussians
        )
        counts.append(model.num_parameters())
    assert counts == sorted(counts) and counts[0] < 2e3 and counts[-1] > 1e6
    paper = models.build("schnet", preset="s4").config  # Schütt et al. 2017: 128 features, 6 interactions
    assert (paper.hidden_channels, paper.num_filters, paper.num_interactions) == (128, 128, 6)


def test_energy_matches_hand_written_schnet_on_our_edges():
    """Two different elements in a periodic cell: messages must flow from neighbor j (src) to receiver i (dst)."""
    torch.manual_seed(0)
    cfg = {"hidden_channels": 6, "num_filters": 5, "num_interactions": 2, "num_gaussians": 7, "cutoff": 3.5}
    model = models.build("schnet", cfg).double().eval()
    assert all(isinstance(b, InteractionBlock) for b in model.interactions)
    rec = Record(
        numbers=[29, 28, 28],
        positions=[[0.0, 0.0, 0.0], [1.9, 0.3, 0.1], [0.4, 2.1, 1.2]],
        cell=np.diag([3.9, 4.2, 4.0]),
        pbc=True,
    )
    batch = make_batch([rec], model)
    got = model(batch).energy

    from engine.data.graph import edge_geometry

    geo = edge_geometry(batch)
    src, dst = batch.edge_index
    mu = torch.linspace(0.0, 3.5, 7, dtype=torch.float64)
    rbf = torch.exp(-0.5 * (geo.dist[:, None] - mu) ** 2 / (mu[1] - mu[0]) ** 2)
    shift = torch.log(torch.tensor(2.0)).item()  # PyG's ShiftedSoftplus uses log 2 rounded to float32

    def ssp(x: torch.Tensor) -> torch.Tensor:  # shifted softplus, eq. 5
        return F.softplus(x) - shift

    x = model.embedding.weight[batch.numbers]
    for block in model.interactions:
        W = block.mlp[2](ssp(block.mlp[0](rbf)))
        W = W * (0.5 * (torch.cos(geo.dist * math.pi / 3.5) + 1.0))[:, None]
        messages = block.conv.lin1(x)[src] * W  # continuous-filter convolution, eq. 3: x_j ∘ W(r_ij)
        v = torch.zeros(3, 5, dtype=torch.float64).index_add_(0, dst, messages)
        x = x + block.lin(ssp(block.conv.lin2(v)))
    expected = model.output(x).sum()
    torch.testing.assert_close(got, expected.view(1), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    ("values", "needle"), [({"num_interactions": 0}, "num_interactions"), ({"hidden_channels": 1}, "hidden")]
)
def test_bad_config_is_a_user_error(values, needle):
    with pytest.raises(ConfigError, match=needle):
        models.build("schnet", values)


@pytest.mark.slow
def test_loss_falls_on_200_emt_structures():
    """Issue 3's check: energy and force loss falls on 200 EMT cells within a few epochs."""
    torch.manual_seed(0)
    records = emt_records(200, seed=1)
    norm = fit_normalization(records)
    model = models.build("schnet", preset="s1")
    model.set_normalization(norm)
    data = GraphDataset(records, GraphSpec(model.config.cutoff, model.config.max_neighbors))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    rng = np.random.default_rng(0)

    def loss_of(batch):
        out = model(batch)
        e = ((out.energy - batch.energy) / batch.n_atoms / norm.energy_scale).pow(2).mean()
        return e + ((out.forces - batch.forces) / norm.forces_scale).pow(2).mean()

    def evaluate() -> float:
        model.eval()
        losses = [float(loss_of(b).detach()) for b in iterate_batches(data, 200, 10_000, shuffle=False)]
        return float(np.mean(losses))

    before = evaluate()
    for _ in range(4):
        model.train()
        for batch in iterate_batches(data, 20, 400, shuffle=True, generator=rng):
            opt.zero_grad()
            loss_of(batch).backward()
            opt.step()
    after = evaluate()
    assert after < 0.5 * before, (before, after)
