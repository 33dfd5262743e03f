"""Streaming MPtrj / Alexandria → .aselmdb shards: same records as the whole-file reader, read back lazily."""

from __future__ import annotations

import bz2
import json

import numpy as np
import pytest

from engine.data.convert import convert_json, main
from engine.data.lazy import LazyAseDB, close_environments
from engine.data.readers import read_records
from engine.errors import DataError


def _structure(shift: float) -> dict:
    matrix = [[3.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 4.0 + shift]]
    sites = []
    for el, abc in (("Li", [0.0, 0.0, 0.0]), ("O", [0.5, 0.5, 0.5 + shift / 10])):
        xyz = list(np.asarray(abc) @ np.asarray(matrix))
        sites.append({"species": [{"element": el, "occu": 1}], "abc": abc, "xyz": xyz, "label": el, "properties": {}})
    return {"@module": "pymatgen.core.structure", "@class": "Structure", "charge": 0,
            "lattice": {"matrix": matrix, "pbc": [True, True, True]}, "sites": sites}  # fmt: skip


def _mptrj(n_ids: int = 3, frames: int = 3) -> dict:
    data = {}
    for i in range(n_ids):
        data[f"mp-{i}"] = {
            f"mp-{i}-task-{k}": {
                "structure": _structure(0.01 * (i * frames + k)),
                "uncorrected_total_energy": -10.0 - i - 0.1 * k,
                "force": [[0.0, 0.0, 0.1 * k], [0.0, 0.0, -0.1 * k]],
                "stress": [[-10.0 * k, 0, 0], [0, 0, 0], [0, 0, 0]],  # kBar, VASP sign
            }
            for k in range(frames)
        }
    return data


def _same(a, b) -> None:
    np.testing.assert_array_equal(a.numbers, b.numbers)
    np.testing.assert_allclose(a.positions, b.positions, atol=1e-12)
    np.testing.assert_allclose(a.cell, b.cell, atol=1e-12)
    np.testing.assert_allclose(a.forces, b.forces, atol=1e-12)
    np.testing.assert_allclose(a.stress, b.stress, atol=1e-15)
    assert a.energy == pytest.approx(b.energy)


def test_mptrj_converts_in_shards_and_reads_back_lazily(tmp_path):
    src = tmp_path / "MPtrj_small.json"
    src.write_text(json.dumps(_mptrj()))
    result = convert_json(src, tmp_path / "out", shard_size=4, chunk=3)
    assert result.records == 9 and not result.skipped
    assert [p.name for p in result.files] == [f"MPtrj_small-{k:04d}.aselmdb" for k in range(3)]  # 4 + 4 + 1
    assert not list((tmp_path / "out").glob(".*partial*"))
    whole = read_records(src).records
    lazy = LazyAseDB(tmp_path / "out")
    assert len(lazy) == len(whole) == 9
    for i in range(9):
        _same(lazy[i], whole[i])
    import ase.db

    close_environments()  # one LMDB environment per file per process: hand the file to ASE
    row = ase.db.connect(str(result.files[0]), type="aselmdb", readonly=True).get(id=1)
    assert (row.uid, row.group) == (whole[0].uid, "mp-0")  # identity and split group survive


def test_alexandria_bz2(tmp_path):
    frames = _mptrj(1, 3)["mp-0"]
    steps = [{"structure": f["structure"], "energy": f["uncorrected_total_energy"], "forces": f["force"],
              "stress": f["stress"]} for f in frames.values()]  # fmt: skip
    src = tmp_path / "alexandria_000.json.bz2"
    with bz2.open(src, "wt") as fh:
        json.dump({"agm1": [{"steps": steps}]}, fh)
    assert main([str(src), str(tmp_path / "alex"), "--shard-size", "10"]) == 0
    lazy, whole = LazyAseDB(tmp_path / "alex"), read_records(src).records
    assert len(lazy) == 3
    for i in range(3):
        _same(lazy[i], whole[i])


def test_bad_frame_stops_or_is_skipped(tmp_path, capsys):
    data = _mptrj(2, 2)
    del data["mp-1"]["mp-1-task-0"]["structure"]
    src = tmp_path / "bad.json"
    src.write_text(json.dumps(data))
    with pytest.raises(DataError, match="--skip-bad-records"):
        convert_json(src, tmp_path / "o1")
    assert not list((tmp_path / "o1").glob("*.aselmdb")) and not list((tmp_path / "o1").glob(".*"))
    result = convert_json(src, tmp_path / "o2", skip_bad=True)
    assert result.records == 3 and len(result.skipped) == 1


def test_truncated_json_is_one_error_and_no_partial_file(tmp_path, capsys):
    src = tmp_path / "cut.json"
    src.write_text(json.dumps(_mptrj())[:-40])
    assert main([str(src), str(tmp_path / "o"), "--shard-size", "100"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: cannot parse") and len(err.splitlines()) == 1
    assert not list((tmp_path / "o").iterdir())
