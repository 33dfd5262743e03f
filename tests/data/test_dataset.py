"""load_splits end to end, and the bad-input cases: each one line naming the problem and the fix."""

from __future__ import annotations

import json

import numpy as np
import pytest

from engine.config import DataConfig
from engine.data.dataset import load_splits
from engine.errors import DataError


def test_emt_splits_from_cache(emt_cache):
    folder, _ = emt_cache
    cfg = DataConfig(
        emt_size=40, emt_seed=7, cache_dir=str(folder), train_size=10, val_fraction=0.2, test_fraction=0.1, max_val=5
    )
    splits = load_splits(cfg, progress=False)
    assert len(splits.train) == 10 and len(splits.val) <= 5
    assert splits.source.endswith("emt-seed7-n40-v1.aselmdb") and splits.pool_size >= 30
    uids = [r.uid for r in splits.train + splits.val + splits.test]
    assert len(set(uids)) == len(uids)
    bigger = load_splits(DataConfig(**{**cfg.__dict__, "train_size": 20}), progress=False)
    assert {r.uid for r in splits.train} < {r.uid for r in bigger.train}
    assert [r.uid for r in bigger.val] == [r.uid for r in splits.val]
    with pytest.raises(DataError, match="exceeds the training pool"):
        load_splits(DataConfig(**{**cfg.__dict__, "train_size": 39}), progress=False)


def _structure(matrix, xyz) -> dict:
    return {
        "lattice": {"matrix": matrix},
        "sites": [{"species": [{"element": "Cu", "occu": 1}], "xyz": p} for p in xyz],
    }


def _frame(matrix=None, xyz=None) -> dict:
    matrix = matrix if matrix is not None else [[3.6, 0, 0], [0, 3.6, 0], [0, 0, 3.6]]
    xyz = xyz if xyz is not None else [[0, 0, 0], [1.8, 1.8, 0]]
    return {
        "structure": _structure(matrix, xyz),
        "uncorrected_total_energy": -7.0,
        "force": [[0, 0, 0], [0, 0, 0]],
        "stress": [[0] * 3] * 3,
    }


def _write(tmp_path, frames: dict) -> str:
    path = tmp_path / "set.json"
    path.write_text(json.dumps({"mp-9": frames}))  # json writes NaN as a bare NaN literal, which it reads back
    return str(path)


def test_nan_positions_named(tmp_path):
    path = _write(tmp_path, {"ok": _frame(), "nanpos": _frame(xyz=[[0, 0, 0], [float("nan"), 0, 0]])})
    with pytest.raises(DataError) as info:
        load_splits(DataConfig(path=path))
    msg = str(info.value)
    assert "set.json:mp-9:nanpos" in msg and "NaN" in msg and "--skip-bad-records" in msg


def test_zero_volume_cell_named(tmp_path):
    path = _write(tmp_path, {"flat": _frame(matrix=[[3.6, 0, 0], [0, 3.6, 0], [0, 0, 0]])})
    with pytest.raises(DataError, match=r"set\.json:mp-9:flat.*zero-volume cell"):
        load_splits(DataConfig(path=path))


def test_skip_bad_records_keeps_the_rest(tmp_path):
    # one mp_id per good frame: frames of one mp_id are one split group (engine.data.splits)
    data = {f"mp-ok{k}": {"f": _frame(xyz=[[0, 0, 0], [1.8 + 0.01 * k, 1.8, 0]])} for k in range(30)}
    data["mp-9"] = {"flat": _frame(matrix=[[3.6, 0, 0], [0, 3.6, 0], [0, 0, 0]])}
    path = tmp_path / "set.json"
    path.write_text(json.dumps(data))
    splits = load_splits(DataConfig(path=path, skip_bad_records=True, val_fraction=0.1, test_fraction=0.1))
    assert [uid for uid, _ in splits.skipped] == ["set.json:mp-9:flat"]
    assert len(splits.train) + len(splits.val) + len(splits.test) == 30
    assert np.isclose(splits.train[0].energy, -7.0)


def test_missing_path():
    with pytest.raises(DataError, match=r"does not exist.*--data"):
        load_splits(DataConfig(path="/nonexistent/data.aselmdb"))


def test_nothing_usable(tmp_path):
    path = _write(tmp_path, {"flat": _frame(matrix=[[0, 0, 0]] * 3)})
    with pytest.raises(DataError, match="no usable structures"):
        load_splits(DataConfig(path=path, skip_bad_records=True))


def test_mixed_periodicity_is_a_data_error(tmp_path):
    import ase.io
    from ase.build import fcc111
    from ase.calculators.emt import EMT

    slab = fcc111("Cu", size=(2, 2, 2), vacuum=5.0)  # pbc = (True, True, False)
    slab.info.clear()
    slab.calc = EMT()  # labelled, so the periodicity check (not the no-labels one) is what fails
    slab.get_potential_energy()
    path = tmp_path / "slab.extxyz"
    ase.io.write(path, slab, format="extxyz")
    with pytest.raises(DataError, match=r"slab\.extxyz:0.*full 3D periodicity"):
        load_splits(DataConfig(path=str(path)))
