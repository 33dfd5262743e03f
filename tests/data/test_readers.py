"""Each reader on small files written here in that exact format, with hand-checked units."""

from __future__ import annotations

import bz2
import gzip
import json
import logging
import shutil
from pathlib import Path

import ase
import ase.db
import ase.io
import numpy as np
import pytest
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from engine.data.readers import read_records
from engine.data.records import Record
from engine.errors import DataError

# 1 GPa = 1/160.21766208 eV/Å³ (ase.units.GPa); −10 kBar in VASP's sign is +1 GPa in ASE's.
ONE_GPA_EV_PER_A3 = 0.0062415091

ASE_TESTDATA = Path(ase.__file__).parent / "test" / "testdata"


def _labelled_atoms(shift: float = 0.0) -> Atoms:
    atoms = Atoms("Cu2", positions=[[0, 0, 0], [1.8 + shift, 1.8, 0]], cell=np.eye(3) * 3.6, pbc=True)
    atoms.calc = SinglePointCalculator(
        atoms,
        energy=-7.25 + shift,
        forces=[[0.1, -0.2, 0.3], [-0.1, 0.2, -0.3]],
        stress=[0.01, 0.02, 0.03, 0.004, 0.005, 0.006],  # Voigt xx yy zz yz xz xy, eV/Å³
    )
    return atoms


def _check_labelled(r: Record, shift: float = 0.0) -> None:
    assert r.energy == pytest.approx(-7.25 + shift)
    np.testing.assert_allclose(r.forces[0], [0.1, -0.2, 0.3])
    np.testing.assert_allclose(r.stress, [[0.01, 0.006, 0.005], [0.006, 0.02, 0.004], [0.005, 0.004, 0.03]])
    np.testing.assert_array_equal(r.numbers, [29, 29])
    np.testing.assert_allclose(r.cell, np.eye(3) * 3.6)


@pytest.mark.parametrize("suffix", [".aselmdb", ".db"])
def test_ase_databases(tmp_path, suffix):
    path = tmp_path / f"data{suffix}"
    db = ase.db.connect(str(path))
    for k in range(3):
        db.write(_labelled_atoms(0.1 * k))
    if suffix == ".aselmdb":
        db.close()
    result = read_records(path)
    assert [r.uid for r in result.records] == [f"data{suffix}:1", f"data{suffix}:2", f"data{suffix}:3"]
    for k, r in enumerate(result.records):
        _check_labelled(r, 0.1 * k)
    assert result.skipped == []


def test_extxyz_with_and_without_stress(tmp_path):
    path = tmp_path / "frames.extxyz"
    no_stress = _labelled_atoms(0.2)
    no_stress.calc = SinglePointCalculator(no_stress, energy=-7.05, forces=no_stress.calc.results["forces"])
    ase.io.write(path, [_labelled_atoms(), no_stress], format="extxyz")
    records = read_records(path).records
    assert [r.uid for r in records] == ["frames.extxyz:0", "frames.extxyz:1"]
    _check_labelled(records[0])
    assert records[1].stress is None and records[1].energy == pytest.approx(-7.05)


def test_vasp_outcar_from_ase_testdata():
    path = ASE_TESTDATA / "vasp" / "OUTCAR_example_1"
    if not path.is_file():
        pytest.skip("ASE test data not installed")
    (r,) = read_records(path).records
    # values as printed in the OUTCAR (Ni18 slab): energy(sigma->0) and the first force row
    assert r.n_atoms == 18 and set(r.numbers.tolist()) == {28}
    assert r.energy == pytest.approx(-68.23102426)
    np.testing.assert_allclose(r.forces[0], [0.030415, -0.114705, -0.460114])
    assert r.stress is not None and r.stress.shape == (3, 3)


def test_vasprun_xml_from_ase_testdata():
    path = ASE_TESTDATA / "vasp" / "vasprun_pstress.xml"
    if not path.is_file():
        pytest.skip("ASE test data not installed")
    records = read_records(path).records
    assert records and records[-1].energy is not None and records[-1].stress is not None
    # same numbers as ASE's own reader: the reader only changes containers, not units
    ref = ase.io.read(path, index=-1)
    np.testing.assert_allclose(records[-1].stress, ref.get_stress(voigt=False))


def _pmg_structure(frac: bool = False) -> dict:
    matrix = [[3.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 4.0]]
    sites = []
    for el, abc in (("Li", [0, 0, 0]), ("O", [0.5, 0.5, 0.5])):
        site = {"species": [{"element": el, "occu": 1}], "label": el, "properties": {}}
        if frac:
            site["abc"] = abc
        else:
            site["abc"] = abc
            site["xyz"] = list(np.asarray(abc) @ np.asarray(matrix))
        sites.append(site)
    return {
        "@module": "pymatgen.core.structure",
        "@class": "Structure",
        "charge": 0,
        "lattice": {"matrix": matrix, "pbc": [True, True, True], "a": 3.0, "b": 3.0, "c": 4.0},
        "sites": sites,
    }


def _mptrj_frame(stress_kbar) -> dict:
    return {
        "structure": _pmg_structure(),
        "uncorrected_total_energy": -10.5,
        "corrected_total_energy": -11.0,
        "energy_per_atom": -5.25,
        "force": [[0.0, 0.0, 0.1], [0.0, 0.0, -0.1]],
        "stress": stress_kbar,
        "magmom": None,
    }


