"""The one in-memory structure record every reader converts into.

Units: positions and cell in Å (cell rows are lattice vectors), total energy in eV,
forces in eV/Å, stress in eV/Å³ as a 3×3 tensor with ASE's sign convention
(stress = (1/V) ∂E/∂ε, so a compressed cell that pushes outward has negative stress).
Any label may be missing (``None``); the loss masks it out.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from engine.errors import DataError

# 1 GPa in eV/Å³ (ase.units.GPa); VASP/pymatgen stress is kBar = 0.1 GPa.
GPA_IN_EV_PER_A3 = 1.0 / 160.21766208
KBAR_IN_EV_PER_A3 = 0.1 * GPA_IN_EV_PER_A3


def voigt_to_tensor(voigt: np.ndarray) -> np.ndarray:
    """ASE Voigt order (xx, yy, zz, yz, xz, xy) → symmetric 3×3."""
    xx, yy, zz, yz, xz, xy = np.asarray(voigt, dtype=np.float64)
    return np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])


def tensor_to_voigt(tensor: np.ndarray) -> np.ndarray:
    """Symmetric 3×3 → ASE Voigt order (xx, yy, zz, yz, xz, xy)."""
    t = np.asarray(tensor, dtype=np.float64)
    return np.array([t[0, 0], t[1, 1], t[2, 2], t[1, 2], t[0, 2], t[0, 1]])


def as_stress_tensor(stress: np.ndarray | list | None) -> np.ndarray | None:
    """Accept 3×3 or Voigt-6 stress (eV/Å³) and return a 3×3 float64 array."""
    if stress is None:
        return None
    s = np.asarray(stress, dtype=np.float64)
    if s.shape == (6,):
        return voigt_to_tensor(s)
    if s.shape == (3, 3):
        return s.copy()
    if s.shape == (9,):
        return s.reshape(3, 3).copy()
    raise ValueError(f"stress must be 3×3 or Voigt-6, got shape {s.shape}")


def vasp_kbar_to_ase_stress(stress_kbar: np.ndarray | list) -> np.ndarray:
    """VASP/pymatgen stress (kBar, positive = compressive) → ASE stress in eV/Å³.

    VASP reports pressure-like stress, the opposite sign of ASE's; 1 kBar = 0.1 GPa.
    """
    s = as_stress_tensor(stress_kbar)
    return -s * KBAR_IN_EV_PER_A3


@dataclass
class Record:
    """One labelled atomic structure (see module docstring for units)."""

    numbers: np.ndarray  # (n,) int64 atomic numbers
    positions: np.ndarray  # (n, 3) Å
    cell: np.ndarray  # (3, 3) Å, rows are lattice vectors
    pbc: np.ndarray  # (3,) bool
    energy: float | None = None  # eV, total
    forces: np.ndarray | None = None  # (n, 3) eV/Å
    stress: np.ndarray | None = None  # (3, 3) eV/Å³, ASE sign
    uid: str = ""  # stable identity (source file + key)
    info: dict = field(default_factory=dict)
    # frames that belong together (one trajectory, relaxation or parent entry: MPtrj mp_id, Alexandria
    # entry id); validation/test are chosen by hashing it so no group straddles the split (None: the uid)
    group: str | None = None

    def __post_init__(self) -> None:
        self.numbers = np.asarray(self.numbers, dtype=np.int64).reshape(-1)
        self.positions = np.asarray(self.positions, dtype=np.float64).reshape(-1, 3)
        self.cell = np.asarray(self.cell, dtype=np.float64).reshape(3, 3)
        self.pbc = np.broadcast_to(np.asarray(self.pbc, dtype=bool), (3,)).copy()
        if self.energy is not None:
            self.energy = float(self.energy)
        if self.forces is not None:
            self.forces = np.asarray(self.forces, dtype=np.float64).reshape(-1, 3)
        self.stress = as_stress_tensor(self.stress)
        if not self.uid:
            self.uid = self.content_hash()
        if self.group is not None:
            self.group = str(self.group)

    @property
    def n_atoms(self) -> int:
        return int(self.numbers.shape[0])

    @property
    def split_key(self) -> str:
        """What the hash split groups by: the group when set, else the structure's own uid."""
        return self.group if self.group is not None else self.uid

    @property
    def volume(self) -> float:
        """Cell volume in Å³ (absolute value of the determinant)."""
        return float(abs(np.linalg.det(self.cell)))

    def content_hash(self) -> str:
        """Hash of numbers, positions and cell: an identity for records without a key."""
        h = hashlib.sha1()
        h.update(self.numbers.tobytes())
        h.update(np.round(self.positions, 6).tobytes())
        h.update(np.round(self.cell, 6).tobytes())
        return h.hexdigest()[:16]

    def validate(self, where: str = "") -> Record:
        """Raise :class:`DataError` naming ``where`` if the record is unusable."""
        at = f" in {where}" if where else ""
        n = self.n_atoms
        if n == 0:
            raise DataError(f"record {self.uid!r}{at} has no atoms; remove it or pass --skip-bad-records")
        if self.positions.shape != (n, 3):
            raise DataError(
                f"record {self.uid!r}{at}: positions shape {self.positions.shape} != ({n}, 3); "
                "fix the file or pass --skip-bad-records"
            )
        if np.any(self.numbers < 1) or np.any(self.numbers > 118):
            raise DataError(
                f"record {self.uid!r}{at}: atomic numbers must be in 1..118; fix the file or pass --skip-bad-records"
            )
        if not np.all(np.isfinite(self.positions)) or not np.all(np.isfinite(self.cell)):
            raise DataError(
                f"record {self.uid!r}{at} has NaN/inf positions or cell; fix the file or pass --skip-bad-records"
            )
        if np.any(self.pbc) and self.volume < 1e-6:
            raise DataError(
                f"record {self.uid!r}{at} is periodic with a zero-volume cell; give it a real cell "
                "or pass --skip-bad-records"
            )
        if self.energy is not None and not np.isfinite(self.energy):
            raise DataError(f"record {self.uid!r}{at} has a NaN/inf energy; fix the label or pass --skip-bad-records")
        if self.forces is not None:
            if self.forces.shape != (n, 3):
                raise DataError(
                    f"record {self.uid!r}{at}: forces shape {self.forces.shape} != ({n}, 3); "
                    "fix the file or pass --skip-bad-records"
                )
            if not np.all(np.isfinite(self.forces)):
                raise DataError(f"record {self.uid!r}{at} has NaN/inf forces; fix the label or pass --skip-bad-records")
        if self.stress is not None and not np.all(np.isfinite(self.stress)):
            raise DataError(f"record {self.uid!r}{at} has a NaN/inf stress; fix the label or pass --skip-bad-records")
        return self

    @classmethod
    def from_atoms(cls, atoms, uid: str = "", group: str | None = None, **info) -> Record:
        """Build from an ``ase.Atoms`` with an attached (single-point) calculator, if any."""
        energy = forces = stress = None
        calc = atoms.calc
        if calc is not None:
            results = getattr(calc, "results", {})
            energy = results.get("energy", results.get("free_energy"))
            forces = results.get("forces")
            stress = results.get("stress")
        return cls(
            numbers=atoms.get_atomic_numbers(),
            positions=atoms.get_positions(),
            cell=np.asarray(atoms.get_cell()),
            pbc=atoms.get_pbc(),
            energy=energy,
            forces=forces,
            stress=stress,
            uid=uid,
            info=dict(info),
            group=group,
        )

    def to_atoms(self):
        """An ``ase.Atoms`` with the labels on a SinglePointCalculator."""
        from ase import Atoms
        from ase.calculators.singlepoint import SinglePointCalculator

        atoms = Atoms(numbers=self.numbers, positions=self.positions, cell=self.cell, pbc=self.pbc)
        results = {}
        if self.energy is not None:
            results["energy"] = self.energy
        if self.forces is not None:
            results["forces"] = self.forces
        if self.stress is not None:
            results["stress"] = tensor_to_voigt(self.stress)
        if results:
            atoms.calc = SinglePointCalculator(atoms, **results)
        return atoms
