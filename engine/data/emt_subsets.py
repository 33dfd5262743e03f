"""OMat24-shaped subsets of the embedded EMT dataset, selected by name in ``data.emt_subsets``.

OMat24 (Barroso-Luque et al. 2024, arXiv 2410.12771) is organised by how each structure was made;
these subsets mimic that on EMT's seven metals (Al, Cu, Ag, Au, Ni, Pd, Pt):

- ``rattled-<T>`` (T = 300–3000 K): a strained cell (±5 % per symmetric-strain component) with every
  atom displaced by a Gaussian of the Einstein model's thermal width at T (below). One frame.
- ``aimd-<T>``: Langevin MD at T (BAOAB, 4 fs steps) from an Einstein-rattled cell with Maxwell–Boltzmann
  velocities; a few snapshots per trajectory. One split group per trajectory.
- ``rattled-relax``: frames along a FIRE relaxation (positions and cell) of a rattled, strained cell,
  geometrically spaced so the far-from-equilibrium start is well sampled. One group per relaxation.

Every starting cell is a random solid solution (fcc, bcc or hcp; one to four species, Vegard's-law
lattice constant) or an ordered intermetallic (L1₂, L1₀, B2) of two random species, 4–64 atoms, with
point defects at random (vacancies, antisites). Today's filters hold for every frame kept
(|pressure| ≤ 20 GPa, no pair closer than 1.8 Å).

The stream is a sequence of *units* (one cell, trajectory or relaxation), unit ``u`` drawn from
``default_rng([seed, 2, u])``; a unit's subset is drawn with probability ∝ 1/(its frames per unit), so
the subsets contribute about equally many frames. A dataset of size n is the first n frames of the
stream: smaller datasets are prefixes of larger ones.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from engine.data.emt_cells import (
    ELEMENTS,
    FCC_LATTICE_A,
    LATTICES,
    MAX_ABS_PRESSURE_GPA,
    SUPERCELLS,
    lattice_cell,
    too_close,
)
from engine.data.records import GPA_IN_EV_PER_A3, Record
from engine.errors import DataError

SUBSETS_VERSION = 2
T_RANGE_K = (300.0, 3000.0)
# Debye temperatures (K), Kittel, Introduction to Solid State Physics, Table 5.1
DEBYE_K = {"Al": 428.0, "Cu": 343.0, "Ag": 225.0, "Au": 165.0, "Ni": 450.0, "Pd": 274.0, "Pt": 240.0}
# Einstein temperature with the Debye spectrum's second moment: Θ_E = √(3/5)·Θ_D
EINSTEIN_K = {k: v * np.sqrt(0.6) for k, v in DEBYE_K.items()}
RATTLED_MAX_STRAIN = 0.05
AIMD_MAX_STRAIN = 0.03
AIMD_TIMESTEP_FS = 4.0
AIMD_FRICTION_PER_FS = 0.02  # Langevin friction: 50 fs relaxation time
AIMD_BURN_IN_STEPS = 8
AIMD_STRIDE_STEPS = 8  # 32 fs between snapshots
AIMD_FRAMES = 4
RELAX_RATTLE_A = (0.05, 0.2)  # Gaussian displacement std before relaxing, Å
RELAX_MAX_STEPS = 30
RELAX_FMAX_EV_PER_A = 0.05
RELAX_FRAMES = 6
VACANCY_PROB, ANTISITE_PROB, ORDERED_PROB = 0.15, 0.15, 0.4
_MAX_ATTEMPTS = 1000
_NAME = re.compile(r"^(rattled|aimd)-(\d+)$")


@dataclass(frozen=True)
class Subset:
    """One named subset: ``kind`` is rattled, aimd or relax; ``temperature_k`` for rattled/aimd."""

    name: str
    kind: str
    temperature_k: float | None
    frames_per_unit: int


def parse_subsets(names: Sequence[str]) -> list[Subset]:
    """Validate subset names (``DataError`` with the accepted forms on a bad one)."""
    if isinstance(names, str):
        names = [names]
    out: list[Subset] = []
    for name in names:
        name = str(name).strip()
        m = _NAME.match(name)
        if name == "rattled-relax":
            out.append(Subset(name, "relax", None, RELAX_FRAMES))
        elif m and T_RANGE_K[0] <= float(m.group(2)) <= T_RANGE_K[1]:
            kind = m.group(1)
            out.append(Subset(name, kind, float(m.group(2)), AIMD_FRAMES if kind == "aimd" else 1))
        else:
            raise DataError(
                f"unknown EMT subset {name!r}; use rattled-<T> or aimd-<T> with T in 300..3000 K "
                "(e.g. rattled-1000, aimd-3000) or rattled-relax in data.emt_subsets"
            )
    if len({s.name for s in out}) != len(out):
        raise DataError(f"data.emt_subsets lists a subset twice: {list(names)}; list each once")
    return out


def subsets_tag(names: Sequence[str]) -> str:
    """File-name tag of a subset list, in the order given (the order changes the stream)."""
    return "+".join(s.name for s in parse_subsets(names))


def _stream_id(seed: int, names: Sequence[str]) -> str:
    digest = hashlib.sha1(subsets_tag(names).encode()).hexdigest()[:8]
    return f"emt{SUBSETS_VERSION}-seed{seed}-{digest}"


def thermal_sigma_a(symbols: Sequence[str], temperature_k: float) -> np.ndarray:
    """Per-atom displacement std (Å, per Cartesian component) of a classical Einstein solid at T.

    ⟨u²⟩ = k_B·T / (m·ω_E²) with ω_E = k_B·Θ_E/ħ, i.e. σ² = ħ²·T / (m·k_B·Θ_E²): Cu at 300 K gives 0.057 Å.
    """
    from ase.data import atomic_masses, atomic_numbers
    from ase.units import _amu, _hbar, _k

    mass = np.array([atomic_masses[atomic_numbers[s]] for s in symbols]) * _amu
    theta = np.array([EINSTEIN_K[s] for s in symbols])
    return np.sqrt(_hbar**2 * temperature_k / (mass * _k * theta**2)) * 1e10


def _base_cell(rng: np.random.Generator):
    """A random solid solution or ordered intermetallic, 4–64 atoms, with point defects at random.

    Returns (atoms, info) with info naming the prototype and the defects.
    """

    if rng.random() < ORDERED_PROB:
        proto = ("L12", "L10", "B2")[rng.integers(3)]
        a_el, b_el = (ELEMENTS[k] for k in rng.choice(len(ELEMENTS), size=2, replace=False))
        kind = "bcc" if proto == "B2" else "fcc"
        # site order of ase.build.bulk's cubic cells: fcc (0,0,0), (0,½,½), (½,0,½), (½,½,0); bcc (0,0,0), (½,½,½)
        motif = {"L12": [b_el, a_el, a_el, a_el], "L10": [a_el, b_el, b_el, a_el], "B2": [a_el, b_el]}[proto]
        x_b = motif.count(b_el) / len(motif)
        a_fcc = (1 - x_b) * FCC_LATTICE_A[a_el] + x_b * FCC_LATTICE_A[b_el]  # Vegard's law
        unit = lattice_cell(kind, True, a_fcc)
        unit.set_chemical_symbols(motif)
        repeats = SUPERCELLS[(kind, True)]
        atoms = unit.repeat(repeats[rng.integers(len(repeats))])
    else:
        kind = LATTICES[rng.integers(len(LATTICES))]
        conventional = kind != "hcp" and bool(rng.integers(2))
        repeats = SUPERCELLS[(kind, conventional)]
        n_species = int(rng.integers(1, 5))
        species = rng.choice(len(ELEMENTS), size=n_species, replace=False)
        fractions = rng.dirichlet(np.ones(n_species))
        a_fcc = float(sum(f * FCC_LATTICE_A[ELEMENTS[s]] for f, s in zip(fractions, species, strict=True)))
        atoms = lattice_cell(kind, conventional, a_fcc).repeat(repeats[rng.integers(len(repeats))])
        atoms.set_chemical_symbols([ELEMENTS[s] for s in rng.choice(species, size=len(atoms), p=fractions)])
        proto = f"{kind}-solid-solution"
    defects = []
    if rng.random() < ANTISITE_PROB and len(set(atoms.numbers)) > 1:
        numbers = atoms.numbers.copy()
        for _ in range(int(rng.integers(1, 3))):
            i = int(rng.integers(len(numbers)))
            others = np.flatnonzero(numbers != numbers[i])
            if others.size:
                j = int(rng.choice(others))
                numbers[i], numbers[j] = numbers[j], numbers[i]
                defects.append("antisite")
        atoms.numbers = numbers
    if rng.random() < VACANCY_PROB and len(atoms) >= 8:
        n_vac = 2 if len(atoms) >= 24 and rng.random() < 0.5 else 1
        for k in sorted(rng.choice(len(atoms), size=n_vac, replace=False), reverse=True):
            del atoms[int(k)]
        defects += ["vacancy"] * n_vac
    return atoms, {"prototype": proto, "defects": ",".join(defects) or "none"}


def _strain(atoms, rng: np.random.Generator, max_strain: float) -> None:
    e = rng.uniform(-max_strain, max_strain, size=(3, 3))
    atoms.set_cell(atoms.cell.array @ (np.eye(3) + 0.5 * (e + e.T)), scale_atoms=True)


def _accepted(atoms, energy: float, stress: np.ndarray) -> bool:
    """Today's filters: finite labels, |pressure| ≤ 20 GPa, no pair closer than 1.8 Å."""
    pressure_gpa = -np.trace(stress) / 3.0 / GPA_IN_EV_PER_A3
    return bool(np.isfinite(energy) and abs(pressure_gpa) <= MAX_ABS_PRESSURE_GPA and not too_close(atoms))


