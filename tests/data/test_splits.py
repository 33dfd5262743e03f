"""Hash splits: held-out sets fixed by uid, training subsets nested."""

from __future__ import annotations

import numpy as np
import pytest

from engine.data.records import Record
from engine.data.splits import split_indices, uid_unit
from engine.errors import DataError


def _records(n: int, prefix: str = "s") -> list[Record]:
    return [
        Record(numbers=[29], positions=[[0.0, 0.0, 0.0]], cell=np.eye(3) * 3, pbc=True, uid=f"{prefix}{k}")
        for k in range(n)
    ]


def test_uid_unit_is_uniform_and_stable():
    u = np.array([uid_unit(f"x{k}", "salt") for k in range(4000)])
    assert u.min() >= 0.0 and u.max() < 1.0
    assert abs(u.mean() - 0.5) < 0.02 and abs((u < 0.1).mean() - 0.1) < 0.02
    assert uid_unit("x1", "salt") == uid_unit("x1", "salt") != uid_unit("x1", "other")


def test_held_out_sets_do_not_move_when_data_grows():
    small, big = _records(500), _records(2000)
    a = split_indices(small, 0.1, 0.05)
    b = split_indices(big, 0.1, 0.05)
    uids = lambda recs, idx: {recs[k].uid for k in idx}  # noqa: E731
    assert uids(small, a.val) == uids(big, b.val) & {r.uid for r in small}
    assert uids(small, a.test) == uids(big, b.test) & {r.uid for r in small}
    # reordering the input changes nothing either
    shuffled = list(reversed(big))
    c = split_indices(shuffled, 0.1, 0.05)
    assert uids(shuffled, c.val) == uids(big, b.val)
    assert 150 < len(b.val) < 250 and 60 < len(b.test) < 140
    assert set(b.train).isdisjoint(b.val) and set(b.train).isdisjoint(b.test)
    assert len(b.train) == b.pool_size == 2000 - len(b.val) - len(b.test)


def test_training_subsets_are_nested():
    recs = _records(3000)
    sets = [set(split_indices(recs, 0.1, 0.05, train_size=n).train) for n in (10, 100, 1000)]
    assert sets[0] < sets[1] < sets[2]
    assert [len(s) for s in sets] == [10, 100, 1000]
    again = split_indices(recs, 0.1, 0.05, train_size=100).train
    assert again == split_indices(recs, 0.1, 0.05, train_size=1000).train[:100]
    other = set(split_indices(recs, 0.1, 0.05, train_size=100, order_seed=1).train)
    assert other != sets[1]  # another seed, another nested chain


def test_val_cap_is_a_stable_subset():
    recs = _records(2000)
    full = split_indices(recs, 0.2, 0.0).val
    capped = split_indices(recs, 0.2, 0.0, max_val=50).val
    assert len(capped) == 50 and set(capped) < set(full)
    # the capped set does not depend on the training-set size
    assert split_indices(recs, 0.2, 0.0, train_size=10, max_val=50).val == capped


def test_test_cap_is_a_stable_subset_and_the_config_default_caps_it():
    """data.max_test: the test records with the smallest holdout hash, whatever the training-set size."""
    from engine.config import DataConfig
    from engine.errors import ConfigError

    recs = _records(2000)
    full = split_indices(recs, 0.0, 0.2).test
    capped = split_indices(recs, 0.0, 0.2, max_test=30).test
    assert len(capped) == 30 and capped == full[:30]
    assert split_indices(recs, 0.0, 0.2, train_size=10, max_test=30).test == capped
    assert split_indices(recs, 0.2, 0.2, max_test=30).val == split_indices(recs, 0.2, 0.2).val  # val untouched
    assert DataConfig().max_test == 10_000 and DataConfig(max_test=None).max_test is None
    for bad in (0, -5):
        with pytest.raises(ConfigError, match=r"data\.max_test must be a positive number"):
            DataConfig(max_test=bad)
    with pytest.raises(ConfigError, match=r"data\.max_val must be a positive number"):
        DataConfig(max_val=0)


def test_errors():
    recs = _records(100)
    with pytest.raises(DataError, match=r"train_size 1000 exceeds the training pool of \d+ structures"):
        split_indices(recs, 0.1, 0.05, train_size=1000)
    with pytest.raises(DataError, match="val_fraction"):
        split_indices(recs, 0.7, 0.5)


# ---------------------------------------------------------------------------------------
# group-aware splits: no trajectory or parent entry straddles train/val/test


def _pmg(shift: float) -> dict:
    matrix = [[3.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 4.0]]
    sites = [
        {"species": [{"element": "Li", "occu": 1}], "abc": [0.0, 0.0, 0.0]},
        {"species": [{"element": "O", "occu": 1}], "abc": [0.5 + shift, 0.5, 0.5]},
    ]
    return {"lattice": {"matrix": matrix, "pbc": [True, True, True]}, "sites": sites}


