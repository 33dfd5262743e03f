"""FCN-specific checks: presets ladder, the G2 descriptor against a hand formula, smoothness at the cutoff."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import models
from engine.data.records import Record
from engine.errors import ConfigError
from tests.models.conftest import make_batch

CUTOFF = 4.0


def _dimer(r: float, numbers=(29, 28)) -> Record:
    return Record(numbers=list(numbers), positions=[[0.0, 0.0, 0.0], [r, 0.0, 0.0]], cell=np.zeros((3, 3)), pbc=False)


def _model():
    torch.manual_seed(0)
    cfg = {"species_channels": 3, "num_rbf": 6, "hidden": 16, "depth": 2, "cutoff": CUTOFF, "max_neighbors": 0}
    return models.build("fcn", cfg).double().eval()


def test_preset_ladder():
    table = models.presets("fcn")
    assert list(table) == [f"f{k}" for k in range(len(table))] and len(table) >= 6
    counts = [models.build("fcn", preset=name).num_parameters() for name in table]
    assert counts == sorted(counts) and counts[0] < 2e3 and counts[-1] > 1e6, counts
    assert models.model_class("fcn").force_mode == "conservative"


def test_descriptor_matches_hand_formula():
    """G_i[c, k] = (1/n_norm) Σ_j a_c(Z_j) exp(−(r−μ_k)²/(2w²)) · ½(cos(πr/r_c)+1)."""
    model = _model()
    r = 2.6
    g = model.descriptor(*_batch_and_geometry(model, _dimer(r))).detach().numpy()
    c = model.config
    mu = np.linspace(0.0, CUTOFF, c.num_rbf)
    w = CUTOFF / (c.num_rbf - 1)
    radial = np.exp(-((r - mu) ** 2) / (2 * w**2)) * 0.5 * (np.cos(np.pi * r / CUTOFF) + 1)
    a = model.neighbor_species.weight.detach().numpy()
    for atom, neighbor_z in ((0, 28), (1, 29)):
        expected = np.outer(a[neighbor_z], radial).ravel() / c.neighbor_norm
        np.testing.assert_allclose(g[atom], expected, rtol=1e-12)


def _batch_and_geometry(model, record):
    from engine.data.graph import edge_geometry

    batch = make_batch([record], model)
    return batch, edge_geometry(batch)


def test_energy_and_forces_are_smooth_at_the_cutoff():
    """Leaving the cutoff changes neither energy (continuity) nor forces (zero slope): f_c and f_c' vanish at r_c."""
    model = _model()
    outside = model(make_batch([_dimer(CUTOFF + 1e-3)], model))
    assert outside.forces.abs().max() == 0  # no edges: isolated atoms
    for delta in (1e-2, 1e-3):
        inside = model(make_batch([_dimer(CUTOFF - delta)], model))
        de = abs(float((inside.energy - outside.energy).detach()))
        assert de < 1e-3 * delta  # f_c ≈ (π δ / 2 r_c)², so ΔE = O(δ²)
        assert float(inside.forces.abs().max()) < 1e-1 * delta


@pytest.mark.parametrize(("values", "needle"), [({"hidden": 0}, "hidden must be"), ({"cutoff": -1.0}, "cutoff")])
def test_bad_config_is_a_user_error(values, needle):
    with pytest.raises(ConfigError, match=needle):
        models.build("fcn", values)
