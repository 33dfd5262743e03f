"""The streaming data path on real ``.aselmdb`` files: random access, splits without reads, DataLoader workers."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from engine.data.emt import generate_records
from engine.data.graph import GraphDataset, GraphSpec
from engine.data.lazy import (
    INDEX_DIR,
    LazyAseDB,
    LazyGraphDataset,
    LazySubset,
    batch_loader,
    close_environments,
    lazy_splits,
)
from engine.data.store import write_aselmdb
from engine.errors import DataError

SPEC = GraphSpec(cutoff=4.0, max_neighbors=12, strict=True)


@pytest.fixture(autouse=True)
def _close_lmdb():
    """py-lmdb allows one environment per file per process: leave none open for the next test's readers."""
    yield
    close_environments()


@pytest.fixture(scope="module")
def two_files(tmp_path_factory):
    """24 EMT records split over two .aselmdb files in one folder (rows 1..14 and 1..10)."""
    records = generate_records(seed=11, size=24, progress=False)
    folder = tmp_path_factory.mktemp("lmdb")
    write_aselmdb(records[:14], folder / "a.aselmdb")
    write_aselmdb(records[14:], folder / "b.aselmdb")
    return folder, records


def test_random_access_by_global_index(two_files):
    folder, records = two_files
    db = LazyAseDB(folder)
    assert len(db) == 24 and [p.name for p in db.files] == ["a.aselmdb", "b.aselmdb"]
    assert db.rows_read == 0  # building the index decoded no row
    for i in (23, 0, 14, 13, 7):  # out of order, across the file boundary
        got, want = db[i], records[i]
        np.testing.assert_array_equal(got.numbers, want.numbers)
        np.testing.assert_allclose(got.positions, want.positions)
        np.testing.assert_allclose(got.forces, want.forces)
        assert got.energy == pytest.approx(want.energy) and got.uid == db.uid(i)
    assert db.uid(14) == "b.aselmdb:1" and db.uid(13) == "a.aselmdb:14"  # as read_records names them
    with pytest.raises(IndexError):
        db[24]


def test_sizes_are_cached_next_to_the_data_and_match(two_files, tmp_path):
    folder, records = two_files
    shutil.rmtree(folder / INDEX_DIR, ignore_errors=True)  # another test of this module may have built it
    db = LazyAseDB(folder)
    sizes = db.sizes(cache_dir=tmp_path)
    np.testing.assert_array_equal(sizes, [r.n_atoms for r in records])
    assert len(list((folder / INDEX_DIR).glob("index-*.npz"))) == 1  # next to the data, every node sees it
    assert not list(tmp_path.glob("index-*.npz"))
    fresh = LazyAseDB(folder)
    np.testing.assert_array_equal(fresh.sizes(cache_dir=tmp_path / "elsewhere"), sizes)  # any trial's cache folder
    assert db.rows_read == 24 and fresh.rows_read == 0  # one streaming pass, then the file
    assert len(LazyAseDB(folder)) == 24  # the index folder is not data


def test_a_read_only_data_folder_keeps_the_index_in_the_cache(two_files, tmp_path, monkeypatch):
    from engine.data import lazy as lazy_mod

    folder, records = two_files
    shutil.rmtree(folder / INDEX_DIR, ignore_errors=True)
    writable = lazy_mod._writable_dir
    monkeypatch.setattr(lazy_mod, "_writable_dir", lambda d: d.parent != folder and writable(d))
    db = LazyAseDB(folder)
    np.testing.assert_array_equal(db.sizes(cache_dir=tmp_path), [r.n_atoms for r in records])
    assert len(list(tmp_path.glob("index-*.npz"))) == 1 and not (folder / INDEX_DIR).exists()
    assert LazyAseDB(folder).sizes(cache_dir=tmp_path) is not None


def _build_index(folder: str, cache: str, queue) -> None:
    db = LazyAseDB(folder)
    db.index(cache)
    queue.put(db.rows_read)


def test_concurrent_builders_read_the_rows_once(tmp_path):
    """A driver, its trials and DDP ranks starting together: one builds under the lock, the others read its file."""
    import multiprocessing as mp

    records = generate_records(seed=12, size=30, progress=False)
    folder = tmp_path / "data"
    write_aselmdb(records, folder / "part-0.aselmdb")
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_build_index, args=(str(folder), str(tmp_path / f"cache{k}"), queue))
             for k in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert sorted(queue.get(timeout=5) for _ in procs) == [0, 0, 30]
    assert len(list((folder / INDEX_DIR).glob("index-*.npz"))) == 1