@pytest.mark.parametrize("suffix", [".json", ".json.gz"])
def test_mptrj_json_units_and_sign(tmp_path, suffix):
    data = {
        "mp-1": {
            "mp-1-task-0": _mptrj_frame([[-10.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]),
            "mp-1-task-1": {k: v for k, v in _mptrj_frame(None).items() if k != "stress"},
        }
    }
    path = tmp_path / f"MPtrj_small{suffix}"
    with (gzip.open if suffix.endswith(".gz") else open)(path, "wt") as fh:
        json.dump(data, fh)
    records = read_records(path).records
    assert [r.uid for r in records] == [f"{path.name}:mp-1:mp-1-task-0", f"{path.name}:mp-1:mp-1-task-1"]
    r = records[0]
    assert r.energy == pytest.approx(-10.5)  # uncorrected, not the MP2020-corrected value
    np.testing.assert_array_equal(r.numbers, [3, 8])
    np.testing.assert_allclose(r.positions[1], [1.5, 1.5, 2.0])
    # −10 kBar (VASP: tensile) → +1 GPa (ASE) → +0.0062415 eV/Å³ on xx, zero elsewhere
    assert r.stress[0, 0] == pytest.approx(ONE_GPA_EV_PER_A3, rel=1e-6)
    assert np.count_nonzero(r.stress) == 1
    assert records[1].stress is None


def test_alexandria_json_bz2(tmp_path):
    steps = [
        {
            "structure": _pmg_structure(frac=True),
            "energy": -9.0 - 0.1 * s,
            "forces": [[0.0, 0.2, 0.0], [0.0, -0.2, 0.0]],
            "stress": [[5.0, 0.0, 0.0], [0.0, 5.0, 0.0], [0.0, 0.0, 5.0]],  # +5 kBar VASP = compressed
        }
        for s in range(3)
    ]
    data = {"agm002153": [{"steps": steps}]}
    path = tmp_path / "alexandria_000.json.bz2"
    with bz2.open(path, "wt") as fh:
        json.dump(data, fh)
    records = read_records(path).records
    assert [r.uid for r in records] == [f"alexandria_000.json.bz2:agm002153:0:{s}" for s in range(3)]
    assert records[2].energy == pytest.approx(-9.2)
    np.testing.assert_allclose(records[0].positions[1], [1.5, 1.5, 2.0])  # from fractional abc
    # +5 kBar compressive (VASP) = −0.5 GPa in ASE's sign
    np.testing.assert_allclose(np.diag(records[0].stress), [-0.5 * ONE_GPA_EV_PER_A3] * 3, rtol=1e-6)
    np.testing.assert_allclose(records[0].forces[0], [0.0, 0.2, 0.0])


def test_directory_reads_every_file(tmp_path):
    folder = tmp_path / "set"
    folder.mkdir()
    ase.io.write(folder / "a.extxyz", [_labelled_atoms()], format="extxyz")
    db = ase.db.connect(str(folder / "b.aselmdb"))
    db.write(_labelled_atoms(0.3))
    db.close()
    records = read_records(folder).records
    assert sorted(r.uid for r in records) == ["a.extxyz:0", "b.aselmdb:1"]


def _mptrj_with_bad_frame(tmp_path) -> Path:
    bad = _mptrj_frame(None)
    bad["force"] = [[0.0, 0.0, 0.1]]  # one row for two atoms
    data = {"mp-2": {"good": _mptrj_frame(None), "broken": bad, "nostruct": {"uncorrected_total_energy": 1.0}}}
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    return path


def test_malformed_record_names_file_and_record(tmp_path):
    path = _mptrj_with_bad_frame(tmp_path)
    with pytest.raises(DataError) as info:
        read_records(path)
    message = str(info.value)
    assert "bad.json:mp-2:broken" in message and str(path) in message
    assert "skip-bad-records" in message and "\n" not in message


def test_skip_bad_counts_and_reports(tmp_path, caplog):
    path = _mptrj_with_bad_frame(tmp_path)
    with caplog.at_level(logging.WARNING, logger="engine.data.readers"):
        result = read_records(path, skip_bad=True)
    assert [r.uid for r in result.records] == ["bad.json:mp-2:good"]
    assert [uid for uid, _ in result.skipped] == ["bad.json:mp-2:broken", "bad.json:mp-2:nostruct"]
    assert "forces shape" in result.skipped[0][1] and "structure" in result.skipped[1][1]
    assert "skipped 2 bad record(s)" in caplog.text


def test_nan_label_in_extxyz_is_an_error(tmp_path):
    atoms = _labelled_atoms()
    atoms.calc.results["energy"] = float("nan")
    path = tmp_path / "nan.extxyz"
    ase.io.write(path, [_labelled_atoms(), atoms], format="extxyz")
    with pytest.raises(DataError, match=r"nan\.extxyz:1.*NaN/inf energy"):
        read_records(path)
    assert len(read_records(path, skip_bad=True).records) == 1


def test_missing_and_unreadable_paths(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_records(tmp_path / "nope.extxyz")
    garbage = tmp_path / "garbage.json"
    garbage.write_text("{not json")
    with pytest.raises(DataError, match="cannot parse JSON"):
        read_records(garbage)
    broken_db = tmp_path / "broken.aselmdb"
    broken_db.write_bytes(b"\x00" * 64)
    with pytest.raises(DataError, match=r"broken\.aselmdb"):
        read_records(broken_db)
    weird = tmp_path / "notes.txt"
    weird.write_text("hello\n")
    with pytest.raises(DataError, match=r"notes\.txt"):
        read_records(weird)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no data files"):
        read_records(empty)


def test_outcar_copied_into_folder(tmp_path):
    """A folder holding a real OUTCAR (uid = relative path) reads like the file itself."""
    src = ASE_TESTDATA / "vasp" / "OUTCAR_example_1"
    if not src.is_file():
        pytest.skip("ASE test data not installed")
    (tmp_path / "runs").mkdir()
    shutil.copy(src, tmp_path / "runs" / "OUTCAR")
    (r,) = read_records(tmp_path).records
    assert r.uid == "runs/OUTCAR:0"
