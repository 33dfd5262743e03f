"""The embedded EMT dataset: determinism, nesting, caching, filter bounds, atomic writes."""

from __future__ import annotations

import numpy as np
import pytest
from ase.calculators.emt import EMT
from ase.neighborlist import neighbor_list

from engine.data import emt
from engine.data.records import GPA_IN_EV_PER_A3


def test_deterministic_and_nested(emt_cache):
    _, records = emt_cache
    again = emt.generate_records(seed=7, size=10, progress=False)
    for a, b in zip(records[:10], again, strict=True):
        assert a.uid == b.uid
        np.testing.assert_array_equal(a.numbers, b.numbers)
        np.testing.assert_allclose(a.positions, b.positions, atol=1e-12)
        np.testing.assert_allclose(a.cell, b.cell, atol=1e-12)
        assert a.energy == pytest.approx(b.energy, abs=1e-10)
    other_seed = emt.generate_records(seed=8, size=3, progress=False)
    assert not np.allclose(other_seed[0].energy, records[0].energy)


def test_filter_bounds_and_composition(emt_cache):
    _, records = emt_cache
    allowed = {13, 29, 47, 79, 28, 46, 78}  # Al Cu Ag Au Ni Pd Pt
    for r in records:
        assert emt.MIN_ATOMS <= r.n_atoms <= emt.MAX_ATOMS
        assert set(r.numbers.tolist()) <= allowed
        pressure_gpa = -np.trace(r.stress) / 3 / GPA_IN_EV_PER_A3
        assert abs(pressure_gpa) <= emt.MAX_ABS_PRESSURE_GPA
        d = neighbor_list("d", r.to_atoms(), emt.MIN_PAIR_DISTANCE_A)
        assert d.size == 0, f"{r.uid} has a pair closer than 1.8 Å"
        assert r.forces.shape == (r.n_atoms, 3)
    assert len({r.n_atoms for r in records}) > 5  # sizes vary


def test_labels_match_plain_ase_emt(emt_cache):
    """The vesin neighbor list inside EMT gives ASE's own EMT labels."""
    _, records = emt_cache
    for r in records[:5]:
        atoms = r.to_atoms()
        atoms.calc = EMT()
        assert atoms.get_potential_energy() == pytest.approx(r.energy, abs=1e-8)
        np.testing.assert_allclose(atoms.get_forces(), r.forces, atol=1e-8)
        np.testing.assert_allclose(atoms.get_stress(voigt=False), r.stress, atol=1e-10)


def test_cache_hit_and_prefix_reuse(emt_cache, monkeypatch):
    folder, records = emt_cache
    path = emt.cache_file(folder, 7, 40)
    assert path.is_file()
    assert not [p for p in folder.iterdir() if ".tmp" in p.name], "temp files left behind"

    def no_generation(*args, **kwargs):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(emt, "generate_structure", no_generation)
    again = emt.load_emt_dataset(40, seed=7, cache_dir=folder, progress=False)
    assert [r.uid for r in again] == [r.uid for r in records]
    np.testing.assert_allclose(again[3].forces, records[3].forces)
    prefix = emt.load_emt_dataset(25, seed=7, cache_dir=folder, progress=False)  # served from the n=40 file
    assert [r.uid for r in prefix] == [r.uid for r in records[:25]]
    assert not emt.cache_file(folder, 7, 25).exists()


def test_larger_request_extends_smaller_cache(tmp_path):
    small = emt.load_emt_dataset(6, seed=3, cache_dir=tmp_path, progress=False)
    big = emt.load_emt_dataset(9, seed=3, cache_dir=tmp_path, progress=False)
    assert [r.uid for r in big[:6]] == [r.uid for r in small]
    assert emt.cache_file(tmp_path, 3, 9).is_file()


def test_interrupted_generation_leaves_no_cache(tmp_path, monkeypatch):
    real = emt.generate_structure

    def fails_late(seed, index):
        if index == 4:
            raise KeyboardInterrupt
        return real(seed, index)

    monkeypatch.setattr(emt, "generate_structure", fails_late)
    with pytest.raises(KeyboardInterrupt):
        emt.load_emt_dataset(8, seed=1, cache_dir=tmp_path, progress=False)
    assert [p.name for p in tmp_path.iterdir()] == [".emt-seed1-n8-v1.lock"]  # no cache, no temp file


def test_bad_size(tmp_path):
    from engine.errors import DataError

    with pytest.raises(DataError, match="emt_size"):
        emt.load_emt_dataset(0, cache_dir=tmp_path)
