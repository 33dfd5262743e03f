"""Every error a user reads is one ``error: ...`` line that names the fix, with no traceback.

Each case runs the real CLI in a subprocess (``python -m engine.train|scale|ui``) inside a
temporary folder, with every default location (cache, sweeps, reports, MLflow) pointed there.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

TINY_SPACE = """\
# a one-trial params space for error tests
axis: params
model: fcn
sizes: [f0]
train_sizes: [16]
seeds: [0]
fixed:
  epochs: 1
  batch_size: 8
  count_flops: false
  data: {{emt_size: 24, max_val: 4}}
resources:
  workers: {workers}
  cpus_per_worker: 1
"""


@pytest.fixture
def env(tmp_path: Path) -> Iterator[dict[str, str]]:
    # Ray's socket paths must stay under 107 bytes: its temp folder gets a short name under /tmp
    short_tmp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    yield dict(
        os.environ,
        PYTHONPATH=str(REPO),
        ENGINE_CACHE=str(tmp_path / "cache"),
        ENGINE_SWEEPS=str(tmp_path / "sweeps"),
        ENGINE_REPORTS=str(tmp_path / "reports"),
        MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}",
        TMPDIR=short_tmp,
        RAY_TMPDIR=short_tmp,
        OMP_NUM_THREADS="1",
    )
    shutil.rmtree(short_tmp, ignore_errors=True)


def run(
    args: list[str], env: dict[str, str], cwd: Path, timeout_s: float = 120
) -> tuple[subprocess.CompletedProcess, float]:
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout_s
    )
    return proc, time.perf_counter() - t0


def assert_one_line_error(proc: subprocess.CompletedProcess, *fragments: str, only_line: bool = True) -> str:
    """Exit code 2, no traceback, one ``error:`` line (the last; the only stderr line if ``only_line``)."""
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2, f"exit {proc.returncode}\nstderr:\n{proc.stderr}"
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [ln for ln in lines if ln.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], proc.stderr
    if only_line:
        assert lines == errors, f"expected only the error line on stderr, got:\n{proc.stderr}"
    message = errors[0]
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    return message


def test_bad_yaml_search_space(tmp_path: Path, env: dict[str, str]) -> None:
    space = tmp_path / "bad.yaml"
    space.write_text("axis: params\nsizes: [p0, p1\n")
    proc, _ = run(["engine.scale", "--space", str(space)], env, tmp_path)
    assert_one_line_error(proc, "cannot parse", "bad.yaml", "fix the YAML")


def test_unknown_key_in_search_space(tmp_path: Path, env: dict[str, str]) -> None:
    space = tmp_path / "typo.yaml"
    space.write_text(TINY_SPACE.format(workers=1).replace("epochs: 1", "epoch: 1"))
    proc, _ = run(["engine.scale", "--space", str(space)], env, tmp_path)
    assert_one_line_error(proc, "epoch", "valid keys")


def test_unknown_model(tmp_path: Path, env: dict[str, str]) -> None:
    proc, _ = run(["engine.train", "--model", "nope"], env, tmp_path)
    assert_one_line_error(proc, "unknown model 'nope'", "choose one of", "fcn", "transformer")
    proc, _ = run(["engine.scale", "--axis", "params", "--model", "nope"], env, tmp_path)
    assert_one_line_error(proc, "unknown model 'nope'", "choose one of")


def test_missing_data_path(tmp_path: Path, env: dict[str, str]) -> None:
    missing = tmp_path / "no_such_dir" / "structures.extxyz"
    proc, _ = run(["engine.train", "--model", "fcn", "--data", str(missing), "--no-progress"], env, tmp_path)
    assert_one_line_error(proc, str(missing), "does not exist", "--data")


def test_unreachable_tracking_server_fails_fast(tmp_path: Path, env: dict[str, str]) -> None:
    space = tmp_path / "tiny.yaml"
    space.write_text(TINY_SPACE.format(workers=1))
    # port 9 (discard) has no listener here; MLflow's own client would retry for minutes
    proc, wall_s = run(["engine.scale", "--space", str(space), "--tracking-uri", "http://127.0.0.1:9"], env, tmp_path)
    assert_one_line_error(proc, "cannot reach MLflow tracking server http://127.0.0.1:9", "--tracking-uri")
    assert wall_s < 60, f"took {wall_s:.0f} s to give up"
    # nothing is left behind that would make the same command fail differently ("already exists; --resume")
    proc, _ = run(["engine.scale", "--space", str(space), "--tracking-uri", "http://127.0.0.1:9"], env, tmp_path)
    assert_one_line_error(proc, "cannot reach MLflow tracking server")


@pytest.mark.slow
def test_no_free_cpus_for_the_requested_workers(tmp_path: Path, env: dict[str, str]) -> None:
    space = tmp_path / "big.yaml"
    workers = (os.cpu_count() or 1) * 32
    space.write_text(TINY_SPACE.format(workers=workers))
    proc, _ = run(["engine.scale", "--space", str(space), "--name", "too-big"], env, tmp_path, timeout_s=180)
    # checked before anything is written: the one error line, and no sweep folder or MLflow store left behind
    assert_one_line_error(proc, f"needs {workers}", "CPUs", "this machine", "lower resources in the search space")
    assert not (Path(env["ENGINE_SWEEPS"]) / "too-big").exists()


def test_resume_with_a_checkpoint_from_another_model(tmp_path: Path, env: dict[str, str]) -> None:
    from engine.config import DataConfig, TrialConfig
    from engine.loop.loop import run_trial

    run_dir = tmp_path / "run"
    cfg = TrialConfig(
        model="fcn",
        preset="f0",
        data=DataConfig(emt_size=24, train_size=16, max_val=4, cache_dir=str(tmp_path / "cache")),
        epochs=1,
        batch_size=8,
        count_flops=False,
        threads=1,
        device="cpu",
    )
    run_trial(cfg, run_dir)
    args = ["engine.train", "--model", "schnet", "--preset", "s0", "--emt-size", "24", "--train-size", "16"]
    proc, _ = run([*args, "--epochs", "1", "--no-progress", "--run-dir", str(run_dir)], env, tmp_path)
    # the data summary goes to stdout; stderr holds only the error
    assert_one_line_error(proc, "is from model 'fcn', not 'schnet'", "fresh --run-dir")


def test_ui_port_in_use_and_server_uri(tmp_path: Path, env: dict[str, str]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        proc, _ = run(["engine.ui", "--port", str(port)], env, tmp_path)
    assert_one_line_error(proc, f"port {port}", "already in use", "--port")
    proc, _ = run(["engine.ui", "--tracking-uri", "http://127.0.0.1:9"], env, tmp_path)
    assert_one_line_error(proc, "already an MLflow server", "--tracking-uri")


# -- bad data files (issue 11): one line each, exit 2, never a signal, no run folder written ----------


def _labelled_frames(n: int = 12) -> list:
    from engine.data.emt import generate_records

    return [r.to_atoms() for r in generate_records(0, n, progress=False)]


def _train_on(path: Path, env: dict[str, str], cwd: Path, *extra: str) -> tuple[subprocess.CompletedProcess, Path]:
    run_dir = cwd / "run"
    args = ["engine.train", "--model", "fcn", "--preset", "f0", "--data", str(path), "--epochs", "1", "--no-progress"]
    proc, _ = run([*args, "--run-dir", str(run_dir), *extra], env, cwd)
    return proc, run_dir


@pytest.fixture(scope="module")
def aselmdb_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A complete 200-structure .aselmdb (~750 kB, many LMDB pages)."""
    from engine.data.emt import generate_records
    from engine.data.store import write_aselmdb

    path = tmp_path_factory.mktemp("lmdb") / "structures.aselmdb"
    write_aselmdb(generate_records(0, 200, progress=False), path)
    return path