def _snapshot(atoms) -> tuple:
    """(numbers, positions, cell, energy, forces, stress 3×3) of a labelled cell, copied."""
    energy = float(atoms.get_potential_energy())
    return (
        atoms.numbers.copy(),
        atoms.positions.copy(),
        atoms.cell.array.copy(),
        energy,
        atoms.get_forces().copy(),
        atoms.get_stress(voigt=False).copy(),
    )


def _rattled(atoms, rng, subset: Subset) -> list:
    _strain(atoms, rng, RATTLED_MAX_STRAIN)
    sigma = thermal_sigma_a(atoms.get_chemical_symbols(), subset.temperature_k)
    atoms.positions += rng.normal(size=(len(atoms), 3)) * sigma[:, None]
    return [_snapshot(atoms)]


def _aimd(atoms, rng, subset: Subset) -> list:
    """Langevin MD by the BAOAB splitting (Leimkuhler & Matthews 2013, Appl. Math. Res. Express 2013:34).

    Written out here rather than through ``ase.md.Langevin``: ASE's per-step bookkeeping costs more
    than an EMT evaluation of a 32-atom cell. ASE units throughout (Å, eV, amu, ASE time).
    """
    from ase import units

    from engine.data.emt_potential import emt_energy_forces_stress

    _strain(atoms, rng, AIMD_MAX_STRAIN)
    sigma = thermal_sigma_a(atoms.get_chemical_symbols(), subset.temperature_k)
    atoms.positions += rng.normal(size=(len(atoms), 3)) * sigma[:, None]  # start near equipartition
    numbers, cell = atoms.numbers.copy(), atoms.cell.array.copy()
    kt = units.kB * subset.temperature_k  # eV
    mass = atoms.get_masses()[:, None]  # amu
    v_thermal = np.sqrt(kt / mass)
    v = rng.normal(size=(len(atoms), 3)) * v_thermal  # Maxwell–Boltzmann
    v -= (mass * v).sum(axis=0) / mass.sum()  # no centre-of-mass drift
    dt = AIMD_TIMESTEP_FS * units.fs
    c1 = np.exp(-AIMD_FRICTION_PER_FS / units.fs * dt)
    c2 = np.sqrt(1.0 - c1 * c1)
    x = atoms.positions.copy()
    energy, forces, stress = emt_energy_forces_stress(numbers, x, cell)
    frames = []
    for step in range(1, AIMD_BURN_IN_STEPS + AIMD_STRIDE_STEPS * (AIMD_FRAMES - 1) + 1):
        v += 0.5 * dt * forces / mass  # B
        x += 0.5 * dt * v  # A
        v = c1 * v + c2 * v_thermal * rng.normal(size=v.shape)  # O
        x += 0.5 * dt * v  # A
        energy, forces, stress = emt_energy_forces_stress(numbers, x, cell)
        v += 0.5 * dt * forces / mass  # B
        if step >= AIMD_BURN_IN_STEPS and (step - AIMD_BURN_IN_STEPS) % AIMD_STRIDE_STEPS == 0:
            frames.append((numbers, x.copy(), cell, energy, forces.copy(), stress.copy()))
    return frames


