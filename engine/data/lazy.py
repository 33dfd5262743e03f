"""A streaming data path: ``.aselmdb`` records read on demand, graphs built in DataLoader workers.

For datasets that do not fit in memory (OMat24: ~10⁸ structures in ``.aselmdb`` files), nothing
here holds records: :class:`LazyAseDB` maps a global index to (file, row id) from each file's two
reserved keys (``nextid``, ``deleted_ids``) and decodes one row per ``__getitem__``. LMDB
environments are opened lazily in the process that reads (a DataLoader worker forked or spawned
after the dataset was built opens its own; an inherited environment is never used across
``fork``, as LMDB requires). Splits and nested training subsets are computed from indices and
uids (``<file label>:<row id>``) with the same hashes as :mod:`engine.data.splits`, without
reading a record (unless groups are keyed). Per-structure atom counts (needed to pack batches by
an atom budget) are read once per dataset in a streaming pass and written next to the data
(``<data folder>/.engine-index/``, keyed by the files' fingerprint; the cache folder when the data's is
read-only), under a file lock so that concurrent builders (a sweep's driver, its trials, DDP ranks)
build it once and every other process reads it.

:class:`LazyGraphDataset` is a ``torch.utils.data.Dataset`` whose ``__getitem__`` returns a record
and its neighbor graph, so the neighbor lists are built in the workers; :func:`batch_loader` wraps
it in a ``DataLoader`` over pre-packed batches (``num_workers``, ``prefetch_factor``) whose
collate makes the :class:`~engine.data.graph.Batch`.

A trial uses it with ``data.lazy: true`` (``engine.train --lazy --num-workers N``): splits by the
rule of :func:`engine.data.splits.split_by_keys` over the same uids (and ``data.group_key`` groups,
read in the one pass that counts atoms) as the in-memory reader, so both give the same membership
and order. Not yet here: on-disk neighbor-list caches per structure (workers rebuild them each epoch).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from engine.data.graph import Batch, Graph, GraphSpec, collate, neighbor_graph
from engine.data.records import Record
from engine.data.splits import SPLIT_RULE, cap_splits, check_split_settings, held_out_and_pool  # split_by_keys
from engine.errors import DataError


def _lmdb_files(paths: str | Path | Sequence[str | Path]) -> tuple[list[Path], list[str]]:
    """The files and their labels (uid prefixes), named as :func:`engine.data.readers.read_records` names them.

    A folder gives its files in sorted order, labelled by their path inside it; a file its own name.
    Hidden files and folders (a converter's partial shard, :data:`INDEX_DIR`) and LMDB lock files are skipped;
    another data file in a folder is an error (the in-memory reader would read it, so the two paths would see
    different data).
    """
    items = [paths] if isinstance(paths, (str, Path)) else list(paths)
    files: list[Path] = []
    labels: list[str] = []
    for item in (Path(i).expanduser() for i in items):
        if item.is_dir():
            # hidden files and folders are skipped: a converter's partial shard, the index folder (INDEX_DIR)
            found = sorted(p for p in item.rglob("*")
                           if p.is_file() and not any(part.startswith(".") for part in p.relative_to(item).parts))
            found = [p for p in found if not p.name.endswith("-lock")]
            other = [p for p in found if not p.name.endswith(".aselmdb")]
            if other:
                raise DataError(
                    f"{other[0]} is not an .aselmdb file; data.lazy reads only .aselmdb folders: move it out, "
                    "or drop data.lazy (--lazy) to read every format in memory"
                )
            files += found
            labels += [p.relative_to(item).as_posix() for p in found]
        elif item.is_file():
            files.append(item)
            labels.append(item.name)
        else:
            raise DataError(f"{item} does not exist; give .aselmdb files or folders holding them")
    if not files:
        raise DataError(f"no .aselmdb files under {', '.join(map(str, items))}; convert the data first")
    return files, labels


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
    """Random access by global index to the rows of one or more ``.aselmdb`` files, one row decoded per call.

    uids are ``<file label>:<row id>`` as :func:`engine.data.readers.read_records` makes them (the label
    is the file's path inside the folder given, or its name), so both paths hash the same uids.
    ``group_key`` (``data.group_key``) names the key-value pair or data entry holding each row's split group.
    """

    def __init__(self, paths: str | Path | Sequence[str | Path], group_key: str | None = None) -> None:
        self.files, self.labels = _lmdb_files(paths)
        self.group_key = group_key
        # row ids from each file's nextid and deleted_ids keys only: no row is decoded
        self._ids = [_row_ids(p) for p in self.files]
        self._offsets = np.cumsum([0] + [len(i) for i in self._ids])
        self.rows_read = 0  # rows decoded by this process through this object
        self._index: tuple[np.ndarray, np.ndarray | None] | None = None

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
        return f"{self.labels[k]}:{row_id}"

    def uids(self) -> Sequence[str]:
        """Every uid, made on demand (never n strings at once)."""
        return _Uids(self)

    def __getitem__(self, index):  # type: ignore[override]
        from engine.data.store import row_to_record

        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        k, row_id = self.locate(int(index))
        row = _read_row(self.files[k], row_id)
        self.rows_read += 1
        uid = f"{self.labels[k]}:{row_id}"
        record = row_to_record(row, uid)
        if self.group_key is not None:
            record.group = self._group(row, uid)
        record.validate(where=str(self.files[k]))
        if np.any(record.pbc) and not np.all(record.pbc):
            raise DataError(
                f"record {uid!r} in {self.files[k]} is periodic along {record.pbc.tolist()} only; neighbor lists "
                "need full 3D periodicity or none: add vacuum and set pbc=True"
            )
        return record

    def _group(self, row, uid: str) -> str:
        from engine.data.readers import _BadRecordError, _group_of

        try:
            return _group_of(row, str(self.group_key))
        except _BadRecordError as exc:
            raise DataError(f"record {uid!r}: {exc}") from exc

    # -- without reading records ---------------------------------------------------------
    def fingerprint(self) -> str:
        """Changes when any file changes (path, size, modification time)."""
        h = hashlib.sha256()
        for p in self.files:
            st = p.stat()
            h.update(f"{p.resolve()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        return h.hexdigest()[:16]

    def sizes(self, cache_dir: str | Path | None = None) -> np.ndarray:
        """Atoms of every record (int32), from :meth:`index`."""
        return self.index(cache_dir)[0]

    def groups(self, cache_dir: str | Path | None = None) -> np.ndarray | None:
        """Split group of every record (UTF-8 bytes), from :meth:`index`; None without a ``group_key``."""
        return self.index(cache_dir)[1]

    def index_paths(self, cache_dir: str | Path | None = None, name: str = "index") -> list[Path]:
        """Where a per-dataset file ``name`` (the index, a split) may be, in the order it is looked for: next to the
        data (``.engine-index/`` in the files' common folder, which every node that reads the data sees), then
        ``cache_dir``. Its name holds the files' fingerprint (and the group key's hash)."""
        tag = self.fingerprint()
        if self.group_key is not None:
            tag += "-" + hashlib.sha256(self.group_key.encode()).hexdigest()[:8]
        home = Path(os.path.commonpath([str(p.resolve().parent) for p in self.files]))
        found = [home / INDEX_DIR / f"{name}-{tag}.npz"]
        if cache_dir is not None:
            found.append(Path(cache_dir) / f"{name}-{tag}.npz")
        return found

    def cached_arrays(self, name: str, build: Callable[[], dict[str, np.ndarray]],
                      cache_dir: str | Path | None = None) -> dict[str, np.ndarray]:
        """Arrays ``build()`` computes from this dataset, once per dataset: read from the first of
        :meth:`index_paths` that exists, else built and written to the first writable one under a lock there (a
        process that waited for another's build reads its file)."""
        paths = self.index_paths(cache_dir, name)
        for path in paths:
            if path.is_file():
                return _load_arrays(path)
        target = next((p for p in paths if _writable_dir(p.parent)), None)
        if target is None:
            return build()
        with _file_lock(target.with_suffix(".lock")):
            if target.is_file():  # another process built it while this one waited
                return _load_arrays(target)
            arrays = build()
            tmp = target.with_name(f".{target.stem}.{os.getpid()}.tmp.npz")
            np.savez(tmp, **arrays)
            os.replace(tmp, target)
        return arrays

    def index(self, cache_dir: str | Path | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """(atoms per record, split groups or None), by one streaming pass over the rows once per dataset
        (:meth:`cached_arrays`); kept on this object."""
        if self._index is None:
            arrays = self.cached_arrays("index", self._build_index, cache_dir)
            self._index = (arrays["sizes"], arrays.get("groups"))
        return self._index

    def _build_index(self) -> dict[str, np.ndarray]:
        """The one streaming pass: every row decoded once, for its atom count (and group)."""
        sizes = np.empty(len(self), dtype=np.int32)
        groups: list[bytes] | None = [] if self.group_key is not None else None
        for k, file in enumerate(self.files):
            start = int(self._offsets[k])
            for j, row_id in enumerate(self._ids[k]):
                row = _read_row(file, row_id)
                sizes[start + j] = len(row.numbers)
                if groups is not None:
                    groups.append(self._group(row, f"{self.labels[k]}:{row_id}").encode())
                self.rows_read += 1
        return {"sizes": sizes, **({"groups": np.array(groups, dtype=np.bytes_)} if groups is not None else {})}


INDEX_DIR = ".engine-index"  # next to the data: the per-dataset index files and their locks


def _load_arrays(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _writable_dir(folder: Path) -> bool:
    """``folder`` exists or can be made, and this process may create files in it."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(folder, os.W_OK | os.X_OK)


@contextlib.contextmanager
def _file_lock(path: Path):
    """An exclusive ``flock`` on ``path`` (created if missing), held for the block; other processes wait."""
    with open(path, "a") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


class _Uids(Sequence[str]):
    """A :class:`LazyAseDB`'s uids as a sequence, each made when asked."""

    def __init__(self, db: LazyAseDB) -> None:
        self.db = db

    def __len__(self) -> int:
        return len(self.db)

    def __getitem__(self, index):  # type: ignore[override]
        return self.db.uid(int(index))

    def __iter__(self):
        for k, ids in enumerate(self.db._ids):
            label = self.db.labels[k]
            for row_id in ids:
                yield f"{label}:{int(row_id)}"


class _Decoded(Sequence[str]):
    """Byte strings (a cached group array) read as str, one at a time."""

    def __init__(self, values: np.ndarray) -> None:
        self.values = values

    def __len__(self) -> int:
        return len(self.values)

    def __getitem__(self, index):  # type: ignore[override]
        return bytes(self.values[int(index)]).decode()

    def __iter__(self):
        return (bytes(v).decode() for v in self.values)


@dataclass
class IndexSplits:
    """Indices into a :class:`LazyAseDB`: train (a nested prefix of the pool's seeded order), val, test, the
    pool in that order (``train`` is a prefix of it)."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    pool_size: int
    pool: np.ndarray | None = None


def lazy_splits(
    db: LazyAseDB,
    val_fraction: float = 0.1,
    test_fraction: float = 0.05,
    train_size: int | None = None,
    order_seed: int = 0,
    max_val: int | None = None,
    cache_dir: str | Path | None = None,
    max_test: int | None = None,
) -> IndexSplits:
    """Hash splits by group, the rule of :func:`engine.data.splits.split_indices` (one function:
    :func:`~engine.data.splits.split_by_keys`), so the in-memory reader of the same files gives the same
    membership and order. Without ``db.group_key`` no record is read (each structure is its own group);
    with one, the groups come from :meth:`LazyAseDB.index`. The part that hashes every structure (the uncapped
    held-out sets and the ordered pool) is computed once per dataset and setting and kept next to the data
    (:meth:`LazyAseDB.cached_arrays`); a trial start reads it and cuts the caps and its training prefix.
    """
    check_split_settings(val_fraction, test_fraction, train_size)

    def build() -> dict[str, np.ndarray]:
        groups = db.groups(cache_dir) if db.group_key is not None else None
        uids = db.uids()
        val, test, pool = held_out_and_pool(_Decoded(groups) if groups is not None else uids, uids, val_fraction,
                                            test_fraction, order_seed)
        return {"val": val, "test": test, "pool": pool}

    # every structure's hashes, once per dataset and setting (a trial start reads them); caps and sizes cut after
    setting = hashlib.sha256(f"{SPLIT_RULE}|{val_fraction!r}|{test_fraction!r}|{order_seed}".encode()).hexdigest()
    sets = db.cached_arrays(f"split-{setting[:12]}", build, cache_dir)
    parts = cap_splits(sets["val"], sets["test"], sets["pool"], len(db), train_size, max_val, max_test)
    return IndexSplits(train=parts.train, val=parts.val, test=parts.test, pool_size=parts.pool_size, pool=parts.pool)


class LazySubset(Sequence[Record]):
    """Records ``indices`` of a :class:`LazyAseDB` (a split, a nested training subset), still read on demand."""

    def __init__(self, db: LazyAseDB, indices: Sequence[int] | np.ndarray, cache_dir: str | Path | None = None) -> None:
        self.db = db
        self.indices = np.asarray(indices, dtype=np.int64)
        self.cache_dir = cache_dir  # where the index (atom counts, groups) is cached

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return LazySubset(self.db, self.indices[index], self.cache_dir)
        return self.db[int(self.indices[index])]

    def sizes(self, cache_dir: str | Path | None = None) -> np.ndarray:
        return self.db.sizes(cache_dir if cache_dir is not None else self.cache_dir)[self.indices]

    def uids(self) -> list[str]:
        """The uids of these records, in order, without reading them."""
        return [self.db.uid(int(i)) for i in self.indices]


class LazyGraphDataset(torch.utils.data.Dataset):
    """(record, neighbor graph) per index; the graph is built where ``__getitem__`` runs (a DataLoader worker).

    Also offers :class:`~engine.data.graph.GraphDataset`'s interface (``records``, ``sizes()``,
    ``batch()``, built synchronously), so code written for the in-memory dataset runs on it unchanged.
    """

    def __init__(self, records: Sequence[Record], spec: GraphSpec, cache_dir: str | Path | None = None) -> None:
        self.records = records
        self.spec = spec
        self.cache_dir = cache_dir  # where atom counts are cached (see LazyAseDB.sizes)
        self._sizes: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[Record, Graph]:
        record = self.records[index]
        return record, neighbor_graph(record, self.spec)

    def sizes(self) -> np.ndarray:
        """Atoms per structure (int64), for packing batches by an atom budget (computed once)."""
        if self._sizes is None:
            sizes = getattr(self.records, "sizes", None)
            if sizes is not None:
                self._sizes = np.asarray(sizes(self.cache_dir), dtype=np.int64)
            else:
                self._sizes = np.array([r.n_atoms for r in self.records], dtype=np.int64)
        return self._sizes

    def atom_counts(self, indices: Sequence[int]) -> list[int]:
        """Atoms of structures ``indices`` without reading them (DDP shards batches by atoms)."""
        sizes = self.sizes()
        return [int(sizes[k]) for k in indices]

    def batch(self, indices: Sequence[int], dtype: torch.dtype = torch.float32) -> Batch:
        return _Collate(dtype)([self[k] for k in indices])


class _Collate:
    """Picklable collate for spawned workers: (record, graph) pairs → one :class:`Batch`."""

    def __init__(self, dtype: torch.dtype) -> None:
        self.dtype = dtype

    def __call__(self, items: list[tuple[Record, Graph]]) -> Batch:
        return collate([r for r, _ in items], [g for _, g in items], dtype=self.dtype)


def _ignore_sigterm(worker_id: int) -> None:
    """A DataLoader worker outlives a SIGTERM sent to its whole process group (a node shutting down), so the trial
    can finish its step and save (engine.loop.preemption); it still ends with the loader, or within seconds of its
    parent's death (torch's worker watchdog)."""
    import signal

    signal.signal(signal.SIGTERM, signal.SIG_IGN)


class _IndexLists:
    """A DataLoader's batch sampler over ``batches``: each one a list of ints when the loader reaches it (the loader
    asks ``prefetch_factor`` batches per worker ahead, never the whole epoch)."""

    def __init__(self, batches: Sequence[Sequence[int]]) -> None:
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        for b in self.batches:
            yield [int(k) for k in b]


def batch_loader(
    dataset: LazyGraphDataset,
    batches: Sequence[Sequence[int]],
    num_workers: int = 2,
    prefetch_factor: int = 4,
    dtype: torch.dtype = torch.float32,
    pin_memory: bool = False,
) -> torch.utils.data.DataLoader:
    """A DataLoader yielding one :class:`Batch` per entry of ``batches`` (e.g. ``EpochBatches``, any sized iterable of
    index sequences, read as the loader goes), in order.

    Workers read records, build neighbor lists and collate while the training process steps;
    ``pin_memory`` (for a CUDA device) pins each batch (:meth:`Batch.pin_memory`) so its copy can overlap.
    """
    kwargs = {"prefetch_factor": prefetch_factor, "persistent_workers": False} if num_workers > 0 else {}
    return torch.utils.data.DataLoader(
        dataset,
        batch_sampler=_IndexLists(batches),
        num_workers=num_workers,
        collate_fn=_Collate(dtype),
        pin_memory=pin_memory,
        worker_init_fn=_ignore_sigterm if num_workers > 0 else None,
        **kwargs,
    )
