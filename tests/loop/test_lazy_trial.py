"""A trial trains from a lazy .aselmdb dataset with DataLoader workers, exactly as it trains from memory."""

from __future__ import annotations

import math

import pytest
import torch

from engine import metrics as M
from engine.config import DataConfig, TrialConfig
from engine.data.dataset import load_splits
from engine.data.graph import Batch
from engine.data.lazy import close_environments
from engine.data.store import write_aselmdb
from engine.loop.loop import run_trial
from tests.loop.conftest import emt_records


@pytest.fixture(scope="module")
def lmdb_folder(tmp_path_factory):
    """48 EMT-labelled cells (2–8 atoms, energy, forces, stress) in two .aselmdb files."""
    records = emt_records(48, seed=4)
    folder = tmp_path_factory.mktemp("lazy-trial")
    write_aselmdb(records[:30], folder / "part-0.aselmdb")
    write_aselmdb(records[30:], folder / "part-1.aselmdb")
    return folder


def _config(folder, tmp_path, **data) -> TrialConfig:
    values = dict(path=str(folder), val_fraction=0.2, test_fraction=0.1, max_val=None, normalization_size=16,
                  cache_dir=str(tmp_path / "cache"), **data)
    return TrialConfig(model="fcn", model_config={"hidden": 16, "num_rbf": 8}, epochs=2, batch_size=4,
                       max_atoms_per_batch=24, seed=5, device="cpu", data=DataConfig(**values))


def test_a_trial_trains_from_lazy_lmdb_with_workers_as_from_memory(lmdb_folder, tmp_path):
    eager_cfg = _config(lmdb_folder, tmp_path)
    eager = run_trial(eager_cfg, tmp_path / "eager", splits=load_splits(eager_cfg.data, progress=False))
    close_environments()  # py-lmdb: the lazy path opens its own environments on these files

    lazy_cfg = _config(lmdb_folder, tmp_path, lazy=True, num_workers=2, prefetch_factor=2)
    splits = load_splits(lazy_cfg.data, progress=False)
    assert splits.train.db.rows_read == 16  # the normalization's reference subset only
    splits.train.db.index(lazy_cfg.data.cache_dir)  # the one pass over the rows (atom counts), cached
    read_before = splits.train.db.rows_read
    lazy = run_trial(lazy_cfg, tmp_path / "lazy", splits=splits)

    assert lazy[M.EPOCH] == eager[M.EPOCH] == 2 and lazy[M.STEP] == eager[M.STEP] > 0
    # same splits, batches, graphs and normalization: the same training, to rounding
    for key in (M.VAL_LOSS, M.split_key("train", M.LOSS), M.split_key("test", M.LOSS)):
        assert math.isfinite(lazy[key]) and lazy[key] == pytest.approx(eager[key], rel=1e-9, abs=1e-12), key
    # training, validation and test rows were all decoded in the DataLoader workers, none in this process
    assert splits.train.db.rows_read == read_before
    close_environments()


def test_lazy_trial_runs_in_process_with_zero_workers(lmdb_folder, tmp_path):
    cfg = _config(lmdb_folder, tmp_path, lazy=True)
    final = run_trial(cfg, tmp_path / "run")
    assert final[M.EPOCH] == 2 and math.isfinite(final[M.VAL_LOSS])
    close_environments()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="pinned memory needs CUDA")
def test_batch_pin_memory_pins_every_tensor():
    batch = Batch(*[torch.arange(3) for _ in range(14)], uids=["a"])
    pinned = batch.pin_memory()
    assert pinned.uids == ["a"] and pinned.numbers.is_pinned() and pinned.stress_mask.is_pinned()
    moved = pinned.to("cuda", non_blocking=True)
    assert moved.edge_index.is_cuda and torch.equal(moved.energy.cpu(), batch.energy)


def test_ranks_shard_a_lazy_batch_as_an_in_memory_one_without_reading_rows(lmdb_folder, tmp_path):
    """DDP shards a global batch by atoms: the lazy dataset gives the same shards from its atom counts alone."""
    from engine.data.graph import GraphDataset, GraphSpec
    from engine.data.lazy import LazyAseDB, LazyGraphDataset
    from engine.loop.loop import DistContext, local_shard

    db = LazyAseDB(lmdb_folder)
    spec = GraphSpec(cutoff=4.0, max_neighbors=8)
    lazy = LazyGraphDataset(db, spec, cache_dir=tmp_path)
    lazy.sizes()
    read = db.rows_read
    eager = GraphDataset(emt_records(48, seed=4), spec)
    for idx in ([3, 40, 7, 12, 30], [5]):
        for rank in (0, 1):
            dist = DistContext(rank, 2, "cpu")
            assert local_shard(lazy, idx, dist) == local_shard(eager, idx, dist)
    assert db.rows_read == read
    close_environments()
