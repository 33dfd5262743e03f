"""Tiny EMT-labelled periodic structures built inline, and a Splits-like holder for them."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest
import torch

from engine.data.records import Record


@dataclass
class TinySplits:
    """The fields of ``engine.data.dataset.Splits`` the loop reads."""

    train: list[Record]
    val: list[Record]
    test: list[Record] = field(default_factory=list)
    pool_size: int = 0
    source: str = "inline EMT"


def emt_records(n: int, seed: int = 0, with_stress: bool = True) -> list[Record]:
    """``n`` rattled, strained fcc/bcc cells of Cu/Au/Ni (2–8 atoms) labelled by ASE's EMT."""
    from ase.build import bulk
    from ase.calculators.emt import EMT

    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        el = ["Cu", "Au", "Ni"][k % 3]
        atoms = bulk(el, "fcc", a={"Cu": 3.6, "Au": 4.08, "Ni": 3.52}[el], cubic=bool(k % 2))
        if k % 4 == 3:
            atoms = atoms.repeat((2, 1, 1))
        numbers = atoms.get_atomic_numbers()
        numbers[rng.random(len(numbers)) < 0.3] = 29
        atoms.set_atomic_numbers(numbers)
        strain = np.eye(3) + rng.uniform(-0.03, 0.03, (3, 3))
        atoms.set_cell(atoms.cell.array @ strain, scale_atoms=True)
        atoms.rattle(0.05, seed=int(rng.integers(1 << 30)))
        atoms.calc = EMT()
        atoms.get_potential_energy()
        rec = Record.from_atoms(atoms, uid=f"tiny-{seed}-{k}")
        if not with_stress:
            rec.stress = None
        out.append(rec)
    return out


@pytest.fixture(scope="session")
def tiny_splits() -> TinySplits:
    recs = emt_records(30, seed=1)
    return TinySplits(train=recs[:24], val=recs[24:], pool_size=30)


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path, monkeypatch):
    """Dataset and neighbor-list caches go to the test's temp folder, never the repo."""
    monkeypatch.setenv("ENGINE_CACHE", str(tmp_path / "cache"))
