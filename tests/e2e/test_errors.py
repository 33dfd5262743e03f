"""Every error a user reads is one ``error: ...`` line that names the fix, with no traceback.

Each case runs the real CLI in a subprocess (``python -m engine.train|scale|ui``) inside a
temporary folder, with every default location (cache, sweeps, reports, MLflow) pointed there.
"""

from __future__ import annotations

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