def _relax(atoms, rng, subset: Subset) -> list:
    from ase.filters import UnitCellFilter
    from ase.optimize import FIRE

    _strain(atoms, rng, RATTLED_MAX_STRAIN)
    atoms.positions += rng.normal(0.0, rng.uniform(*RELAX_RATTLE_A), size=(len(atoms), 3))
    path = []
    opt = FIRE(UnitCellFilter(atoms), logfile=None)  # Frechet's logm is ~100× slower here
    for _ in opt.irun(fmax=RELAX_FMAX_EV_PER_A, steps=RELAX_MAX_STEPS):
        path.append(_snapshot(atoms))
    # geometric spacing keeps the start (large forces) and always the last frame
    picks = np.unique(np.round(np.geomspace(1, len(path), RELAX_FRAMES)).astype(int) - 1)
    return [path[k] for k in picks]


_KINDS = {"rattled": _rattled, "aimd": _aimd, "relax": _relax}


def generate_unit(seed: int, names: Sequence[str], unit: int) -> list[Record]:
    """The frames of unit ``unit`` of the subset stream (seed, names), filters applied."""
    from engine.data.emt_potential import FastEMT

    subsets = parse_subsets(names)
    stream = _stream_id(seed, names)
    rng = np.random.default_rng([seed, SUBSETS_VERSION, unit])
    weights = np.array([1.0 / s.frames_per_unit for s in subsets])
    subset = subsets[int(rng.choice(len(subsets), p=weights / weights.sum()))]
    group = f"{stream}-{unit:07d}"
    for _ in range(_MAX_ATTEMPTS):
        atoms, info = _base_cell(rng)
        atoms.calc = FastEMT()
        frames = _KINDS[subset.kind](atoms, rng, subset)
        records = []
        for numbers, positions, cell, energy, forces, stress in frames:
            probe = atoms.copy()
            probe.set_cell(cell)
            probe.positions = positions
            probe.wrap()
            if too_close(probe) or not _accepted(probe, energy, stress):
                continue
            records.append(
                Record(
                    numbers=numbers,
                    positions=probe.positions,
                    cell=cell,
                    pbc=True,
                    energy=energy,
                    forces=forces,
                    stress=stress,
                    uid=f"{group}-{len(records)}",
                    group=group,
                    info={"subset": subset.name, "unit": unit, "frame": len(records), **info},
                )
            )
        if records:
            return records
    raise RuntimeError(f"EMT subset unit {unit} of seed {seed}: no accepted frame in {_MAX_ATTEMPTS} draws")


