"""The embedded default dataset: random periodic alloys labelled by ASE's EMT calculator.

EMT (effective medium theory; Jacobsen, Stoltze & Nørskov, Surf. Sci. 366, 394 (1996)) covers
Al, Cu, Ag, Au, Ni, Pd and Pt and gives energy [eV], forces [eV/Å] and stress [eV/Å³, ASE sign]
in well under a millisecond per small cell, so a few thousand labelled structures take seconds.

Each structure is an fcc, bcc or hcp supercell of 4–64 atoms with a random composition
(Vegard's-law lattice constant), a random symmetric strain of up to ±5 % per component and a
Gaussian rattle of 0.02–0.1 Å. Cells with |pressure| > 20 GPa or a pair closer than 1.8 Å
are redrawn. Structure ``index`` is drawn from its own stream ``default_rng([seed, index])``,
so the first k structures of (seed, n) equal those of (seed, m) for every m > n and caches nest.

The dataset is cached as ``<cache_dir>/emt-seed{seed}-n{size}-v1.aselmdb``; a request is served
from that file, or from the prefix of a larger cache of the same seed, before generating.

**OMat24-shaped subsets** (``data.emt_subsets``, :mod:`engine.data.emt_subsets`): rattled cells at a
temperature, Langevin-MD snapshots and relaxation frames, with ordered intermetallics, vacancies and
antisites, cached as ``emt-seed{seed}-n{size}-{subsets}-v2.aselmdb`` with the same prefix rules.
"""

from __future__ import annotations

import fcntl
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from engine.data.emt_cells import (  # noqa: F401 - part of this module's interface
    ELEMENTS,
    FCC_LATTICE_A,
    LATTICES,
    MAX_ABS_PRESSURE_GPA,
    MAX_ATOMS,
    MIN_ATOMS,
    MIN_PAIR_DISTANCE_A,
    SUPERCELLS,
    lattice_cell,
    too_close,
)
from engine.data.records import GPA_IN_EV_PER_A3, Record
from engine.data.store import row_to_record, write_aselmdb
from engine.errors import DataError

EMT_VERSION = 1
MAX_STRAIN = 0.05  # per symmetric-strain component
RATTLE_RANGE_A = (0.02, 0.10)  # std of the Gaussian displacement, Å
_MAX_ATTEMPTS = 10_000


def cache_file(cache_dir: str | Path, seed: int, size: int, subsets: Sequence[str] = ()) -> Path:
    """Cache of ``size`` structures of stream ``seed`` (default dataset, or the named subsets)."""
    return Path(cache_dir) / f"emt-seed{seed}-n{size}{_stream_suffix(subsets)}.aselmdb"


def _stream_suffix(subsets: Sequence[str]) -> str:
    if not subsets:
        return f"-v{EMT_VERSION}"
    from engine.data.emt_subsets import SUBSETS_VERSION, subsets_tag

    return f"-{subsets_tag(subsets)}-v{SUBSETS_VERSION}"


def emt_uid(seed: int, index: int) -> str:
    """Identity of structure ``index`` of stream ``seed`` (independent of the dataset size)."""
    return f"emt-seed{seed}-{index:07d}"


def _candidate(rng: np.random.Generator):
    """One random, unlabelled alloy cell."""
    kind = LATTICES[rng.integers(len(LATTICES))]
    conventional = kind != "hcp" and bool(rng.integers(2))
    repeats = SUPERCELLS[(kind, conventional)]
    r = repeats[rng.integers(len(repeats))]
    n_species = int(rng.integers(1, 5))
    species = rng.choice(len(ELEMENTS), size=n_species, replace=False)
    fractions = rng.dirichlet(np.ones(n_species))
    # Vegard's law: the lattice constant interpolates linearly in composition
    a_fcc = float(sum(f * FCC_LATTICE_A[ELEMENTS[s]] for f, s in zip(fractions, species, strict=True)))
    atoms = lattice_cell(kind, conventional, a_fcc).repeat(r)
    symbols = [ELEMENTS[s] for s in rng.choice(species, size=len(atoms), p=fractions)]
    atoms.set_chemical_symbols(symbols)
    strain = rng.uniform(-MAX_STRAIN, MAX_STRAIN, size=(3, 3))
    strain = 0.5 * (strain + strain.T)
    atoms.set_cell(atoms.cell.array @ (np.eye(3) + strain), scale_atoms=True)
    sigma = rng.uniform(*RATTLE_RANGE_A)
    atoms.positions = atoms.positions + rng.normal(0.0, sigma, size=(len(atoms), 3))
    atoms.wrap()
    return atoms


