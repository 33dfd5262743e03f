"""The OMat24 training loss and the per-target error metrics, as masked sums and counts.

Loss (Barroso-Luque et al. 2024, arXiv 2410.12771, Sec. 4 "Training"; fairchem's eqV2 OMat24 config):

    L = w_E · mean_s |ΔE_s| / n_s                       (eV/atom; per-element references cancel in ΔE)
      + w_F · mean_atoms ‖ΔF_i‖ / forces_scale          (force L2-MAE, un-squared vector norm)
      + w_iso · mean_s |Δσ_iso| / stress_scale           (σ_iso = tr σ / 3)
      + w_aniso · mean_{s,m} |Δσ_aniso,m| / stress_scale  (the 5 l=2 components of the traceless part)

Every term is a masked mean: structures (atoms) without that label contribute nothing, and a
term with no labelled item contributes 0 (not NaN). Terms are kept as *sums and counts* so a
distributed step can divide per-rank sums by counts summed over all ranks (the gradient then
equals that of the global batch), and so epoch metrics are exact dataset means.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch

from engine import metrics as M
from engine.config import LossWeights
from engine.data.graph import Batch
from models.base import ModelOutput

_SQRT2 = math.sqrt(2.0)
_SQRT6 = math.sqrt(6.0)


def stress_iso_aniso(stress: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Split (B, 3, 3) stress into its isotropic part tr/3 (B,) and 5 l=2 components (B, 5).

    The l=2 components are the traceless symmetric part in an orthonormal basis (real
    spherical-harmonic order xy, yz, z², xz, x²−y²), so Σ_m c_m² = ‖σ − (tr σ/3) I‖²_F.
    """
    s = 0.5 * (stress + stress.transpose(-1, -2))
    iso = (s[:, 0, 0] + s[:, 1, 1] + s[:, 2, 2]) / 3.0
    aniso = torch.stack(
        [
            _SQRT2 * s[:, 0, 1],
            _SQRT2 * s[:, 1, 2],
            (2.0 * s[:, 2, 2] - s[:, 0, 0] - s[:, 1, 1]) / _SQRT6,
            _SQRT2 * s[:, 0, 2],
            (s[:, 0, 0] - s[:, 1, 1]) / _SQRT2,
        ],
        dim=-1,
    )
    return iso, aniso


@dataclass
class ErrorSums:
    """Masked error sums (physical units) and their counts for one batch (or many, added up).

    Sums: ``energy_per_atom`` Σ|ΔE|/n [eV/atom]; ``forces_l2`` Σ‖ΔF‖ [eV/Å]; ``forces_abs``
    Σ|ΔF_c| [eV/Å]; ``stress_iso`` Σ|Δσ_iso|, ``stress_aniso`` Σ|Δσ_aniso,m|, ``stress_abs``
    Σ|Δσ_ab| [eV/Å³]. Counts: structures with energy, atoms with forces, structures with stress.
    """

    energy_per_atom: torch.Tensor
    forces_l2: torch.Tensor
    forces_abs: torch.Tensor
    stress_iso: torch.Tensor
    stress_aniso: torch.Tensor
    stress_abs: torch.Tensor
    n_energy: torch.Tensor
    n_forces: torch.Tensor
    n_stress: torch.Tensor

    SUMS = ("energy_per_atom", "forces_l2", "forces_abs", "stress_iso", "stress_aniso", "stress_abs")
    COUNTS = ("n_energy", "n_forces", "n_stress")

    def as_vector(self) -> torch.Tensor:
        """All fields, detached, as one float64 vector (for all-reduce and accumulation)."""
        return torch.stack([getattr(self, f.name).detach().to(torch.float64) for f in fields(self)])

    @classmethod
    def from_vector(cls, vec: torch.Tensor) -> ErrorSums:
        return cls(*[vec[k] for k in range(len(fields(cls)))])

    @classmethod
    def zeros(cls, device: torch.device | str = "cpu") -> ErrorSums:
        return cls.from_vector(torch.zeros(len(fields(cls)), dtype=torch.float64, device=device))


