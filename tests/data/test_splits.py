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


def test_errors():
    recs = _records(100)
    with pytest.raises(DataError, match=r"train_size 1000 exceeds the training pool of \d+ structures"):
        split_indices(recs, 0.1, 0.05, train_size=1000)
    with pytest.raises(DataError, match="val_fraction"):
        split_indices(recs, 0.7, 0.5)
