"""A streaming data path: ``.aselmdb`` records read on demand, graphs built in DataLoader workers.

For datasets that do not fit in memory (OMat24: ~10⁸ structures in ``.aselmdb`` files), nothing
here holds records: :class:`LazyAseDB` maps a global index to (file, row id) from each file's two
reserved keys (``nextid``, ``deleted_ids``) and decodes one row per ``__getitem__``. LMDB
environments are opened lazily in the process that reads (a DataLoader worker forked or spawned
after the dataset was built opens its own; an inherited environment is never used across
``fork``, as LMDB requires). Splits and nested training subsets are computed from indices and
uids (``<file stem>:<row id>``) with the same hashes as :mod:`engine.data.splits`, without
reading a record. Per-structure atom counts (needed to pack batches by an atom budget) are read
once in a streaming pass and cached beside the files' fingerprint.

:class:`LazyGraphDataset` is a ``torch.utils.data.Dataset`` whose ``__getitem__`` returns a record
and its neighbor graph, so the neighbor lists are built in the workers; :func:`batch_loader` wraps
it in a ``DataLoader`` over pre-packed batches (``num_workers``, ``prefetch_factor``) whose
collate makes the :class:`~engine.data.graph.Batch`.

Not yet here: wiring into ``engine.loop`` (``data.lazy``/``num_workers`` in the trial config),
group-key splits (a group key lives inside each record), pinned memory (``Batch`` has no
``pin_memory()``), on-disk neighbor-list caches per structure.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from engine.data.graph import Batch, Graph, GraphSpec, collate, neighbor_graph
from engine.data.records import Record
from engine.data.splits import _HOLDOUT_SALT, _ORDER_SALT, uid_unit  # same hashes, same membership rule
from engine.errors import DataError


def _lmdb_files(paths: str | Path | Sequence[str | Path]) -> list[Path]:
    items = [paths] if isinstance(paths, (str, Path)) else list(paths)
    files: list[Path] = []
    for item in map(Path, items):
        if item.is_dir():
            files += sorted(p for p in item.rglob("*.aselmdb") if p.is_file())
        elif item.is_file():
            files.append(item)
        else:
            raise DataError(f"{item} does not exist; give .aselmdb files or folders holding them")
    if not files:
        raise DataError(f"no .aselmdb files under {', '.join(map(str, items))}; convert the data first")
    return files


# py-lmdb allows one environment per file per process, and a forked child must not use its parent's
# (LMDB's rule): one registry per process, an inherited environment is closed in the child, then reopened
_ENVIRONMENTS: dict[str, tuple[int, object]] = {}


def _environment(path: Path):
    """This process's read-only LMDB environment on ``path`` (opened on first use)."""
    import lmdb

    from engine.data.store import check_lmdb_file

    key = str(path.resolve())
    held = _ENVIRONMENTS.get(key)
    if held is not None and held[0] == os.getpid():
        return held[1]
    if held is not None:
        held[1].close()  # inherited through fork: close the child's copy (the parent's stays open)
    check_lmdb_file(path)
    env = lmdb.open(key, subdir=False, readonly=True, lock=False, readahead=False, meminit=False)
    _ENVIRONMENTS[key] = (os.getpid(), env)
    return env


def close_environments() -> None:
    """Close this process's LMDB environments (they reopen on the next read)."""
    for key, (pid, env) in list(_ENVIRONMENTS.items()):
        if pid == os.getpid():
            env.close()
            del _ENVIRONMENTS[key]


def _decode(value: bytes):
    from ase_db_backends.aselmdb import decode_bytestream

    return decode_bytestream(value, decompress=True, json_decode=True)


def _row_ids(path: Path) -> range | np.ndarray:
    """Row ids 1..nextid−1 minus ``deleted_ids``: the two reserved keys of an .aselmdb file, no row decoded.

    A ``range`` (constant memory) unless rows were deleted."""
    with _environment(path).begin() as txn:
        nextid, deleted = txn.get(b"nextid"), txn.get(b"deleted_ids")
    last = int(_decode(nextid)) if nextid is not None else 1
    gone = _decode(deleted) if deleted is not None else []
    if not gone:
        return range(1, last)
    ids = np.arange(1, last, dtype=np.int64)
    return ids[~np.isin(ids, np.asarray(gone, dtype=np.int64))]


