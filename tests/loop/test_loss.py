"""The OMat24 loss: hand values, masks, the iso/aniso stress split, no NaN from empty terms."""

from __future__ import annotations

import math

import torch

from engine.config import LossWeights
from engine.data.graph import Batch
from engine.loop.loss import error_metrics, error_sums, stress_iso_aniso, weighted_loss
from models.base import ModelOutput


def _batch(n_atoms=(2, 3), stress_mask=(True, False), forces_mask=None) -> Batch:
    n = sum(n_atoms)
    B = len(n_atoms)
    counts = torch.tensor(n_atoms)
    return Batch(
        numbers=torch.full((n,), 29),
        positions=torch.zeros(n, 3, dtype=torch.float64),
        cell=torch.eye(3, dtype=torch.float64).repeat(B, 1, 1) * 4.0,
        pbc=torch.ones(B, 3, dtype=torch.bool),
        batch=torch.repeat_interleave(torch.arange(B), counts),
        n_atoms=counts,
        edge_index=torch.zeros(2, 0, dtype=torch.long),
        edge_shift=torch.zeros(0, 3, dtype=torch.float64),
        energy=torch.zeros(B, dtype=torch.float64),
        energy_mask=torch.ones(B, dtype=torch.bool),
        forces=torch.zeros(n, 3, dtype=torch.float64),
        forces_mask=torch.ones(n, dtype=torch.bool) if forces_mask is None else torch.tensor(forces_mask),
        stress=torch.zeros(B, 3, 3, dtype=torch.float64),
        stress_mask=torch.tensor(stress_mask),
    )


def test_hand_values_of_each_term():
    batch = _batch()
    energy = torch.tensor([1.0, -3.0], dtype=torch.float64)  # |ΔE|/n = 0.5 and 1.0 eV/atom
    forces = torch.zeros(5, 3, dtype=torch.float64)
    forces[0] = torch.tensor([3.0, 4.0, 0.0])  # ‖ΔF‖ = 5 on one atom of five
    stress = torch.zeros(2, 3, 3, dtype=torch.float64)
    stress[0] = torch.diag(torch.tensor([0.3, 0.3, 0.3], dtype=torch.float64))  # iso 0.3, aniso 0
    stress[1] = torch.eye(3) * 100.0  # masked out
    sums = error_sums(ModelOutput(energy=energy, forces=forces, stress=stress), batch)
    w = LossWeights(energy=2.5, forces=20.0, stress_iso=5.0, stress_aniso=5.0)
    loss = weighted_loss(sums, w, forces_scale=2.0, stress_scale=0.1)
    expected = 2.5 * 0.75 + 20.0 * (5.0 / 5) / 2.0 + 5.0 * 0.3 / 0.1 + 0.0
    assert math.isclose(float(loss), expected, rel_tol=1e-12)
    m = error_metrics(sums, w, 2.0, 0.1, split="val")
    assert math.isclose(m["val_energy_mae_mev_per_atom"], 750.0, rel_tol=1e-12)
    assert math.isclose(m["val_forces_l2mae_mev_per_a"], 1000.0, rel_tol=1e-12)
    assert math.isclose(m["val_forces_mae_mev_per_a"], 1000.0 * 7.0 / 15.0, rel_tol=1e-12)
    assert math.isclose(m["val_stress_mae_mev_per_a3"], 1000.0 * 0.9 / 9.0, rel_tol=1e-12)
    assert math.isclose(m["val_loss"], expected, rel_tol=1e-12)


def test_stress_split_is_orthonormal_and_complete():
    s = torch.randn(4, 3, 3, dtype=torch.float64)
    s = 0.5 * (s + s.transpose(1, 2))
    iso, aniso = stress_iso_aniso(s)
    assert torch.allclose(iso, torch.diagonal(s, dim1=1, dim2=2).mean(-1))
    traceless = s - iso.view(-1, 1, 1) * torch.eye(3, dtype=torch.float64)
    assert torch.allclose((aniso**2).sum(-1), (traceless**2).sum((1, 2)))
    iso_only, aniso_zero = stress_iso_aniso(torch.eye(3, dtype=torch.float64).expand(2, 3, 3) * 2.0)
    assert torch.allclose(iso_only, torch.full((2,), 2.0, dtype=torch.float64))
    assert torch.allclose(aniso_zero, torch.zeros(2, 5, dtype=torch.float64))


def test_all_masked_terms_give_zero_not_nan_and_finite_gradients():
    batch = _batch(stress_mask=(False, False), forces_mask=[False] * 5)
    batch.energy_mask = torch.zeros(2, dtype=torch.bool)
    energy = torch.tensor([1.0, 2.0], dtype=torch.float64, requires_grad=True)
    forces = torch.zeros(5, 3, dtype=torch.float64, requires_grad=True)  # ‖ΔF‖ = 0: the sqrt's kink
    stress = torch.ones(2, 3, 3, dtype=torch.float64, requires_grad=True)
    sums = error_sums(ModelOutput(energy=energy, forces=forces, stress=stress), batch)
    loss = weighted_loss(sums, LossWeights(), 1.0, 1.0)
    assert float(loss.detach()) == 0.0
    loss.backward()
    for t in (energy, forces, stress):
        assert torch.all(torch.isfinite(t.grad)) and float(t.grad.abs().sum()) == 0.0
    m = error_metrics(sums, LossWeights(), 1.0, 1.0, split="train")
    assert all(math.isfinite(v) and v == 0.0 for v in m.values())


def test_global_counts_scale_a_shard_to_its_share_of_the_mean():
    batch = _batch(n_atoms=(2, 2), stress_mask=(True, True))
    energy = torch.tensor([2.0, 4.0], dtype=torch.float64)
    out = ModelOutput(energy=energy, forces=torch.zeros(4, 3, dtype=torch.float64), stress=None)
    sums = error_sums(out, batch)
    assert float(sums.n_stress) == 0.0  # a model without stress is not scored on stress
    w = LossWeights(energy=1.0, forces=0.0, stress_iso=0.0, stress_aniso=0.0)
    doubled = error_sums(out, batch)
    doubled.n_energy = doubled.n_energy * 2
    assert math.isclose(float(weighted_loss(sums, w, 1.0, 1.0, counts=doubled)), 0.5 * 1.5)