def _frame(k: int) -> dict:
    return {"structure": _pmg(0.001 * k), "energy": -9.0 - 0.01 * k, "uncorrected_total_energy": -9.0 - 0.01 * k,
            "forces": [[0.0, 0.1, 0.0], [0.0, -0.1, 0.0]], "force": [[0.0, 0.1, 0.0], [0.0, -0.1, 0.0]],
            "stress": [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]}


def _assert_groups_do_not_straddle(records, idx) -> None:
    side = {}
    for name, members in (("train", idx.pool), ("val", idx.val), ("test", idx.test)):
        for k in members:
            assert side.setdefault(records[k].group, name) == name, f"group {records[k].group} on two sides"
    sizes = {name: sum(1 for s in side.values() if s == name) for name in ("train", "val", "test")}
    assert sizes["val"] > 0 and sizes["test"] > 0 and sizes["train"] > 0, sizes


def test_mptrj_frames_of_one_mp_id_stay_on_one_side(tmp_path):
    import json

    from engine.data.readers import read_records

    data = {f"mp-{g}": {f"mp-{g}-task-{t}": _frame(t) for t in range(5)} for g in range(120)}
    path = tmp_path / "MPtrj_groups.json"
    path.write_text(json.dumps(data))
    records = read_records(path).records
    assert len(records) == 600 and records[7].group == "mp-1" and records[7].uid.endswith("mp-1:mp-1-task-2")
    idx = split_indices(records, 0.2, 0.1)
    _assert_groups_do_not_straddle(records, idx)
    # per-frame hashing (the old behaviour) would split most of these 120 groups of 5 frames
    per_frame = split_indices([Record(r.numbers, r.positions, r.cell, r.pbc, uid=r.uid) for r in records], 0.2, 0.1)
    held = {records[k].group for k in per_frame.val + per_frame.test}
    trained = {records[k].group for k in per_frame.pool}
    assert len(held & trained) > 20


def test_alexandria_steps_of_one_entry_stay_on_one_side(tmp_path):
    import bz2
    import json

    from engine.data.readers import read_records

    data = {f"agm{g:06d}": [{"steps": [_frame(s) for s in range(3)]}, {"steps": [_frame(9)]}] for g in range(100)}
    path = tmp_path / "alexandria_groups.json.bz2"
    with bz2.open(path, "wt") as fh:
        json.dump(data, fh)
    records = read_records(path).records
    assert len(records) == 400 and {r.group for r in records[:4]} == {"agm000000"}  # both trajectories: one entry
    idx = split_indices(records, 0.2, 0.1)
    _assert_groups_do_not_straddle(records, idx)


def test_group_key_from_extxyz_info_and_ase_db_key_value_pairs(tmp_path):
    import ase.db
    import ase.io
    from ase.build import bulk
    from ase.calculators.singlepoint import SinglePointCalculator

    from engine.data.readers import read_records
    from engine.errors import DataError

    frames = []
    for k in range(6):
        atoms = bulk("Cu", "fcc", a=3.6 + 0.01 * k)
        atoms.info["traj"] = f"t{k // 3}"
        atoms.calc = SinglePointCalculator(atoms, energy=-1.0 * k, forces=[[0.0, 0.0, 0.0]])
        frames.append(atoms)
    xyz = tmp_path / "frames.extxyz"
    ase.io.write(xyz, frames)
    assert [r.group for r in read_records(xyz, group_key="traj").records] == ["t0"] * 3 + ["t1"] * 3
    assert all(r.group is None for r in read_records(xyz).records)  # no key: each structure its own group
    with pytest.raises(DataError, match="no group key 'trajectory'"):
        read_records(xyz, group_key="trajectory")

    db_path = tmp_path / "frames.db"
    with ase.db.connect(str(db_path)) as db:
        for k, atoms in enumerate(frames):
            db.write(atoms, relax_id=f"r{k % 2}")
    assert [r.group for r in read_records(db_path, group_key="relax_id").records] == ["r0", "r1"] * 3


def test_groupless_records_split_exactly_as_before():
    recs = _records(300)
    assert all(r.split_key == r.uid for r in recs)
    grouped = [Record(r.numbers, r.positions, r.cell, r.pbc, uid=r.uid, group=r.uid) for r in recs]
    a, b = split_indices(recs, 0.1, 0.05), split_indices(grouped, 0.1, 0.05)
    assert (a.val, a.test, a.train) == (b.val, b.test, b.train)


def test_nested_subsets_and_the_val_cap_hold_with_groups():
    recs = [Record(numbers=[29], positions=[[0.0, 0.0, 0.0]], cell=np.eye(3) * 3, pbc=True, uid=f"s{k}",
                   group=f"g{k // 4}") for k in range(2000)]
    sets = [set(split_indices(recs, 0.1, 0.05, train_size=n).train) for n in (10, 100, 1000)]
    assert sets[0] < sets[1] < sets[2]
    capped = split_indices(recs, 0.2, 0.0, max_val=50).val
    assert capped == split_indices(recs, 0.2, 0.0, train_size=10, max_val=50).val and len(capped) == 50