def _read_row(path: Path, row_id: int):
    """One row as an ``ase.db.row.AtomsRow`` (arrays where ASE expects arrays, as ase-db-backends does)."""
    from ase.calculators.calculator import all_properties
    from ase.db.row import AtomsRow

    with _environment(path).begin() as txn:
        value = txn.get(f"{row_id}".encode("ascii"))
    if value is None:
        raise DataError(f"row {row_id} is missing from {path}; the file changed after it was indexed")
    dct = _decode(value)
    for key in all_properties:
        if isinstance(dct.get(key), list):
            dct[key] = np.array(dct[key])
    dct["id"] = row_id
    return AtomsRow(dct)


class LazyAseDB(Sequence[Record]):
    """Random access by global index to the rows of one or more ``.aselmdb`` files, one row decoded per call."""

    def __init__(self, paths: str | Path | Sequence[str | Path]) -> None:
        self.files = _lmdb_files(paths)
        # row ids from each file's nextid and deleted_ids keys only: no row is decoded
        self._ids = [_row_ids(p) for p in self.files]
        self._offsets = np.cumsum([0] + [len(i) for i in self._ids])
        self.rows_read = 0  # rows decoded by this process through this object

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def locate(self, index: int) -> tuple[int, int]:
        """(file number, row id) of global ``index``."""
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} records")
        k = int(np.searchsorted(self._offsets, index, side="right")) - 1
        return k, int(self._ids[k][index - self._offsets[k]])

    def uid(self, index: int) -> str:
        k, row_id = self.locate(index)
        return f"{self.files[k].stem}:{row_id}"

    def __getitem__(self, index):  # type: ignore[override]
        from engine.data.store import row_to_record

        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        k, row_id = self.locate(int(index))
        row = _read_row(self.files[k], row_id)
        self.rows_read += 1
        return row_to_record(row, f"{self.files[k].stem}:{row_id}")

    # -- without reading records ---------------------------------------------------------
    def fingerprint(self) -> str:
        """Changes when any file changes (path, size, modification time)."""
        h = hashlib.sha256()
        for p in self.files:
            st = p.stat()
            h.update(f"{p.resolve()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        return h.hexdigest()[:16]

    def sizes(self, cache_dir: str | Path | None = None) -> np.ndarray:
        """Atoms of every record (int32), by one streaming pass; cached as ``sizes-<fingerprint>.npy``."""
        path = Path(cache_dir) / f"sizes-{self.fingerprint()}.npy" if cache_dir is not None else None
        if path is not None and path.is_file():
            return np.load(path)
        out = np.empty(len(self), dtype=np.int32)
        for k, file in enumerate(self.files):
            start = int(self._offsets[k])
            for j, row_id in enumerate(self._ids[k]):
                out[start + j] = len(_read_row(file, row_id).numbers)
                self.rows_read += 1
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")
            np.save(tmp, out)
            os.replace(tmp, path)
        return out


@dataclass
class IndexSplits:
    """Indices into a :class:`LazyAseDB`: train (a nested prefix of the pool's seeded order), val, test."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    pool_size: int


def lazy_splits(
    db: LazyAseDB,
    val_fraction: float = 0.1,
    test_fraction: float = 0.05,
    train_size: int | None = None,
    order_seed: int = 0,
) -> IndexSplits:
    """Hash splits by uid (each structure its own group: group keys live inside the records), no record read.

    Same rule as :func:`engine.data.splits.split_indices`: SHA-256 of the uid below ``val_fraction``
    → validation, below ``val_fraction + test_fraction`` → test; the pool ordered by a seeded second
    hash, ``train_size`` a prefix of it, so smaller training sets are subsets of larger ones.
    """
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise DataError("val_fraction and test_fraction must be in [0, 1) with a sum below 1")
    n = len(db)  # uids are made on the fly: memory is a few float64/int64 arrays of n, never n strings
    u = np.fromiter((uid_unit(db.uid(i), _HOLDOUT_SALT) for i in range(n)), dtype=np.float64, count=n)
    val = np.flatnonzero(u < val_fraction)
    test = np.flatnonzero((u >= val_fraction) & (u < val_fraction + test_fraction))
    pool = np.flatnonzero(u >= val_fraction + test_fraction)
    del u
    salt = f"{_ORDER_SALT}:{order_seed}"
    keys = np.fromiter((uid_unit(db.uid(int(i)), salt) for i in pool), dtype=np.float64, count=len(pool))
    order = pool[np.argsort(keys, kind="stable")]
    del keys
    index = np.int32 if n < 2**31 else np.int64  # OMat24's 10⁸ rows fit int32: half the memory
    val, test, order = val.astype(index), test.astype(index), order.astype(index)
    if train_size:
        if train_size > len(order):
            raise DataError(f"train_size {train_size} exceeds the {len(order)} structures of the training pool")
        order = order[:train_size]
    return IndexSplits(train=order, val=val, test=test, pool_size=len(pool))


class LazySubset(Sequence[Record]):
    """Records ``indices`` of a :class:`LazyAseDB` (a split, a nested training subset), still read on demand."""

    def __init__(self, db: LazyAseDB, indices: Sequence[int] | np.ndarray) -> None:
        self.db = db
        self.indices = np.asarray(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return LazySubset(self.db, self.indices[index])
        return self.db[int(self.indices[index])]

    def sizes(self, cache_dir: str | Path | None = None) -> np.ndarray:
        return self.db.sizes(cache_dir)[self.indices]


class LazyGraphDataset(torch.utils.data.Dataset):
    """(record, neighbor graph) per index; the graph is built where ``__getitem__`` runs (a DataLoader worker).

    Also offers :class:`~engine.data.graph.GraphDataset`'s interface (``records``, ``sizes()``,
    ``batch()``, built synchronously), so code written for the in-memory dataset runs on it unchanged.
    """

    def __init__(self, records: Sequence[Record], spec: GraphSpec, cache_dir: str | Path | None = None) -> None:
        self.records = records
        self.spec = spec
        self.cache_dir = cache_dir  # where atom counts are cached (see LazyAseDB.sizes)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[Record, Graph]:
        record = self.records[index]
        return record, neighbor_graph(record, self.spec)

    def sizes(self) -> np.ndarray:
        """Atoms per structure (int64), for packing batches by an atom budget."""
        sizes = getattr(self.records, "sizes", None)
        if sizes is not None:
            return np.asarray(sizes(self.cache_dir), dtype=np.int64)
        return np.array([r.n_atoms for r in self.records], dtype=np.int64)

    def batch(self, indices: Sequence[int], dtype: torch.dtype = torch.float32) -> Batch:
        return _Collate(dtype)([self[k] for k in indices])


class _Collate:
    """Picklable collate for spawned workers: (record, graph) pairs → one :class:`Batch`."""

    def __init__(self, dtype: torch.dtype) -> None:
        self.dtype = dtype

    def __call__(self, items: list[tuple[Record, Graph]]) -> Batch:
        return collate([r for r, _ in items], [g for _, g in items], dtype=self.dtype)


def batch_loader(
    dataset: LazyGraphDataset,
    batches: Sequence[Sequence[int]],
    num_workers: int = 2,
    prefetch_factor: int = 4,
    dtype: torch.dtype = torch.float32,
) -> torch.utils.data.DataLoader:
    """A DataLoader yielding one :class:`Batch` per entry of ``batches`` (e.g. from ``pack_batches``), in order.

    Workers read records, build neighbor lists and collate while the training process steps.
    """
    kwargs = {"prefetch_factor": prefetch_factor, "persistent_workers": False} if num_workers > 0 else {}
    return torch.utils.data.DataLoader(
        dataset,
        batch_sampler=[list(b) for b in batches],
        num_workers=num_workers,
        collate_fn=_Collate(dtype),
        **kwargs,
    )
