"""Naive baselines on a validation set: what a trained model must beat before its loss means anything.

Scored with the trials' own loss and metrics (:mod:`engine.loop.loss`, the dataset's shared
normalization scales), so ``baseline_<name>_<metric>`` compares directly with a trial's ``<metric>``
(e.g. ``baseline_predict_zero_val_loss`` beside ``val_loss``). The seed study (arXiv 2509.21811)
draws such lines: predict zero 17.56, predict the mean 6.48, 1-nearest-neighbour 5.70 (total loss on
its OMat24 validation set).

- ``predict_zero``: energy, forces and stress all 0.
- ``linear_reference``: energy Σ_atoms ref[Z] from the dataset's per-element references (least
  squares on the reference subset); forces and stress 0. What the normalization alone "knows".
- ``nearest_neighbour``: the training structure closest in a composition + radial-distribution
  fingerprint (:func:`fingerprint`). What it can predict honestly: an energy per atom and a pressure,
  which do not depend on orientation or atom order. Energy = the query's linear reference + its atom
  count × the neighbour's residual per atom (E − Σ ref)/n (the neighbour's energy per atom when the
  compositions agree; a mismatch in composition is not charged to it). Stress = the neighbour's
  isotropic part tr(σ)/3 · I (its anisotropic part lives in the neighbour's own frame). Forces = 0:
  per-atom vectors of another structure have no counterpart atom by atom.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from engine.config import LossWeights
from engine.data.graph import Graph, collate
from engine.data.normalize import MAX_Z, Normalization, reference_energy
from engine.data.records import Record
from engine.loop.loss import error_metrics, error_sums
from models.base import ModelOutput

BASELINES = ("predict_zero", "linear_reference", "nearest_neighbour")
RDF_CUTOFF_A = 6.0
RDF_BINS = 24  # 0.25 Å wide over [0, 6] Å


@dataclass
class Prediction:
    """One structure's baseline prediction: energy [eV], forces [eV/Å] (n, 3), stress [eV/Å³] 3×3."""

    energy: float
    forces: np.ndarray
    stress: np.ndarray


def _zero(record: Record, energy: float = 0.0, stress: np.ndarray | None = None) -> Prediction:
    return Prediction(energy, np.zeros((record.n_atoms, 3)), np.zeros((3, 3)) if stress is None else stress)


def predict_zero(records: Sequence[Record]) -> list[Prediction]:
    return [_zero(r) for r in records]


def predict_linear_reference(records: Sequence[Record], energy_ref: Sequence[float]) -> list[Prediction]:
    return [_zero(r, reference_energy(r, energy_ref)) for r in records]


def radial_distribution(record: Record, cutoff: float = RDF_CUTOFF_A, bins: int = RDF_BINS) -> np.ndarray:
    """g(r) histogram over [0, cutoff] Å: pair counts per atom / (shell volume × number density).

    Number density n/V for periodic cells, 1 Å⁻³ otherwise (a molecule has no bulk density).
    """
    from vesin import NeighborList

    periodic = bool(np.all(record.pbc))
    box = record.cell if periodic else np.zeros((3, 3))
    nl = NeighborList(cutoff=float(cutoff), full_list=True)
    (dist,) = nl.compute(points=record.positions, box=box, periodic=periodic, quantities="d")
    dist = np.asarray(dist, dtype=np.float64)
    edges = np.linspace(0.0, cutoff, bins + 1)
    counts, _ = np.histogram(dist[dist > 1e-2], bins=edges)
    shell = 4.0 / 3.0 * np.pi * (edges[1:] ** 3 - edges[:-1] ** 3)
    density = record.n_atoms / record.volume if periodic else 1.0
    return counts / (record.n_atoms * shell * density)


def fingerprint(record: Record) -> np.ndarray:
    """Composition fractions (MAX_Z) then g(r) / √bins, so both halves weigh about 1 in the distance."""
    composition = np.bincount(record.numbers, minlength=MAX_Z)[:MAX_Z] / record.n_atoms
    return np.concatenate([composition, radial_distribution(record) / np.sqrt(RDF_BINS)])


def nearest_indices(queries: np.ndarray, pool: np.ndarray, chunk: int = 256) -> np.ndarray:
    """Index of each query's nearest pool row (Euclidean; the lowest index wins a tie)."""
    out = np.empty(len(queries), dtype=np.int64)
    pool_sq = (pool**2).sum(axis=1)
    for start in range(0, len(queries), chunk):
        q = queries[start : start + chunk]
        d2 = pool_sq[None, :] - 2.0 * q @ pool.T + (q**2).sum(axis=1)[:, None]
        out[start : start + chunk] = np.argmin(d2, axis=1)
    return out


def predict_nearest_neighbour(
    records: Sequence[Record], train: Sequence[Record], energy_ref: Sequence[float]
) -> list[Prediction]:
    """See the module docstring: residual energy per atom and pressure of the nearest training structure."""
    if not train:
        raise ValueError("the nearest-neighbour baseline needs at least one training structure")
    pool = np.stack([fingerprint(r) for r in train])
    nearest = nearest_indices(np.stack([fingerprint(r) for r in records]), pool)
    out = []
    for r, k in zip(records, nearest, strict=True):
        nb = train[int(k)]
        residual = 0.0
        if nb.energy is not None:
            residual = (nb.energy - reference_energy(nb, energy_ref)) / nb.n_atoms
        pressure = np.trace(nb.stress) / 3.0 if nb.stress is not None else 0.0
        out.append(_zero(r, reference_energy(r, energy_ref) + r.n_atoms * residual, pressure * np.eye(3)))
    return out


def score(
    records: Sequence[Record], predictions: Sequence[Prediction], norm: Normalization, weights: LossWeights, split: str
) -> dict[str, float]:
    """The trial metrics (``<split>_loss``, ``<split>_energy_mae_mev_per_atom``, …) of ``predictions``."""
    empty = Graph(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 3), np.int64))
    batch = collate(list(records), [empty] * len(records), dtype=torch.float64)
    output = ModelOutput(
        energy=torch.tensor([p.energy for p in predictions], dtype=torch.float64),
        forces=torch.from_numpy(np.concatenate([p.forces for p in predictions]).reshape(-1, 3)),
        stress=torch.from_numpy(np.stack([p.stress for p in predictions])),
    )
    return error_metrics(error_sums(output, batch), weights, norm.forces_scale, norm.stress_scale, split=split)


def baseline_metrics(
    val: Sequence[Record],
    train: Sequence[Record],
    norm: Normalization,
    weights: LossWeights,
    split: str = "val",
) -> dict[str, float]:
    """``{f"baseline_{name}_{metric}": value}`` for every baseline in :data:`BASELINES` on ``val``."""
    if not val:
        return {}
    predictions = {
        "predict_zero": predict_zero(val),
        "linear_reference": predict_linear_reference(val, norm.energy_ref),
        "nearest_neighbour": predict_nearest_neighbour(val, train, norm.energy_ref) if train else None,
    }
    out: dict[str, float] = {}
    for name in BASELINES:
        if predictions[name] is None:
            continue
        for metric, value in score(val, predictions[name], norm, weights, split).items():
            out[f"baseline_{name}_{metric}"] = value
    return out
