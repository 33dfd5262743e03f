"""Naive baselines scored against values worked out by hand on a four-structure set.

Every structure is a simple cubic lattice of spacing 2.5 Å (identical radial distributions), so the
nearest neighbour is decided by composition alone. Labels are made up for easy arithmetic.
Loss weights: the default 2.5 (energy/atom) + 20 (force L2-MAE / forces_scale) + 5 (iso stress /
stress_scale) + 5 (aniso stress / stress_scale); forces_scale 0.5 eV/Å, stress_scale 0.01 eV/Å³.
"""

from __future__ import annotations

import numpy as np
import pytest

from engine.config import LossWeights
from engine.data.normalize import MAX_Z, Normalization
from engine.data.records import Record
from engine.loop.baselines import baseline_metrics, fingerprint, radial_distribution

A = 2.5  # Å


def sc(element: int, nx: int, ny: int, energy: float, forces=None, stress=None) -> Record:
    pos = [[i * A, j * A, 0.0] for i in range(nx) for j in range(ny)]
    n = len(pos)
    return Record(
        numbers=[element] * n,
        positions=pos,
        cell=np.diag([nx * A, ny * A, A]),
        pbc=True,
        energy=energy,
        forces=np.zeros((n, 3)) if forces is None else forces,
        stress=stress,
    )


CU, AU = 29, 79
TRAIN = [
    sc(CU, 2, 1, energy=-7.6, stress=np.diag([0.01, 0.02, 0.03])),  # residual −0.3 eV/atom, pressure-like 0.02
    sc(AU, 1, 1, energy=-3.1, stress=np.diag([0.0, 0.01, 0.02])),  # residual −0.1 eV/atom, iso 0.01
]
VAL = [
    sc(CU, 2, 2, energy=-14.4, forces=[[0.3, 0.4, 0], [-0.3, -0.4, 0], [0, 0, 0], [0, 0, 0]],
       stress=np.diag([0.02, 0.02, 0.02])),
    sc(AU, 2, 1, energy=-6.4, forces=[[0, 0, 1.2], [0, 0, -1.2]],
       stress=np.array([[0.0, 0.01, 0.0], [0.01, 0.0, 0.0], [0.0, 0.0, 0.0]])),
]


def norm() -> Normalization:
    ref = [0.0] * MAX_Z
    ref[CU], ref[AU] = -3.5, -3.0
    return Normalization(energy_ref=ref, energy_scale=1.0, forces_scale=0.5, stress_scale=0.01)


def test_simple_cubic_rdf_has_six_neighbours_at_the_lattice_spacing():
    g = radial_distribution(VAL[0])
    edges = np.linspace(0, 6, 25)
    shell = 4 / 3 * np.pi * (edges[1:] ** 3 - edges[:-1] ** 3)
    density = 4 / (5.0 * 5.0 * 2.5)
    counts_per_atom = g * shell * density
    assert counts_per_atom[10] == pytest.approx(6.0)  # the [2.5, 2.75) Å bin
    assert counts_per_atom[:10].sum() == 0
    # identical lattices: fingerprints differ only in composition
    assert np.allclose(fingerprint(TRAIN[0])[MAX_Z:], fingerprint(VAL[0])[MAX_Z:])


def test_baselines_match_hand_computed_values():
    got = baseline_metrics(VAL, TRAIN, norm(), LossWeights(), split="val")
    forces_l2 = (0.5 + 0.5 + 1.2 + 1.2) / 6  # eV/Å, 6 atoms
    forces_abs = (0.3 + 0.4 + 0.3 + 0.4 + 1.2 + 1.2) / 18
    zero_stress_iso = (0.02 + 0.0) / 2
    zero_stress_aniso = (0.0 + np.sqrt(2) * 0.01) / 10  # 5 components × 2 structures
    forces_term = 20 * forces_l2 / 0.5
    expected = {
        "predict_zero": {
            "energy": (3.6 + 3.2) / 2,  # |E|/n per structure
            "iso": zero_stress_iso,
            "aniso": zero_stress_aniso,
            "stress_abs": (0.06 + 0.02) / 18,
        },
        "linear_reference": {
            "energy": (abs(-14.4 + 14.0) / 4 + abs(-6.4 + 6.0) / 2) / 2,  # refs: Cu −3.5, Au −3.0
            "iso": zero_stress_iso,
            "aniso": zero_stress_aniso,
            "stress_abs": (0.06 + 0.02) / 18,
        },
        "nearest_neighbour": {
            # Cu4 ← Cu2: −14 + 4·(−0.3) = −15.2; Au2 ← Au1: −6 + 2·(−0.1) = −6.2
            "energy": (abs(-15.2 + 14.4) / 4 + abs(-6.2 + 6.4) / 2) / 2,
            # Cu4: predicted 0.02·I equals its label; Au2: 0.01·I against a pure xy shear of 0.01
            "iso": (0.0 + 0.01) / 2,
            "aniso": (0.0 + np.sqrt(2) * 0.01) / 10,
            "stress_abs": (0.0 + 0.05) / 18,
        },
    }
    assert set(got) == {f"baseline_{n}_val_{m}" for n in expected for m in (
        "loss", "energy_mae_mev_per_atom", "forces_mae_mev_per_a", "forces_l2mae_mev_per_a", "stress_mae_mev_per_a3")}
    for name, e in expected.items():
        p = f"baseline_{name}_val_"
        loss = 2.5 * e["energy"] + forces_term + 5 * e["iso"] / 0.01 + 5 * e["aniso"] / 0.01
        assert got[p + "loss"] == pytest.approx(loss, rel=1e-9), name
        assert got[p + "energy_mae_mev_per_atom"] == pytest.approx(1000 * e["energy"], rel=1e-9)
        assert got[p + "forces_l2mae_mev_per_a"] == pytest.approx(1000 * forces_l2, rel=1e-9)  # forces always 0
        assert got[p + "forces_mae_mev_per_a"] == pytest.approx(1000 * forces_abs, rel=1e-9)
        assert got[p + "stress_mae_mev_per_a3"] == pytest.approx(1000 * e["stress_abs"], rel=1e-9)
    # the numbers themselves, as worked out on paper
    assert got["baseline_predict_zero_val_loss"] == pytest.approx(36.873773, abs=1e-6)
    assert got["baseline_linear_reference_val_loss"] == pytest.approx(28.748773, abs=1e-6)
    assert got["baseline_nearest_neighbour_val_loss"] == pytest.approx(26.248773, abs=1e-6)


def test_no_validation_set_gives_no_baselines_and_no_train_skips_the_neighbour():
    assert baseline_metrics([], TRAIN, norm(), LossWeights()) == {}
    got = baseline_metrics(VAL, [], norm(), LossWeights())
    assert not any(k.startswith("baseline_nearest_neighbour") for k in got) and "baseline_predict_zero_val_loss" in got
