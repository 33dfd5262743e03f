"""The sweep's driver builds a lazy dataset's index once, next to the data, before any trial starts."""

from __future__ import annotations

from engine.config import DataConfig, TrialConfig
from engine.data.lazy import INDEX_DIR, LazyAseDB, close_environments
from engine.data.store import write_aselmdb
from engine.sweep.shared_data import prepare_shared_data
from tests.loop.conftest import emt_records


def test_the_driver_writes_the_lazy_index_next_to_the_data(tmp_path):
    folder = tmp_path / "data"
    write_aselmdb(emt_records(30, seed=6), folder / "part-0.aselmdb")
    data = DataConfig(path=str(folder), lazy=True, val_fraction=0.2, test_fraction=0.1, normalization_size=8,
                      cache_dir=str(tmp_path / "driver-cache"))
    sweep_dir = tmp_path / "sweep"
    sweep_dir.mkdir()
    try:
        prepare_shared_data([TrialConfig(model="fcn", data=data)], sweep_dir)
        assert len(list((folder / INDEX_DIR).glob("index-*.npz"))) == 1
        trial_db = LazyAseDB(folder)  # a trial on another node, with its own cache folder
        trial_db.sizes(cache_dir=tmp_path / "node-cache")
        assert trial_db.rows_read == 0
    finally:
        close_environments()


def test_the_dataset_digest_streams_and_ignores_order(tmp_path):
    from engine.sweep.datasets import digest_of

    uids = [f"part-0.aselmdb:{k}" for k in range(1, 50)]
    assert digest_of(iter(uids)) == digest_of(reversed(uids)) == digest_of(sorted(uids, key=hash))
    assert digest_of(uids) != digest_of(uids[:-1]) and digest_of(uids) != digest_of([*uids, uids[0]])
    assert len(digest_of([])) == 16


def test_lazy_and_in_memory_reading_give_one_digest(tmp_path):
    import dataclasses

    folder = tmp_path / "data"
    write_aselmdb(emt_records(30, seed=7), folder / "part-0.aselmdb")
    data = DataConfig(path=str(folder), val_fraction=0.2, test_fraction=0.1, normalization_size=8,
                      cache_dir=str(tmp_path / "cache"))
    digests = []
    try:
        for lazy in (False, True):
            sweep_dir = tmp_path / f"sweep-{lazy}"
            sweep_dir.mkdir()
            cfg = TrialConfig(model="fcn", data=dataclasses.replace(data, lazy=lazy))
            digests.append(prepare_shared_data([cfg], sweep_dir).dataset.digest)
    finally:
        close_environments()
    assert digests[0] == digests[1]
