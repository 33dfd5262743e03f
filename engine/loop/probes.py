"""Physical probes of a trained model: does lower loss mean better physics?

A lower force error does not guarantee stable dynamics, and a direct-force model does not
conserve energy at all (eSEN, Fu et al. ICML 2025, found test error tracks MD stability only for
conservative models). After training, a trial can run two short checks on a few validation
structures and log them beside its losses:

- **NVE**: velocity Verlet (``dt_fs``) from Maxwell–Boltzmann velocities at ``temperature_k`` for
  ``nve_steps``; drift = max_t |E_tot(t) − E_tot(0)| / atoms [eV/atom]. A run is *stable* when every
  energy stays finite, no two atoms come closer than ``min_distance_a`` and the temperature stays
  below ``max_temperature_factor`` × the start.
- **Relaxation**: FIRE on positions with the model (``fmax`` eV/Å, ``relax_steps`` at most), then the
  labels' own calculator (EMT for the embedded dataset) at the relaxed structure: its max force
  [eV/Å] (how relaxed the structure truly is) and |E_model − E_reference| per atom [meV/atom].

Medians over structures are reported, so one pathological cell does not decide the number.

The loop (``probes: {enabled: true}``) calls :func:`probe_model` after the test-split evaluation of a
trial's last report, on a float64 copy of the trained weights (the EMA average when on), with EMT as
the reference when the data is the embedded EMT set; the metrics land in that last report.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from engine.config import ProbeConfig
from engine.data.records import Record

NVE_DRIFT = "probe_nve_drift_ev_per_atom"  # median over stable runs of max |ΔE_tot| per atom
NVE_STABLE = "probe_nve_stable_fraction"
RELAX_MAX_FORCE = "probe_relax_ref_max_force_ev_per_a"  # reference calculator's max |F| at the model's minimum
RELAX_ENERGY_ERROR = "probe_relax_energy_error_mev_per_atom"
PROBE_METRICS = (NVE_DRIFT, NVE_STABLE, RELAX_MAX_FORCE, RELAX_ENERGY_ERROR)
PROBE_WALL_S = "probe_wall_s"  # seconds the probes took (kept out of the trial's wall_s)
PROBE_STRUCTURES = "probe_structures"  # how many structures were probed


@dataclass
class NveResult:
    drift_ev_per_atom: float
    stable: bool


def _min_distance(atoms) -> float:
    if len(atoms) < 2:
        return float("inf")
    d = atoms.get_all_distances(mic=bool(atoms.pbc.all()))
    return float(np.min(d[np.triu_indices(len(atoms), k=1)]))


def nve_probe(atoms, config: ProbeConfig, seed: int) -> NveResult:
    """Run NVE on ``atoms`` (its calculator set) and measure drift and stability."""
    from ase import units
    from ase.md.velocitydistribution import Stationary, thermalize_momenta
    from ase.md.verlet import VelocityVerlet

    thermalize_momenta(atoms, temperature_K=config.temperature_k, rng=np.random.default_rng(seed))
    Stationary(atoms)
    n = len(atoms)
    e0 = atoms.get_potential_energy() + atoms.get_kinetic_energy()
    t_max = config.max_temperature_factor * max(config.temperature_k, 1.0)
    worst = 0.0
    dyn = VelocityVerlet(atoms, timestep=config.dt_fs * units.fs, logfile=None)
    for _ in range(config.nve_steps):
        try:
            dyn.run(1)
        except (RuntimeError, ValueError, FloatingPointError):  # atoms flew to non-finite positions
            return NveResult(float("nan"), False)
        total = atoms.get_potential_energy() + atoms.get_kinetic_energy()
        if not np.isfinite(total) or atoms.get_temperature() > t_max or _min_distance(atoms) < config.min_distance_a:
            return NveResult(float("nan"), False)
        worst = max(worst, abs(total - e0) / n)
    return NveResult(float(worst), True)


def relax_probe(atoms, reference: Callable[[], object] | None, config: ProbeConfig) -> tuple[float, float]:
    """Relax with the model's calculator; score the result with the reference. (nan, nan) without one."""
    from ase.optimize import FIRE

    try:
        FIRE(atoms, logfile=None).run(fmax=config.fmax, steps=config.relax_steps)
    except (RuntimeError, ValueError, FloatingPointError):  # the model pushed atoms to non-finite positions
        return float("nan"), float("nan")
    if reference is None:
        return float("nan"), float("nan")
    e_model = atoms.get_potential_energy()
    ref = atoms.copy()
    ref.calc = reference()
    max_force = float(np.max(np.linalg.norm(ref.get_forces(), axis=1)))
    error = abs(e_model - ref.get_potential_energy()) / len(atoms) * 1000.0
    return max_force, float(error)


