"""Normalization fitted on the training subset: per-element energy references and target scales.

Energy references follow the OMat24/fairchem recipe (Barroso-Luque et al. 2024,
arXiv 2410.12771): a linear model E ≈ Σ_Z n_Z · ref_Z fitted by least squares on total energies, so the
network only learns the residual. The scales make each normalized target O(1):

- energy_scale [eV/atom]: standard deviation of the per-atom residual (E − Σ n_Z ref_Z)/n, floor 1e-3
- forces_scale [eV/Å]: RMS of all force components
- stress_scale [eV/Å³]: RMS of all stress components

Each over the structures that carry that label; 1.0 when none does.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from engine.data.records import Record
from models.base import MAX_Z, Normalization

ENERGY_SCALE_FLOOR_EV_PER_ATOM = 1e-3
# Scales below these mean the label is (numerically) all zero: keep 1.0 rather than divide by ~0.
_FORCES_SCALE_FLOOR_EV_PER_A = 1e-6
_STRESS_SCALE_FLOOR_EV_PER_A3 = 1e-9


def element_counts(records: Sequence[Record]) -> np.ndarray:
    """(n_records, MAX_Z) matrix of how many atoms of each element each record holds."""
    counts = np.zeros((len(records), MAX_Z), dtype=np.float64)
    for k, r in enumerate(records):
        counts[k] = np.bincount(r.numbers, minlength=MAX_Z)[:MAX_Z]
    return counts


def fit_energy_references(records: Sequence[Record]) -> np.ndarray:
    """Per-element reference energies (eV/atom, length MAX_Z) by least squares; absent elements get 0."""
    labelled = [r for r in records if r.energy is not None]
    refs = np.zeros(MAX_Z)
    if not labelled:
        return refs
    counts = element_counts(labelled)
    present = np.flatnonzero(counts.sum(axis=0) > 0)
    energies = np.array([r.energy for r in labelled])
    # minimum-norm solution when compositions are collinear (e.g. every cell a 1:1 alloy)
    solution, *_ = np.linalg.lstsq(counts[:, present], energies, rcond=None)
    refs[present] = solution
    return refs


def fit_normalization(records: Sequence[Record]) -> Normalization:
    """Fit :class:`models.base.Normalization` on ``records`` (the training subset only)."""
    refs = fit_energy_references(records)

    labelled = [r for r in records if r.energy is not None]
    energy_scale = 1.0
    if labelled:
        counts = element_counts(labelled)
        n_atoms = counts.sum(axis=1)
        residual_per_atom = (np.array([r.energy for r in labelled]) - counts @ refs) / n_atoms
        energy_scale = max(float(np.std(residual_per_atom)), ENERGY_SCALE_FLOOR_EV_PER_ATOM)

    forces = [r.forces for r in records if r.forces is not None]
    forces_scale = 1.0
    if forces:
        rms = float(np.sqrt(np.mean(np.concatenate(forces) ** 2)))
        forces_scale = rms if rms > _FORCES_SCALE_FLOOR_EV_PER_A else 1.0

    stresses = [r.stress for r in records if r.stress is not None]
    stress_scale = 1.0
    if stresses:
        rms = float(np.sqrt(np.mean(np.stack(stresses) ** 2)))
        stress_scale = rms if rms > _STRESS_SCALE_FLOOR_EV_PER_A3 else 1.0

    return Normalization(
        energy_ref=refs.tolist(), energy_scale=energy_scale, forces_scale=forces_scale, stress_scale=stress_scale
    )