def test_splits_by_index_read_no_record_and_nest(two_files):
    folder, _ = two_files
    db = LazyAseDB(folder)
    full = lazy_splits(db, val_fraction=0.2, test_fraction=0.1)
    small = lazy_splits(db, val_fraction=0.2, test_fraction=0.1, train_size=5)
    assert db.rows_read == 0  # no record decoded
    parts = [set(full.train.tolist()), set(full.val.tolist()), set(full.test.tolist())]
    assert sum(map(len, parts)) == 24 and not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    assert small.train.tolist() == full.train[:5].tolist()  # nested prefix
    assert small.val.tolist() == full.val.tolist()
    with pytest.raises(DataError, match="train_size"):
        lazy_splits(db, train_size=10_000)


def test_loader_workers_build_the_same_batches(two_files):
    """Two DataLoader workers (their own LMDB environments, neighbor lists built there) give the in-memory batches."""
    folder, records = two_files
    db = LazyAseDB(folder)
    db[0]  # an environment open in the parent must not be reused by the forked workers
    batches = [[3, 17, 9], [0, 23], [14, 13, 5, 6]]
    loader = batch_loader(LazyGraphDataset(db, SPEC), batches, num_workers=2, prefetch_factor=2)
    reference = GraphDataset(records, SPEC)
    got = list(loader)
    assert len(got) == len(batches)
    for batch, idx in zip(got, batches):
        want = reference.batch(idx)
        assert batch.num_graphs == len(idx)
        for name in ("numbers", "batch", "edge_index", "shifts"):
            if hasattr(want, name):
                assert torch.equal(getattr(batch, name), getattr(want, name)), name
        torch.testing.assert_close(batch.positions, want.positions)
        torch.testing.assert_close(batch.forces, want.forces)


def test_missing_or_empty_input_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        LazyAseDB(tmp_path / "nope")
    with pytest.raises(DataError, match=r"no \.aselmdb files"):
        LazyAseDB(tmp_path)


def test_a_lazy_split_offers_the_in_memory_dataset_interface(two_files, tmp_path):
    """``LazySubset`` + ``LazyGraphDataset``: records, sizes() and batch() as ``GraphDataset`` gives them."""
    folder, records = two_files
    db = LazyAseDB(folder)
    train = lazy_splits(db, val_fraction=0.2, test_fraction=0.1).train
    lazy = LazyGraphDataset(LazySubset(db, train), SPEC, cache_dir=tmp_path)
    eager = GraphDataset([records[int(i)] for i in train], SPEC)
    assert len(lazy) == len(eager) and len(lazy.records[:3]) == 3
    np.testing.assert_array_equal(lazy.sizes(), eager.sizes())
    idx = [2, 0, len(train) - 1]
    got, want = lazy.batch(idx), eager.batch(idx)
    assert torch.equal(got.edge_index, want.edge_index) and torch.equal(got.numbers, want.numbers)
    torch.testing.assert_close(got.positions, want.positions)
    assert got.uids == [db.uid(int(train[k])) for k in idx]


@pytest.fixture(scope="module")
def grouped(tmp_path_factory):
    """60 EMT records in two .aselmdb files, each row carrying a ``traj`` key (12 trajectories of 5 frames)."""
    import ase.db

    records = generate_records(seed=5, size=60, progress=False)
    folder = tmp_path_factory.mktemp("grouped")
    for name, part in (("x.aselmdb", records[:35]), ("y.aselmdb", records[35:])):
        db = ase.db.connect(str(folder / name), type="aselmdb")
        with db:
            for k, r in enumerate(part):
                db.write(r.to_atoms(), uid=r.uid, traj=f"t{(k + (35 if name[0] == 'y' else 0)) // 5}")
    return folder


