"""``python -m engine.train``: a real run on a tiny extxyz file, and every bad input as one clear line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engine.cli import run_cli
from engine.train import main

from .conftest import emt_records

TINY = ["--model", "fcn", "--model-config", "hidden=8", "num_rbf=4", "--epochs", "1", "--batch-size", "8",
        "--threads", "1", "--no-progress"]  # fmt: skip


def _write(path: Path, kind: str | None = None) -> Path:
    import ase.io

    atoms = [r.to_atoms() for r in emt_records(24, seed=2)]
    a = atoms[5]
    if kind == "nan_positions":
        p = a.positions.copy()
        p[0, 0] = np.nan
        a.positions = p
    elif kind == "zero_volume":
        a.cell[:] = 0.0
    elif kind == "nan_energy":
        a.calc.results["energy"] = float("nan")
    elif kind == "nan_forces":
        a.calc.results["forces"][0, 1] = np.nan
    ase.io.write(path, atoms)
    return path


@pytest.fixture
def good_run(tmp_path, capsys):
    """A finished run (checkpoint + graph cache) that later bad invocations must leave untouched."""
    data = _write(tmp_path / "good.extxyz")
    run_dir = tmp_path / "run"
    assert run_cli(main, [*TINY, "--data", str(data), "--run-dir", str(run_dir)]) == 0
    out = capsys.readouterr().out
    snapshot = {p: p.read_bytes() for p in [*run_dir.iterdir(), *(tmp_path / "cache").rglob("*")] if p.is_file()}
    return data, run_dir, out, snapshot


def test_cli_trains_writes_json_lines_and_a_table(good_run):
    _, run_dir, out, _ = good_run
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0, 1]
    assert rows[1]["flops_cum"] > 0 and "val_loss" in rows[1]
    assert "val_energy_mae_mev_per_atom" in out and "flops_cum" in out
    assert json.loads((run_dir / "config.json").read_text())["model_config"]["hidden"] == 8


def _bad_config(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "trial.yaml"
    p.write_text(text)
    return p


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("unknown_key", "unknown key(s) epochz in trial config"),
        ("wrong_type", "trial config.epochs must be an integer"),
        ("unknown_model_key", "unknown fcn config key(s) widht"),
        ("missing_path", "does not exist; check --data"),
        ("nan_positions", "NaN/inf positions"),
        ("zero_volume", "zero-volume cell"),
        ("nan_energy", "NaN/inf energy"),
        ("nan_forces", "NaN/inf forces"),
        ("other_model_checkpoint", "is from model 'fcn', not 'transformer'"),
    ],
)
def test_bad_input_is_one_line_and_corrupts_nothing(good_run, tmp_path, capsys, case, expected):
    data, run_dir, _, snapshot = good_run
    args = [*TINY, "--run-dir", str(run_dir), "--data", str(data)]
    if case == "unknown_key":
        args += ["--config", str(_bad_config(tmp_path, "epochz: 3\n"))]
    elif case == "wrong_type":
        args += ["--config", str(_bad_config(tmp_path, "epochs: three\n"))]
    elif case == "unknown_model_key":
        args += ["--model-config", "widht=3"]
    elif case == "missing_path":
        args += ["--data", str(tmp_path / "nope.extxyz")]
    elif case == "other_model_checkpoint":
        args = ["--model", "transformer", "--preset", "t0", "--epochs", "1", "--no-progress",
                "--run-dir", str(run_dir), "--data", str(data)]  # fmt: skip
    else:
        args += ["--data", str(_write(tmp_path / f"{case}.extxyz", case))]
    assert run_cli(main, args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and expected in err[0], err
    assert "Traceback" not in err[0]
    for path, content in snapshot.items():
        assert path.read_bytes() == content, f"{path} changed"


def test_skip_bad_records_counts_and_trains(tmp_path, capsys):
    data = _write(tmp_path / "bad.extxyz", "nan_energy")
    code = run_cli(main, [*TINY, "--data", str(data), "--skip-bad-records", "--run-dir", str(tmp_path / "r")])
    assert code == 0
    assert "skipped 1 bad record(s)" in capsys.readouterr().out


@pytest.mark.slow
def test_module_entry_point_prints_one_error_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "engine.train", "--model", "nosuchmodel", "--run-dir", str(tmp_path / "r")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert proc.stderr.startswith("error: unknown model 'nosuchmodel'")


def test_cli_defaults_flags_and_config_file_layering(tmp_path):
    from engine.train import CLI_DEFAULTS, build_parser, config_from_args

    cfg = config_from_args(build_parser().parse_args(["--model", "fcn"]))
    assert (cfg.epochs, cfg.batch_size, cfg.optim.lr) == (8, 32, CLI_DEFAULTS["optim"]["lr"])
    path = _bad_config(tmp_path, "epochs: 3\noptim: {lr: 0.002}\nmodel: transformer\nmodel_config: {d_model: 32}\n")
    cfg = config_from_args(build_parser().parse_args(["--config", str(path), "--batch-size", "4", "--amp"]))
    assert (cfg.epochs, cfg.batch_size, cfg.optim.lr, cfg.amp) == (3, 4, 0.002, True)
    assert cfg.model == "transformer" and cfg.model_config == {"d_model": 32}
    args = ["--model", "transformer", "--model-config", "periodic=true", "xyz_input=false", "--train-size", "50"]
    cfg = config_from_args(build_parser().parse_args(args))
    assert cfg.model_config == {"periodic": True, "xyz_input": False} and cfg.data.train_size == 50