def error_sums(output: ModelOutput, batch: Batch) -> ErrorSums:
    """Masked error sums of one batch; differentiable in the model outputs."""
    dtype = torch.promote_types(output.energy.dtype, torch.float32)
    e_mask = batch.energy_mask
    f_mask = batch.forces_mask
    s_mask = batch.stress_mask
    n_atoms = batch.n_atoms.to(dtype)

    d_energy = (output.energy.to(dtype) - batch.energy.to(dtype)) / n_atoms
    energy_sum = torch.where(e_mask, d_energy.abs(), torch.zeros_like(d_energy)).sum()

    d_forces = output.forces.to(dtype) - batch.forces.to(dtype)
    d_forces = torch.where(f_mask.unsqueeze(-1), d_forces, torch.zeros_like(d_forces))
    # sqrt has an infinite derivative at 0: masked/zero rows get a safe norm (exactly 0 there).
    sq = (d_forces * d_forces).sum(-1)
    nonzero = sq > 0
    l2 = torch.where(nonzero, torch.sqrt(torch.where(nonzero, sq, torch.ones_like(sq))), torch.zeros_like(sq))
    forces_l2 = l2.sum()
    forces_abs = d_forces.abs().sum()

    if output.stress is not None:
        d_stress = output.stress.to(dtype) - batch.stress.to(dtype)
        d_stress = torch.where(s_mask.view(-1, 1, 1), d_stress, torch.zeros_like(d_stress))
        iso, aniso = stress_iso_aniso(d_stress)
        stress_iso = iso.abs().sum()
        stress_aniso = aniso.abs().sum()
        stress_abs = d_stress.abs().sum()
        n_stress = s_mask.sum()
    else:  # a model without a stress output is not scored on stress
        zero = energy_sum.new_zeros(())
        stress_iso = stress_aniso = stress_abs = zero
        n_stress = torch.zeros((), dtype=torch.long, device=energy_sum.device)

    return ErrorSums(
        energy_per_atom=energy_sum,
        forces_l2=forces_l2,
        forces_abs=forces_abs,
        stress_iso=stress_iso,
        stress_aniso=stress_aniso,
        stress_abs=stress_abs,
        n_energy=e_mask.sum().to(dtype),
        n_forces=f_mask.sum().to(dtype),
        n_stress=n_stress.to(dtype),
    )


def _safe_mean(total: torch.Tensor, count: torch.Tensor | float) -> torch.Tensor:
    """``total / count``, and 0 when nothing was counted."""
    count = torch.as_tensor(count, dtype=total.dtype, device=total.device)
    return torch.where(count > 0, total / count.clamp(min=1.0), torch.zeros_like(total))


def weighted_loss(
    sums: ErrorSums,
    weights: LossWeights,
    forces_scale: float,
    stress_scale: float,
    counts: ErrorSums | None = None,
) -> torch.Tensor:
    """The OMat24 objective from error sums (module docstring).

    ``counts`` supplies the denominators; by default ``sums``' own counts. A distributed step
    passes counts all-reduced over ranks so each rank's loss is its share of the global mean.
    """
    c = sums if counts is None else counts
    return (
        weights.energy * _safe_mean(sums.energy_per_atom, c.n_energy)
        + weights.forces * _safe_mean(sums.forces_l2, c.n_forces) / forces_scale
        + weights.stress_iso * _safe_mean(sums.stress_iso, c.n_stress) / stress_scale
        + weights.stress_aniso * _safe_mean(sums.stress_aniso, 5.0 * c.n_stress) / stress_scale
    )


def error_metrics(
    sums: ErrorSums, weights: LossWeights, forces_scale: float, stress_scale: float, split: str
) -> dict[str, float]:
    """Dataset-level metrics (names from :mod:`engine.metrics`), meV units, prefixed by ``split``."""
    s = ErrorSums.from_vector(sums.as_vector())
    mev = 1000.0
    out = {
        M.LOSS: float(weighted_loss(s, weights, forces_scale, stress_scale)),
        M.ENERGY_MAE: mev * float(_safe_mean(s.energy_per_atom, s.n_energy)),
        M.FORCES_MAE: mev * float(_safe_mean(s.forces_abs, 3.0 * s.n_forces)),
        M.FORCES_L2MAE: mev * float(_safe_mean(s.forces_l2, s.n_forces)),
        M.STRESS_MAE: mev * float(_safe_mean(s.stress_abs, 9.0 * s.n_stress)),
    }
    return {M.split_key(split, k): v for k, v in out.items()}