class _VesinNeighbors:
    """Drop-in for the ASE ``NeighborList`` that EMT queries (``update``, ``get_neighbors``), built with vesin.

    Same pairs (every image within ``cutoff``, both directions, no self pair); EMT's own
    list dominates its run time for small cells, vesin makes labelling ~2× faster.
    """

    def __init__(self, cutoff: float) -> None:
        self.cutoff = float(cutoff)

    def update(self, atoms) -> bool:
        from vesin import NeighborList

        nl = NeighborList(cutoff=self.cutoff, full_list=True)
        i, j, shifts = nl.compute(points=atoms.positions, box=atoms.cell.array, periodic=True, quantities="ijS")
        order = np.argsort(i, kind="stable")
        self._j = np.asarray(j, dtype=np.int64)[order]
        self._shifts = np.asarray(shifts, dtype=np.float64).reshape(-1, 3)[order]
        self._starts = np.searchsorted(np.asarray(i)[order], np.arange(len(atoms) + 1))
        return True

    def get_neighbors(self, a: int) -> tuple[np.ndarray, np.ndarray]:
        s, e = self._starts[a], self._starts[a + 1]
        return self._j[s:e], self._shifts[s:e]


def _emt_calculator():
    """ASE's EMT with its neighbor list swapped for :class:`_VesinNeighbors` (identical labels)."""
    from ase.calculators.emt import EMT

    class VesinEMT(EMT):
        def initialize(self, atoms) -> None:
            super().initialize(atoms)
            # pairs with r < rc_list, as ASE's list of radii rc_list/2 gives
            self.nl = _VesinNeighbors(self.rc_list)

    return VesinEMT()


def generate_structure(seed: int, index: int) -> tuple[Record, int]:
    """Structure ``index`` of stream ``seed`` and the number of draws it took (rejections + 1)."""
    rng = np.random.default_rng([seed, index])
    calc = _emt_calculator()
    for attempt in range(1, _MAX_ATTEMPTS + 1):
        atoms = _candidate(rng)
        if too_close(atoms):
            continue
        atoms.calc = calc
        energy = atoms.get_potential_energy()
        stress = atoms.get_stress(voigt=False)  # eV/Å³, ASE sign
        pressure_gpa = -np.trace(stress) / 3.0 / GPA_IN_EV_PER_A3
        if abs(pressure_gpa) > MAX_ABS_PRESSURE_GPA:
            continue
        record = Record(
            numbers=atoms.numbers,
            positions=atoms.positions,
            cell=atoms.cell.array,
            pbc=atoms.pbc,
            energy=energy,
            forces=atoms.get_forces(),
            stress=stress,
            uid=emt_uid(seed, index),
        )
        return record, attempt
    raise RuntimeError(f"EMT structure {index} of seed {seed}: no accepted cell in {_MAX_ATTEMPTS} draws")


def generate_records(seed: int, size: int, start: int = 0, progress: bool = True) -> list[Record]:
    """Structures ``start .. size-1`` of stream ``seed`` (tqdm progress bar on stderr)."""
    from tqdm import tqdm

    records = []
    bar = tqdm(
        range(start, size),
        desc=f"EMT dataset seed {seed}",
        unit="struct",
        file=sys.stderr,
        disable=not progress,
        mininterval=0.5 if sys.stderr.isatty() else 10.0,  # keep non-interactive logs (Ray, CI) short
    )
    for index in bar:
        records.append(generate_structure(seed, index)[0])
    return records


_SUBSET_KEYS = ("subset", "unit", "frame", "prototype", "defects")


def read_emt_cache(path: Path, seed: int, size: int) -> list[Record]:
    """The first ``size`` structures of an EMT cache file (rows are written in index order).

    Rows of a subset stream carry their uid, group and subset/unit/frame as key-value pairs.
    """
    import ase.db

    db = ase.db.connect(str(path), type="aselmdb", readonly=True)
    try:
        records = []
        for k in range(size):
            row = db.get(id=k + 1)
            kv = row.key_value_pairs
            record = row_to_record(row, kv.get("uid") or emt_uid(seed, k))
            if "group" in kv:
                record.group = str(kv["group"])
                record.info.update({key: kv[key] for key in _SUBSET_KEYS if key in kv})
            records.append(record)
    finally:
        db.close()
    return records


