"""Starting cells and filters shared by the EMT datasets (:mod:`engine.data.emt`, :mod:`engine.data.emt_subsets`).

fcc, bcc and hcp cells of equal atomic volume for EMT's seven metals, the supercell repeats that give
4–64 atoms, and the filters every kept structure passes (no pair closer than 1.8 Å; |pressure| ≤ 20 GPa,
checked where the labels are).
"""

from __future__ import annotations

import numpy as np

ELEMENTS = ("Al", "Cu", "Ag", "Au", "Ni", "Pd", "Pt")
# fcc lattice constants (Å), experimental room-temperature values (Kittel); EMT's minima lie 0–1.4 % below.
FCC_LATTICE_A = {"Al": 4.05, "Cu": 3.61, "Ag": 4.09, "Au": 4.08, "Ni": 3.52, "Pd": 3.89, "Pt": 3.92}
LATTICES = ("fcc", "bcc", "hcp")
MIN_ATOMS, MAX_ATOMS = 4, 64
MAX_ABS_PRESSURE_GPA = 20.0
MIN_PAIR_DISTANCE_A = 1.8


def _supercell_choices() -> dict[tuple[str, bool], list[tuple[int, int, int]]]:
    """Repeat triples giving 4–64 atoms for each (lattice, conventional?) cell, aspect ratio ≤ 3."""
    basis = {("fcc", False): 1, ("fcc", True): 4, ("bcc", False): 1, ("bcc", True): 2, ("hcp", False): 2}
    out = {}
    for key, n_basis in basis.items():
        triples = []
        for r1 in range(1, 9):
            for r2 in range(1, 9):
                for r3 in range(1, 9):
                    n = n_basis * r1 * r2 * r3
                    if MIN_ATOMS <= n <= MAX_ATOMS and max(r1, r2, r3) <= 3 * min(r1, r2, r3):
                        triples.append((r1, r2, r3))
        out[key] = triples
    return out


SUPERCELLS = _supercell_choices()


def lattice_cell(kind: str, conventional: bool, a_fcc: float):
    """Unit cell with the same atomic volume as fcc of lattice constant ``a_fcc`` (Å)."""
    from ase.build import bulk

    if kind == "fcc":
        return bulk("Cu", "fcc", a=a_fcc, cubic=conventional)
    if kind == "bcc":
        # equal volume per atom: a_fcc³/4 = a_bcc³/2
        return bulk("Cu", "bcc", a=a_fcc / 2 ** (1 / 3), cubic=conventional)
    # ideal hcp: a = a_fcc/√2 (same nearest-neighbour distance), c/a = √(8/3)
    a = a_fcc / np.sqrt(2.0)
    return bulk("Cu", "hcp", a=a, c=a * np.sqrt(8.0 / 3.0))


def too_close(atoms) -> bool:
    """Whether any pair (periodic images included) is closer than ``MIN_PAIR_DISTANCE_A``."""
    from vesin import NeighborList

    nl = NeighborList(cutoff=MIN_PAIR_DISTANCE_A, full_list=False)
    (d,) = nl.compute(points=atoms.positions, box=atoms.cell.array, periodic=True, quantities="d")
    return bool(np.size(d))