@pytest.mark.parametrize("keep", [0.5, 0.01], ids=["half", "first-pages"])
def test_truncated_aselmdb_is_one_line_not_sigbus(
    keep: float, aselmdb_file: Path, tmp_path: Path, env: dict[str, str]
) -> None:
    """A partial download: LMDB would map pages past the end of the file and die of SIGBUS (exit 135)."""
    data = aselmdb_file.read_bytes()
    cut = tmp_path / "partial.aselmdb"
    cut.write_bytes(data[: max(8192, int(len(data) * keep))])  # keep both meta pages: the header is intact
    proc, run_dir = _train_on(cut, env, tmp_path)
    assert proc.returncode >= 0, f"killed by signal {-proc.returncode}"
    message = assert_one_line_error(proc, str(cut), "truncated", f"{len(data):,} bytes")
    assert "download or copy it again" in message
    assert not run_dir.exists()


def test_corrupt_or_foreign_aselmdb_is_one_line(aselmdb_file: Path, tmp_path: Path, env: dict[str, str]) -> None:
    import random

    junk = tmp_path / "junk.aselmdb"
    junk.write_bytes(random.Random(0).randbytes(50_000))
    proc, run_dir = _train_on(junk, env, tmp_path)
    assert_one_line_error(proc, str(junk), "not an LMDB file", "valid .aselmdb")
    assert not run_dir.exists()
    # overwritten pages in the middle (a disk or copy error): LMDB's own check, still one line
    data = bytearray(aselmdb_file.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 16384] = random.Random(1).randbytes(16384)
    broken = tmp_path / "broken.aselmdb"
    broken.write_bytes(bytes(data))
    proc, run_dir = _train_on(broken, env, tmp_path)
    assert proc.returncode >= 0, f"killed by signal {-proc.returncode}"
    assert_one_line_error(proc, str(broken), "MDB_")
    assert not run_dir.exists()


