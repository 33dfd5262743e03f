"""Normalization of the targets, fitted ONCE per dataset: per-element energy references and target scales.

Energy references follow the OMat24/fairchem recipe (Barroso-Luque et al. 2024,
arXiv 2410.12771): a linear model E ≈ Σ_Z n_Z · ref_Z fitted by least squares on total energies, so the
network only learns the residual. The scales make each normalized target O(1):

- energy_scale [eV/atom]: standard deviation of the per-atom residual (E − Σ n_Z ref_Z)/n, floor 1e-3
- forces_scale [eV/Å]: RMS of all force components
- stress_scale [eV/Å³]: RMS of all stress components

Each over the structures that carry that label; 1.0 when none does.

Why once per dataset: the force and stress scales divide the loss, so fitting them on each trial's own
training subset puts every point of a data-scaling sweep in a different unit (measured: the force scale
is 0.93 eV/Å at 50 structures and 0.73 at ≥ 400, deflating small-D losses by ~20 %). The fit set is a
fixed reference subset of the training pool (:func:`engine.data.dataset.load_splits`), the same for
every training-set size; a sweep saves it as ``normalization.json`` and every trial loads it.

:class:`Normalization` (the container) lives here, below ``models``: models import it from here.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from engine.data.records import Record
from engine.errors import DataError

MAX_Z = 119  # element index range 0..118
ENERGY_SCALE_FLOOR_EV_PER_ATOM = 1e-3
# Scales below these mean the label is (numerically) all zero: keep 1.0 rather than divide by ~0.
_FORCES_SCALE_FLOOR_EV_PER_A = 1e-6
_STRESS_SCALE_FLOOR_EV_PER_A3 = 1e-9


@dataclass
class Normalization:
    """Per-element energy references and target scales of one dataset.

    energy_ref: eV per atom of each element (length MAX_Z); energy_scale: eV per atom
    (std of the per-atom residual energy); forces_scale: eV/Å (RMS force component);
    stress_scale: eV/Å³ (RMS stress component). ``fitted_on``: how many structures the fit saw
    (0 when unknown or the identity).
    """

    energy_ref: list[float]
    energy_scale: float = 1.0
    forces_scale: float = 1.0
    stress_scale: float = 1.0
    fitted_on: int = 0

    @classmethod
    def identity(cls) -> Normalization:
        return cls(energy_ref=[0.0] * MAX_Z)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> Normalization:
        ref = [float(v) for v in values["energy_ref"]]
        if len(ref) != MAX_Z:
            raise DataError(f"normalization energy_ref has {len(ref)} entries, expected {MAX_Z}; refit it")
        return cls(
            energy_ref=ref,
            energy_scale=float(values.get("energy_scale", 1.0)),
            forces_scale=float(values.get("forces_scale", 1.0)),
            stress_scale=float(values.get("stress_scale", 1.0)),
            fitted_on=int(values.get("fitted_on", 0)),
        )

    def save(self, path: str | Path) -> None:
        """Write as JSON atomically (a concurrent reader never sees half a file)."""
        p = Path(path)
        tmp = p.with_name(p.name + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=1) + "\n")
        tmp.replace(p)

    @classmethod
    def load(cls, path: str | Path) -> Normalization:
        p = Path(path)
        try:
            return cls.from_dict(json.loads(p.read_text()))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DataError(f"cannot read the normalization file {p} ({exc}); delete it to refit") from exc


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


def reference_energy(record: Record, energy_ref: Sequence[float] | np.ndarray) -> float:
    """Σ_atoms energy_ref[Z] of one structure [eV]: the linear-reference prediction of its total energy."""
    return float(np.asarray(energy_ref, dtype=np.float64)[record.numbers].sum())


def fit_normalization(records: Sequence[Record]) -> Normalization:
    """Fit a :class:`Normalization` on ``records`` (the dataset's fixed reference subset)."""
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
        energy_ref=refs.tolist(),
        energy_scale=energy_scale,
        forces_scale=forces_scale,
        stress_scale=stress_scale,
        fitted_on=len(records),
    )