def iter_subset_records(seed: int, names: Sequence[str], start_unit: int = 0) -> Iterator[Record]:
    """Frames of the stream (seed, names) from unit ``start_unit`` on, in order (endless)."""
    unit = start_unit
    while True:
        yield from generate_unit(seed, names, unit)
        unit += 1


def generate_subset_records(
    seed: int, names: Sequence[str], size: int, prefix: Sequence[Record] = (), progress: bool = True
) -> list[Record]:
    """The first ``size`` frames of the stream, continuing after ``prefix`` (its first frames, e.g. a cache).

    tqdm progress bar on stderr, counted in frames.
    """
    import sys

    from tqdm import tqdm

    records = list(prefix[:size])
    if len(records) >= size:
        return records
    start_unit, skip = 0, 0
    if records:  # regenerate the last (maybe truncated) unit and drop the frames already there
        start_unit = int(records[-1].info["unit"])
        skip = sum(1 for r in records if int(r.info["unit"]) == start_unit)
    bar = tqdm(
        total=size,
        initial=len(records),
        desc=f"EMT subsets {subsets_tag(names)} seed {seed}",
        unit="struct",
        file=sys.stderr,
        disable=not progress,
        mininterval=0.5 if sys.stderr.isatty() else 10.0,
    )
    with bar:
        for k, record in enumerate(iter_subset_records(seed, names, start_unit)):
            if k < skip:
                continue
            records.append(record)
            bar.update(1)
            if len(records) >= size:
                break
    return records