def write_emt_cache(records: Sequence[Record], path: Path, metadata: dict) -> None:
    """Write ``records`` atomically with uid, group and subset/unit/frame as row key-value pairs."""
    import ase.db

    from engine.data.store import atomic_path

    with atomic_path(Path(path)) as tmp:
        db = ase.db.connect(str(tmp), type="aselmdb")
        with db:  # one write transaction; leaving the block closes the LMDB environment
            for r in records:
                kv = {"uid": r.uid}
                if r.group is not None:
                    kv["group"] = r.group
                    kv.update({key: r.info[key] for key in _SUBSET_KEYS if key in r.info})
                db.write(r.to_atoms(), **kv)
        db = ase.db.connect(str(tmp), type="aselmdb")
        db.metadata = metadata
        db.close()


def _larger_caches(cache_dir: Path, seed: int, size: int, subsets: Sequence[str] = ()) -> list[tuple[int, Path]]:
    pattern = re.compile(rf"emt-seed{seed}-n(\d+){re.escape(_stream_suffix(subsets))}\.aselmdb$")
    found = []
    if cache_dir.is_dir():
        for p in cache_dir.iterdir():
            m = pattern.match(p.name)
            if m and int(m.group(1)) >= size:
                found.append((int(m.group(1)), p))
    return sorted(found)


def load_emt_dataset(
    size: int,
    seed: int = 0,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    subsets: Sequence[str] = (),
) -> list[Record]:
    """``size`` EMT structures from stream ``seed``, from the cache or generated (then cached).

    ``subsets`` (names such as ``rattled-1000``, ``aimd-3000``, ``rattled-relax``; see
    :mod:`engine.data.emt_subsets`) selects the OMat24-shaped stream; empty gives the default dataset.
    Served from :func:`cache_file` if present, else from the prefix of the
    smallest larger cache of the same stream, else generated (continuing from the largest smaller
    cache, since streams nest) and written atomically. An advisory lock per (stream, size) makes
    concurrent callers (parallel trials) wait for one generation instead of repeating it.
    """
    from engine.paths import cache_dir as default_cache_dir

    if size < 1:
        raise DataError(f"emt_size must be at least 1, got {size}; set data.emt_size to a positive integer")
    subsets = list(subsets or ())
    if subsets:
        from engine.data.emt_subsets import parse_subsets

        parse_subsets(subsets)  # a bad name fails before any work
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    records = _read_any_cache(folder, seed, size, subsets)
    if records is not None:
        return records
    try:
        folder.mkdir(parents=True, exist_ok=True)
        lock = open(folder / f".emt-seed{seed}-n{size}{_stream_suffix(subsets)}.lock", "a")  # noqa: SIM115
    except OSError as exc:
        raise DataError(f"cannot use the cache folder {folder}: {exc}; set ENGINE_CACHE to a writable folder") from exc
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        records = _read_any_cache(folder, seed, size, subsets)  # another process may have finished it meanwhile
        if records is not None:
            return records
        smaller = [(n, p) for n, p in _larger_caches(folder, seed, 1, subsets) if n < size]
        records = []
        if smaller:  # streams nest: the largest smaller cache is this dataset's prefix
            try:
                records = read_emt_cache(smaller[-1][1], seed, smaller[-1][0])
            except Exception:  # an unreadable cache is regenerated, never trusted
                records = []
        metadata = {
            "generator": "engine.data.emt",
            "version": EMT_VERSION,
            "seed": seed,
            "size": size,
            "elements": list(ELEMENTS),
            "created_unix_s": time.time(),
        }
        try:
            if subsets:
                from engine.data.emt_subsets import SUBSETS_VERSION, generate_subset_records

                records = generate_subset_records(seed, subsets, size, prefix=records, progress=progress)
                metadata.update(version=SUBSETS_VERSION, subsets=subsets)
                write_emt_cache(records, cache_file(folder, seed, size, subsets), metadata)
            else:
                records += generate_records(seed, size, start=len(records), progress=progress)
                write_aselmdb(records, cache_file(folder, seed, size), metadata=metadata)
        except OSError as exc:
            raise DataError(
                f"cannot write the EMT cache in {folder}: {exc}; set ENGINE_CACHE to a writable folder"
            ) from exc
    return records


def _read_any_cache(folder: Path, seed: int, size: int, subsets: Sequence[str] = ()) -> list[Record] | None:
    """The exact cache, or the prefix of the smallest larger one; ``None`` if neither is readable."""
    for _, path in _larger_caches(folder, seed, size, subsets):
        try:
            return read_emt_cache(path, seed, size)
        except Exception:  # an unreadable cache is regenerated, never trusted
            continue
    return None