@pytest.mark.parametrize("group_key", [None, "traj"])
def test_lazy_and_in_memory_splits_are_identical(grouped, tmp_path, group_key):
    """Same files, same DataConfig: the lazy path gives the in-memory path's train/val/test (membership and
    nested order) and its normalization, fitted on the same reference subset."""
    from engine.config import DataConfig
    from engine.data.dataset import load_splits

    common = dict(path=str(grouped), group_key=group_key, val_fraction=0.25, test_fraction=0.15, max_val=None,
                  normalization_size=20, cache_dir=str(tmp_path))
    eager = load_splits(DataConfig(**common), progress=False)
    lazy = load_splits(DataConfig(**common, lazy=True), progress=False)
    for name in ("train", "val", "test"):
        want = [r.uid for r in getattr(eager, name)]
        got = [lazy.train.db.uid(int(i)) for i in getattr(lazy, name).indices]
        assert got == want and want, name
    assert lazy.pool_size == eager.pool_size
    got_norm, want_norm = lazy.normalization.to_dict(), eager.normalization.to_dict()
    np.testing.assert_allclose(got_norm.pop("energy_ref"), want_norm.pop("energy_ref"), rtol=1e-12, atol=1e-12)
    assert got_norm == pytest.approx(want_norm, rel=1e-12)
    if group_key is not None:  # no trajectory straddles a split
        def trajs(split):
            return {r.group for r in split}
        assert not trajs(eager.train) & trajs(eager.val) and not trajs(eager.val) & trajs(eager.test)
        assert [r.group for r in lazy.val] == [r.group for r in eager.val]
    close_environments()  # py-lmdb: one environment per file per process; the in-memory reader opens its own
    capped_eager = load_splits(DataConfig(**{**common, "max_test": 2}), progress=False)
    capped_lazy = load_splits(DataConfig(**{**common, "max_test": 2}, lazy=True), progress=False)
    assert [lazy.train.db.uid(int(i)) for i in capped_lazy.test.indices] == [r.uid for r in eager.test][:2]
    assert [r.uid for r in capped_eager.test] == [r.uid for r in eager.test][:2]
    close_environments()
    small_eager = load_splits(DataConfig(**{**common, "train_size": 7}), progress=False)
    small_lazy = load_splits(DataConfig(**{**common, "train_size": 7}, lazy=True), progress=False)
    assert [r.uid for r in small_lazy.train] == [r.uid for r in small_eager.train] == [r.uid for r in eager.train][:7]


def test_a_missing_group_key_is_one_clear_error(grouped, tmp_path):
    db = LazyAseDB(grouped, group_key="parent")
    with pytest.raises(DataError, match="no group key 'parent'"):
        lazy_splits(db, cache_dir=tmp_path)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"lazy": True}, "not the embedded EMT dataset"),
        ({"lazy": True, "path": "train.extxyz"}, "reads only .aselmdb"),
        ({"lazy": True, "path": "data", "format": "extxyz"}, "reads only .aselmdb"),
        ({"num_workers": 2, "path": "x.aselmdb"}, "needs data.lazy"),
        ({"lazy": True, "path": "x.aselmdb", "num_workers": -1}, "num_workers must be"),
    ],
)
def test_lazy_config_errors(values, message):
    from engine.config import DataConfig
    from engine.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        DataConfig(**values)


def test_a_trial_start_reads_the_datasets_split_instead_of_hashing_every_uid(tmp_path, monkeypatch):
    from engine.data import lazy as lazy_mod
    from engine.data.splits import split_by_keys

    records = generate_records(seed=13, size=40, progress=False)
    write_aselmdb(records, tmp_path / "data" / "part-0.aselmdb")
    db = LazyAseDB(tmp_path / "data")
    first = lazy_splits(db, val_fraction=0.2, test_fraction=0.1, train_size=10, max_val=3)
    assert len(list((tmp_path / "data" / INDEX_DIR).glob("split-*.npz"))) == 1

    def no_hashing(*args):
        raise AssertionError("every uid hashed again")

    monkeypatch.setattr(lazy_mod, "held_out_and_pool", no_hashing)
    again = lazy_splits(LazyAseDB(tmp_path / "data"), val_fraction=0.2, test_fraction=0.1, train_size=20, max_test=2)
    uids = db.uids()
    want = split_by_keys(uids, uids, val_fraction=0.2, test_fraction=0.1, train_size=20, max_test=2)
    for name in ("train", "val", "test", "pool"):
        np.testing.assert_array_equal(getattr(again, name), getattr(want, name))
    np.testing.assert_array_equal(first.train, again.train[:10])  # nested
    assert len(first.val) == 3
    with pytest.raises(AssertionError, match="hashed again"):  # another setting is another split
        lazy_splits(LazyAseDB(tmp_path / "data"), val_fraction=0.25, test_fraction=0.1)
