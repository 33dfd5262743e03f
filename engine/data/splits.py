"""Hash splits by group: fixed validation/test sets and nested training subsets.

Each record's *group* (``Record.split_key``: its trajectory, relaxation or parent entry, such as
MPtrj's ``mp_id``; the structure's own uid when it has none) is hashed (SHA-256) to a number u in
[0, 1). ``u < val_fraction`` puts the whole group in validation, ``u < val_fraction + test_fraction``
in test, anything else in the training pool, so frames of one relaxation never sit on both sides
of a split (splitting per frame leaks near-duplicates into validation). Membership depends on the
group alone, so the held-out sets never move when data is added; the fractions are fractions of
groups (of structures only on average). The pool is ordered by a second, seeded hash of each
record's uid and ``train_size`` takes a prefix of that order, so smaller training sets are subsets
of larger ones (1k ⊂ 10k): a data-scaling sweep compares like with like.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

from engine.data.records import Record
from engine.errors import DataError

_HOLDOUT_SALT = "engine-holdout-v1"
_ORDER_SALT = "engine-train-order-v1"


def uid_unit(uid: str, salt: str) -> float:
    """SHA-256 of ``salt:uid`` mapped uniformly to [0, 1) (53 bits, exact in a float64)."""
    digest = hashlib.sha256(f"{salt}:{uid}".encode()).digest()
    return (int.from_bytes(digest[:8], "big") >> 11) / float(1 << 53)


@dataclass
class SplitIndices:
    """Indices into the record list: train (nested prefix, in pool order), val (capped), test, the pool size,
    and the whole pool in its seeded order (``train`` is a prefix of it)."""

    train: list[int]
    val: list[int]
    test: list[int]
    pool_size: int
    pool: list[int] = field(default_factory=list)


def split_indices(
    records: Sequence[Record],
    val_fraction: float = 0.1,
    test_fraction: float = 0.05,
    train_size: int | None = None,
    max_val: int | None = None,
    order_seed: int = 0,
) -> SplitIndices:
    """Assign records to val/test by group hash and take a nested ``train_size`` prefix of the rest.

    ``train_size`` None or 0 takes the whole pool. ``max_val`` keeps the validation records with
    the smallest holdout hash: fixed for a given dataset whatever ``train_size`` is (adding
    data can change which records pass the cap, never the uncapped set). ``order_seed`` reorders the pool (a
    different nested chain); the held-out sets do not depend on it.
    """
    if not 0.0 <= val_fraction < 1.0 or not 0.0 <= test_fraction < 1.0 or val_fraction + test_fraction >= 1.0:
        raise DataError(
            f"val_fraction={val_fraction} and test_fraction={test_fraction} must be in [0, 1) with a sum below 1; "
            "fix data.val_fraction / data.test_fraction"
        )
    if train_size is not None and train_size < 0:
        raise DataError(f"train_size must be positive, got {train_size}; fix --train-size")
    val, test, pool = [], [], []
    for k, r in enumerate(records):
        u = uid_unit(r.split_key, _HOLDOUT_SALT)
        if u < val_fraction:
            val.append((u, k))
        elif u < val_fraction + test_fraction:
            test.append((u, k))
        else:
            pool.append((uid_unit(r.uid, f"{_ORDER_SALT}:{order_seed}"), k))
    # frames of one group share u: order them by their own uid hash, so the cap is stable too
    val.sort(key=lambda item: (item[0], uid_unit(records[item[1]].uid, _HOLDOUT_SALT), item[1]))
    test.sort(key=lambda item: (item[0], uid_unit(records[item[1]].uid, _HOLDOUT_SALT), item[1]))
    pool.sort()
    n_held_out = len(val) + len(test)
    if max_val is not None and max_val >= 0:
        val = val[:max_val]
    if train_size:
        if train_size > len(pool):
            raise DataError(
                f"train_size {train_size} exceeds the training pool of {len(pool)} structures "
                f"({len(records)} in all, {n_held_out} held out); lower --train-size or add data "
                "(e.g. raise data.emt_size)"
            )
        chosen = pool[:train_size]
    else:
        chosen = pool
    return SplitIndices(
        train=[k for _, k in chosen],
        val=[k for _, k in val],
        test=[k for _, k in test],
        pool_size=len(pool),
        pool=[k for _, k in pool],
    )