def probe_records(records: Sequence[Record], config: ProbeConfig) -> list[Record]:
    """The structures the probes run on: the first ``config.structures`` periodic ones with ≥ 2 atoms
    (reads no further than it needs: ``records`` may be a lazy dataset)."""
    chosen: list[Record] = []
    for k in range(len(records)):
        if len(chosen) >= config.structures:
            break
        record = records[k]
        if bool(np.all(record.pbc)) and len(record.numbers) >= 2:
            chosen.append(record)
    return chosen


def _nanmedian(values: Sequence[float]) -> float:
    arr = np.asarray([v for v in values if np.isfinite(v)], dtype=np.float64)
    return float(np.median(arr)) if arr.size else float("nan")


def run_probes(
    make_calculator: Callable[[], object],
    records: Sequence[Record],
    config: ProbeConfig,
    reference: Callable[[], object] | None = None,
    seed: int = 0,
) -> dict[str, float]:
    """Both probes on the first ``config.structures`` periodic records of ≥ 2 atoms; returns the PROBE_METRICS.

    (One atom in a periodic cell has no motion left once the centre of mass is fixed.)

    ``make_calculator`` builds an ASE calculator of the trained model (float64); ``reference``
    builds the labels' calculator, or is None when the labels came from elsewhere (DFT files).
    """
    chosen = probe_records(records, config)
    drifts, stable, forces, errors = [], [], [], []
    for k, record in enumerate(chosen):
        atoms = record.to_atoms()
        atoms.calc = make_calculator()
        res = nve_probe(atoms, config, seed + k)
        stable.append(res.stable)
        drifts.append(res.drift_ev_per_atom)
        if config.relax_steps > 0:
            atoms = record.to_atoms()
            atoms.calc = make_calculator()
            f, e = relax_probe(atoms, reference, config)
            forces.append(f)
            errors.append(e)
    return {
        NVE_DRIFT: _nanmedian(drifts),
        NVE_STABLE: float(np.mean(stable)) if stable else float("nan"),
        RELAX_MAX_FORCE: _nanmedian(forces),
        RELAX_ENERGY_ERROR: _nanmedian(errors),
    }


def emt_reference():
    """The embedded dataset's labeller: ASE's EMT (engine.data.emt labels with the same potential)."""
    from ase.calculators.emt import EMT

    return EMT()


def probe_model(
    model,
    records: Sequence[Record],
    config: ProbeConfig,
    emt_labels: bool,
    seed: int = 0,
    device: object = "cpu",
) -> dict[str, float]:
    """:func:`run_probes` of a trained :class:`~models.base.Potential`, on a float64 copy of it.

    ``model`` is left as it is (dtype, mode, weights); ``emt_labels`` says the labels came from EMT
    (the embedded dataset), which then scores the relaxation. Adds :data:`PROBE_WALL_S` and
    :data:`PROBE_STRUCTURES` to the metrics.
    """
    import copy
    import time

    import torch

    from models.calculator import EngineCalculator

    t0 = time.perf_counter()
    twin = copy.deepcopy(model).to(dtype=torch.float64)
    twin.eval()
    out = run_probes(lambda: EngineCalculator(twin, device=device), records, config,
                     reference=emt_reference if emt_labels else None, seed=seed)
    out[PROBE_STRUCTURES] = float(len(probe_records(records, config)))
    out[PROBE_WALL_S] = time.perf_counter() - t0
    return out