def test_file_without_any_labels(tmp_path: Path, env: dict[str, str]) -> None:
    """Structures with no energy, forces or stress used to train to a validation loss of 0 and 'succeed'."""
    import ase
    import ase.io

    bare = [ase.Atoms(a.numbers, a.positions, cell=a.cell, pbc=a.pbc) for a in _labelled_frames()]
    path = tmp_path / "bare.extxyz"
    ase.io.write(path, bare, format="extxyz")
    proc, run_dir = _train_on(path, env, tmp_path)
    assert_one_line_error(proc, f"no energy, forces or stress in {path}")
    assert not run_dir.exists()


def test_data_format_names_what_the_file_name_hides(tmp_path: Path, env: dict[str, str]) -> None:
    """An extxyz file named ``*.out``: ASE guesses Quantum ESPRESSO output from the name and finds nothing."""
    import ase.io

    path = tmp_path / "frames.out"
    ase.io.write(path, _labelled_frames(), format="extxyz")
    proc, run_dir = _train_on(path, env, tmp_path)
    assert_one_line_error(proc, str(path), "espresso-out", "--data-format")
    assert not run_dir.exists()
    proc, _ = _train_on(path, env, tmp_path, "--data-format", "extxzy")  # a typo
    assert_one_line_error(proc, "unknown data format 'extxzy'", "extxyz")
    proc, run_dir = _train_on(path, env, tmp_path, "--data-format", "extxyz")
    assert proc.returncode == 0, proc.stderr
    assert (run_dir / "checkpoint.pt").is_file()
    assert json.loads((run_dir / "config.json").read_text())["data"]["format"] == "extxyz"
    # the same option in a config file (data.format)
    config = tmp_path / "trial.yaml"
    config.write_text(f"model: fcn\npreset: f0\nepochs: 1\ndata: {{path: {path}, format: extxyz}}\n")
    proc, _ = run(["engine.train", "--config", str(config), "--no-progress", "--run-dir", str(tmp_path / "r2")], env,
                  tmp_path)
    assert proc.returncode == 0, proc.stderr
