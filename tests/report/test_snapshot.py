"""A report folder carries its runs: rebuilt from runs/<sweep>.json alone, it is the report MLflow gave."""

import json
import re

import pandas as pd
import pytest

from engine.cli import run_cli
from engine.report import snapshot
from engine.report.__main__ import main
from engine.report.build import build_report
from engine.report.collect import collect_sweep


def _without_timestamp(text: str) -> str:
    return re.sub(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", "<time>", text)


def test_runs_file_reads_back_the_frame_bit_for_bit(mlflow_store, tmp_path):
    uri, _ = mlflow_store
    data = collect_sweep("params-tiny", uri)
    back = snapshot.load(snapshot.save(data, tmp_path / "runs" / "params-tiny.json"))
    pd.testing.assert_frame_equal(back.frame, data.frame, check_exact=True)
    assert (back.name, back.axis, back.parent_run_id, back.tracking_uri) == (
        data.name, data.axis, data.parent_run_id, data.tracking_uri)
    assert back.baselines == data.baselines and back.parent_params == data.parent_params
    assert back.snapshot == str(tmp_path / "runs" / "params-tiny.json") and data.snapshot is None


def test_comparison_rebuilt_from_its_runs_without_the_store(mlflow_store, tmp_path):
    uri, _ = mlflow_store
    first = build_report(["params-tiny", "params-other"], uri, tmp_path / "from-mlflow", metrics=["val_loss"],
                         n_boot=20, log_to_mlflow=False)
    runs = sorted((first / "runs").glob("*.json"))
    assert [p.name for p in runs] == ["params-other.json", "params-tiny.json"]
    # no store at all: the tracking URI points at a file that does not exist and is never opened
    missing = f"sqlite:///{tmp_path}/absent/mlflow.db"
    again = build_report([], missing, tmp_path / "from-runs", metrics=["val_loss"], n_boot=20,
                         runs=[first / "runs" / "params-tiny.json", first / "runs" / "params-other.json"])
    assert not (tmp_path / "absent").exists()
    for name in ["fits.json", "report.md"]:
        assert _without_timestamp((again / name).read_text()) == _without_timestamp((first / name).read_text())
    assert sorted(p.name for p in again.glob("*.png")) == sorted(p.name for p in first.glob("*.png"))
    assert (again / "runs" / "params-tiny.json").read_text() == (first / "runs" / "params-tiny.json").read_text()
    fits = json.loads((again / "fits.json").read_text())
    assert [s["runs_file"] for s in fits["sweeps"]] == ["runs/params-tiny.json", "runs/params-other.json"]
    assert "runs: runs/params-tiny.json" in (again / "report.md").read_text()


@pytest.mark.parametrize("content, message", [
    (None, "no runs file"),
    ("{not json", "cannot read runs file"),
    ('{"format": "engine-report/1"}', "is not a runs file"),
])
def test_bad_runs_file_is_one_error_line(tmp_path, capsys, content, message):
    path = tmp_path / "runs.json"
    if content is not None:
        path.write_text(content)
    assert run_cli(main, ["--runs", str(path), "--out", str(tmp_path / "rep")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]
    assert not (tmp_path / "rep").exists()


def test_a_sweep_named_twice_is_refused(mlflow_store, tmp_path, capsys):
    uri, _ = mlflow_store
    first = build_report(["params-other"], uri, tmp_path / "rep", metrics=["val_loss"], n_boot=5,
                         log_to_mlflow=False)
    argv = ["--sweep", "params-other", "--runs", str(first / "runs" / "params-other.json"), "--tracking-uri", uri,
            "--out", str(tmp_path / "rep2")]
    assert run_cli(main, argv) == 2
    assert "named twice" in capsys.readouterr().err
