"""Normalization: least-squares element references and target scales on synthetic data."""

from __future__ import annotations

import numpy as np
import pytest

from engine.data.normalize import ENERGY_SCALE_FLOOR_EV_PER_ATOM, fit_normalization
from engine.data.records import Record
from models.base import MAX_Z


def _record(numbers, energy=None, forces=None, stress=None) -> Record:
    n = len(numbers)
    pos = np.arange(n * 3, dtype=float).reshape(n, 3)
    return Record(
        numbers=numbers, positions=pos, cell=np.eye(3) * 10, pbc=True, energy=energy, forces=forces, stress=stress
    )


def test_recovers_known_references_and_scales():
    rng = np.random.default_rng(0)
    true_ref = {13: -3.5, 29: -4.1, 78: -6.2}
    records = []
    for k in range(60):
        n = int(rng.integers(2, 9))
        numbers = rng.choice(list(true_ref), size=n)
        energy = sum(true_ref[z] for z in numbers)  # exact linear model, no noise
        forces = rng.normal(0, 0.5, size=(n, 3))
        stress = rng.normal(0, 0.01, size=(3, 3)) if k % 2 == 0 else None  # half lack stress
        records.append(_record(numbers, energy, forces, stress))
    norm = fit_normalization(records)
    assert len(norm.energy_ref) == MAX_Z
    for z, ref in true_ref.items():
        assert norm.energy_ref[z] == pytest.approx(ref, abs=1e-9)
    assert norm.energy_ref[1] == 0.0 and norm.energy_ref[26] == 0.0  # absent elements
    assert norm.energy_scale == ENERGY_SCALE_FLOOR_EV_PER_ATOM  # zero residual → floor (eV/atom)
    all_f = np.concatenate([r.forces for r in records])
    assert norm.forces_scale == pytest.approx(np.sqrt(np.mean(all_f**2)))
    all_s = np.stack([r.stress for r in records if r.stress is not None])
    assert norm.stress_scale == pytest.approx(np.sqrt(np.mean(all_s**2)))


def test_energy_scale_is_std_of_per_atom_residual():
    # pure Cu cells: ref_Cu = mean per-atom energy weighted by least squares; residuals ±0.1 eV/atom
    records = [_record([29] * 4, energy=4 * (-4.0 + 0.1)), _record([29] * 4, energy=4 * (-4.0 - 0.1))]
    norm = fit_normalization(records)
    assert norm.energy_ref[29] == pytest.approx(-4.0)
    assert norm.energy_scale == pytest.approx(0.1)


def test_missing_labels_give_unit_scales():
    norm = fit_normalization([_record([1, 1]), _record([8])])
    assert norm.energy_scale == 1.0 and norm.forces_scale == 1.0 and norm.stress_scale == 1.0
    assert not any(norm.energy_ref)


def test_collinear_compositions_do_not_fail():
    # every cell is 1:1 CuAu: only the sum ref_Cu + ref_Au is determined (minimum-norm split)
    records = [_record([29, 79] * k, energy=-9.0 * k) for k in (1, 2, 3)]
    norm = fit_normalization(records)
    assert norm.energy_ref[29] + norm.energy_ref[79] == pytest.approx(-9.0)


def test_emt_normalization_is_sane(emt_cache):
    _, records = emt_cache
    norm = fit_normalization(records)
    assert 1e-3 <= norm.energy_scale < 1.0  # eV/atom
    assert 0.05 < norm.forces_scale < 5.0  # eV/Å
    assert 1e-4 < norm.stress_scale < 0.2  # eV/Å³ (|p| ≤ 20 GPa ≈ 0.125 eV/Å³)
