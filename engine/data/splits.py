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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from engine.data.records import Record
from engine.errors import DataError

_HOLDOUT_SALT = "engine-holdout-v1"
_ORDER_SALT = "engine-train-order-v1"
SPLIT_RULE = f"{_HOLDOUT_SALT}|{_ORDER_SALT}"  # names the rule: a cached split of another rule is not read


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
    max_test: int | None = None,
) -> SplitIndices:
    """Assign records to val/test by group hash and take a nested ``train_size`` prefix of the rest.

    ``train_size`` None or 0 takes the whole pool. ``max_val`` keeps the validation records with
    the smallest holdout hash: fixed for a given dataset whatever ``train_size`` is (adding
    data can change which records pass the cap, never the uncapped set); ``max_test`` caps the test
    records by the same rule. ``order_seed`` reorders the pool (a
    different nested chain); the held-out sets do not depend on it. The rule itself is
    :func:`split_by_keys` (shared with the lazy ``.aselmdb`` path, :mod:`engine.data.lazy`).
    """
    parts = split_by_keys(
        [r.split_key for r in records],
        [r.uid for r in records],
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        train_size=train_size,
        max_val=max_val,
        order_seed=order_seed,
        max_test=max_test,
    )
    return SplitIndices(
        train=parts.train.tolist(),
        val=parts.val.tolist(),
        test=parts.test.tolist(),
        pool_size=parts.pool_size,
        pool=parts.pool.tolist(),
    )


@dataclass
class KeySplits:
    """:func:`split_by_keys`' answer as integer arrays (int32 below 2³¹ structures: half the memory at 10⁸)."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    pool_size: int
    pool: np.ndarray


def _units(keys: Iterable[str], n: int, salt: str) -> np.ndarray:
    return np.fromiter((uid_unit(k, salt) for k in keys), dtype=np.float64, count=n)


def split_by_keys(
    split_keys: Sequence[str],
    uids: Sequence[str],
    val_fraction: float = 0.1,
    test_fraction: float = 0.05,
    train_size: int | None = None,
    max_val: int | None = None,
    order_seed: int = 0,
    max_test: int | None = None,
) -> KeySplits:
    """The split rule over structure ``k``'s group (``split_keys[k]``) and identity (``uids[k]``) alone.

    Group hash u below ``val_fraction`` → validation, below ``val_fraction + test_fraction`` → test, else
    the pool. Validation and test are ordered by (u, the uid's holdout hash, k), so frames of one group
    share u and the ``max_val`` / ``max_test`` caps are still stable; the pool by (the uid's ``order_seed``
    hash, k), and ``train_size`` takes a prefix of it. Both sequences are read once in order (they may be lazy: the
    uids of 10⁸ rows need never exist at once); memory is a few float64 arrays of their length.
    """
    check_split_settings(val_fraction, test_fraction, train_size)
    val, test, pool = held_out_and_pool(split_keys, uids, val_fraction, test_fraction, order_seed)
    return cap_splits(val, test, pool, len(uids), train_size, max_val, max_test)


def check_split_settings(val_fraction: float, test_fraction: float, train_size: int | None) -> None:
    if not 0.0 <= val_fraction < 1.0 or not 0.0 <= test_fraction < 1.0 or val_fraction + test_fraction >= 1.0:
        raise DataError(
            f"val_fraction={val_fraction} and test_fraction={test_fraction} must be in [0, 1) with a sum below 1; "
            "fix data.val_fraction / data.test_fraction"
        )
    if train_size is not None and train_size < 0:
        raise DataError(f"train_size must be positive, got {train_size}; fix --train-size")


def held_out_and_pool(
    split_keys: Sequence[str], uids: Sequence[str], val_fraction: float, test_fraction: float, order_seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The uncapped validation and test sets and the whole pool, each in its order: the part of
    :func:`split_by_keys` that hashes every structure (the lazy path caches it per dataset)."""
    n = len(uids)
    if len(split_keys) != n:
        raise DataError(f"{len(split_keys)} split keys for {n} structures; the group-key index is stale, delete it")
    index = np.int32 if n < 2**31 else np.int64
    u = _units(split_keys, n, _HOLDOUT_SALT)
    held = u < val_fraction + test_fraction
    held_idx = np.flatnonzero(held).astype(index)
    pool = np.flatnonzero(~held).astype(index)
    u_held = u[held_idx]
    del u, held
    # frames of one group share u: order them by their own uid hash, so the cap is stable too
    tie = _units((uids[int(k)] for k in held_idx), len(held_idx), _HOLDOUT_SALT)
    perm = np.lexsort((held_idx, tie, u_held))
    held_idx, in_val = held_idx[perm], u_held[perm] < val_fraction
    val, test = held_idx[in_val], held_idx[~in_val]
    order_u = _units((uids[int(k)] for k in pool), len(pool), f"{_ORDER_SALT}:{order_seed}")
    pool = pool[np.lexsort((pool, order_u))]
    del order_u, tie
    return val, test, pool


def cap_splits(
    val: np.ndarray, test: np.ndarray, pool: np.ndarray, n: int, train_size: int | None, max_val: int | None,
    max_test: int | None,
) -> KeySplits:
    """:func:`held_out_and_pool`'s sets with the caps and the nested ``train_size`` prefix of the pool."""
    n_held_out = len(val) + len(test)
    if max_val is not None and max_val >= 0:
        val = val[:max_val]
    if max_test is not None and max_test >= 0:
        test = test[:max_test]
    chosen = pool
    if train_size:
        if train_size > len(pool):
            raise DataError(
                f"train_size {train_size} exceeds the training pool of {len(pool)} structures "
                f"({n} in all, {n_held_out} held out); lower --train-size or add data "
                "(e.g. raise data.emt_size)"
            )
        chosen = pool[:train_size]
    return KeySplits(train=chosen, val=val, test=test, pool_size=len(pool), pool=pool)
