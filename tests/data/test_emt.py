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


# ---------------------------------------------------------------------------------------
# OMat24-shaped subsets (engine.data.emt_subsets) and the vectorized EMT behind them

MIXED = ["rattled-1000", "aimd-3000", "rattled-relax"]


@pytest.fixture(scope="module")
def mixed_records():
    from engine.data import emt_subsets

    return emt_subsets.generate_subset_records(seed=0, names=MIXED, size=40, progress=False)  # all three subsets


def test_fast_emt_matches_ase_emt(mixed_records):
    """FastEMT (pair-vectorized) gives ASE's own EMT labels, vacancy and antisite cells included."""
    from engine.data.emt_potential import FastEMT

    for r in mixed_records[::4]:
        ref = r.to_atoms()
        ref.calc = EMT()
        fast = r.to_atoms()
        fast.calc = FastEMT()
        assert fast.get_potential_energy() == pytest.approx(ref.get_potential_energy(), abs=1e-8)
        np.testing.assert_allclose(fast.get_forces(), ref.get_forces(), atol=1e-8)
        np.testing.assert_allclose(fast.get_stress(), ref.get_stress(), atol=1e-10)
        assert r.energy == pytest.approx(ref.get_potential_energy(), abs=1e-8)  # stored labels are EMT's


def test_subset_names_validated():
    from engine.data import emt_subsets
    from engine.errors import DataError

    assert [s.kind for s in emt_subsets.parse_subsets(MIXED)] == ["rattled", "aimd", "relax"]
    for bad in (["rattled-100"], ["aimd-5000"], ["relaxed"], ["rattled-300", "rattled-300"]):
        with pytest.raises(DataError, match=r"emt_subsets|EMT subset"):
            emt_subsets.parse_subsets(bad)
    with pytest.raises(DataError, match="unknown EMT subset"):
        emt.load_emt_dataset(5, cache_dir="/nonexistent-never-created", subsets=["md-300"])


def test_thermal_sigma_einstein_model():
    from engine.data.emt_subsets import thermal_sigma_a

    cu_300, au_300 = thermal_sigma_a(["Cu", "Au"], 300.0)
    (cu_1200,) = thermal_sigma_a(["Cu"], 1200.0)
    assert cu_300 == pytest.approx(0.057, abs=0.003)  # Å, classical Einstein solid at Θ_E = √0.6·343 K
    assert cu_1200 == pytest.approx(2 * cu_300)  # σ ∝ √T
    assert au_300 > cu_300  # heavier and softer


def test_subsets_deterministic_nested_and_grouped(mixed_records):
    from engine.data import emt_subsets

    again = emt_subsets.generate_subset_records(seed=0, names=MIXED, size=25, progress=False)
    assert [r.uid for r in again] == [r.uid for r in mixed_records[:25]]  # a prefix of the larger dataset
    np.testing.assert_allclose(again[-1].positions, mixed_records[24].positions, atol=1e-12)
    # extending a prefix that ends inside a trajectory regenerates the rest of it identically
    cut = next(k for k in range(1, 40) if mixed_records[k].group == mixed_records[k - 1].group)
    extended = emt_subsets.generate_subset_records(0, MIXED, 40, prefix=mixed_records[:cut], progress=False)
    assert [r.uid for r in extended] == [r.uid for r in mixed_records]
    np.testing.assert_allclose(extended[-1].forces, mixed_records[-1].forces, atol=1e-12)

    assert len({r.uid for r in mixed_records}) == len(mixed_records)
    by_group: dict[str, list] = {}
    for r in mixed_records:
        by_group.setdefault(r.group, []).append(r)
    kinds = {r.info["subset"] for r in mixed_records}
    assert kinds == set(MIXED)
    for frames in by_group.values():
        assert len({f.info["subset"] for f in frames}) == 1 and len({f.info["unit"] for f in frames}) == 1
        subset = frames[0].info["subset"]
        limit = {"rattled-1000": 1, "aimd-3000": emt_subsets.AIMD_FRAMES, "rattled-relax": emt_subsets.RELAX_FRAMES}
        assert len(frames) <= limit[subset]
    assert max(len(v) for v in by_group.values()) > 1  # trajectories and relaxations give several frames
    other = emt_subsets.generate_subset_records(seed=1, names=MIXED, size=3, progress=False)
    assert other[0].uid != mixed_records[0].uid


