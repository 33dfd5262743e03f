"""The streaming data path on real ``.aselmdb`` files: random access, splits without reads, DataLoader workers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.data.emt import generate_records
from engine.data.graph import GraphDataset, GraphSpec
from engine.data.lazy import LazyAseDB, LazyGraphDataset, LazySubset, batch_loader, lazy_splits
from engine.data.store import write_aselmdb
from engine.errors import DataError

SPEC = GraphSpec(cutoff=4.0, max_neighbors=12, strict=True)


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


def test_sizes_are_cached_and_match(two_files, tmp_path):
    folder, records = two_files
    db = LazyAseDB(folder)
    sizes = db.sizes(cache_dir=tmp_path)
    np.testing.assert_array_equal(sizes, [r.n_atoms for r in records])
    cached = list(tmp_path.glob("index-*.npz"))
    assert len(cached) == 1
    fresh = LazyAseDB(folder)
    np.testing.assert_array_equal(fresh.sizes(cache_dir=tmp_path), sizes)
    assert db.rows_read == 24 and fresh.rows_read == 0  # one streaming pass, then the cache


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