def test_subset_frames_pass_filters_and_cover_defects(mixed_records):
    from engine.data import emt_subsets

    allowed = {13, 29, 47, 79, 28, 46, 78}
    for r in mixed_records:
        assert set(r.numbers.tolist()) <= allowed and emt.MIN_ATOMS <= r.n_atoms <= emt.MAX_ATOMS
        pressure_gpa = -np.trace(r.stress) / 3 / GPA_IN_EV_PER_A3
        assert abs(pressure_gpa) <= emt.MAX_ABS_PRESSURE_GPA
        assert neighbor_list("d", r.to_atoms(), emt.MIN_PAIR_DISTANCE_A).size == 0
    # the starting-cell generator draws ordered phases and both kinds of point defect
    infos = [emt_subsets._base_cell(np.random.default_rng([9, k]))[1] for k in range(200)]
    assert {i["prototype"] for i in infos} >= {"L12", "L10", "B2", "fcc-solid-solution", "hcp-solid-solution"}
    defects = ",".join(i["defects"] for i in infos)
    assert "vacancy" in defects and "antisite" in defects


def test_relaxation_frames_go_downhill_and_hot_rattles_are_rougher():
    from engine.data import emt_subsets

    relax = emt_subsets.generate_subset_records(seed=2, names=["rattled-relax"], size=12, progress=False)
    first_unit = [r for r in relax if r.group == relax[0].group]
    assert len(first_unit) >= 3
    assert first_unit[-1].energy < first_unit[0].energy  # along a relaxation, not random frames
    fmax = [np.abs(r.forces).max() for r in first_unit]
    assert fmax[-1] < fmax[0]

    def mean_force(name):
        recs = emt_subsets.generate_subset_records(seed=2, names=[name], size=15, progress=False)
        return np.mean([np.sqrt((r.forces**2).sum(1)).mean() for r in recs])

    assert mean_force("rattled-3000") > 1.5 * mean_force("rattled-300")


def test_subset_cache_round_trip_and_group_splits(tmp_path, monkeypatch):
    from engine.config import DataConfig
    from engine.data import emt_subsets
    from engine.data.dataset import load_splits

    records = emt.load_emt_dataset(30, seed=4, cache_dir=tmp_path, progress=False, subsets=MIXED)
    path = emt.cache_file(tmp_path, 4, 30, MIXED)
    assert path.name == "emt-seed4-n30-rattled-1000+aimd-3000+rattled-relax-v2.aselmdb" and path.is_file()

    def no_generation(*args, **kwargs):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(emt_subsets, "generate_unit", no_generation)
    back = emt.load_emt_dataset(20, seed=4, cache_dir=tmp_path, progress=False, subsets=MIXED)  # prefix of n=30
    assert [(r.uid, r.group, r.info["subset"]) for r in back] == [
        (r.uid, r.group, r.info["subset"]) for r in records[:20]
    ]
    np.testing.assert_allclose(back[7].stress, records[7].stress)
    assert not emt.cache_file(tmp_path, 4, 20, MIXED).exists()
    assert not emt.cache_file(tmp_path, 4, 30).exists()  # the default stream is a different file
    monkeypatch.undo()

    cfg = DataConfig(emt_size=30, emt_seed=4, emt_subsets=MIXED, cache_dir=str(tmp_path), val_fraction=0.3)
    splits = load_splits(cfg, progress=False)
    side = {}
    for name, part in (("train", splits.train), ("val", splits.val), ("test", splits.test)):
        for r in part:
            assert side.setdefault(r.group, name) == name, f"group {r.group} straddles the split"
