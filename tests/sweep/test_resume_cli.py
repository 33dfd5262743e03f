"""Interrupt the real ``python -m engine.scale`` driver mid-sweep, then ``--resume`` it.

The resumed sweep must not retrain finished trials, must continue the interrupted one from its
checkpoint, and must leave exactly one MLflow run per trial, none stuck RUNNING.

No timing: the interrupt follows the engine's own state (the first trial's completion marker, the
second trial's stored epoch 1), and the second trial's process is frozen (SIGSTOP, its pid from the
trial's attempts.json) before the interrupt, so it cannot finish while the driver shuts down.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from tests.sweep.conftest import TINY_FIXED

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
EPOCHS = 4


def stored_rows(trial: Path) -> list[str]:
    path = trial / "metrics.jsonl"
    return path.read_text().splitlines() if path.exists() else []


def freeze_when_checkpointed(trial: Path) -> int | None:
    """The trial process's pid, frozen, once it has stored epoch 1 (None while it has not)."""
    if len(stored_rows(trial)) < 2 or not (trial / "attempts.json").exists():
        return None
    pid = int(json.loads((trial / "attempts.json").read_text())["pid"])
    os.kill(pid, signal.SIGSTOP)
    return pid


def write_space(path: Path) -> Path:
    fixed = json.loads(json.dumps(TINY_FIXED))
    fixed["epochs"] = EPOCHS
    space = {
        "axis": "params",
        "model": "transformer",
        "sizes": ["p0", "p1", "p2"],
        "train_sizes": [40],
        "seeds": [0],
        "fixed": fixed,
        "resources": {"workers": 1, "cpus_per_worker": 1, "gpus_per_worker": 0, "max_concurrent": 1},
    }
    path.write_text("# tiny params space for the resume test\n" + yaml.safe_dump(space))
    return path


def test_interrupted_driver_resumes_without_retraining(tmp_path, shared_cache):
    ray_tmp = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))  # short: unix socket paths are limited
    token = ray_tmp / "auth_token"
    token.write_text(secrets.token_hex(32))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = dict(
        os.environ,
        ENGINE_SWEEPS=str(tmp_path / "sweeps"),
        ENGINE_REPORTS=str(tmp_path / "reports"),
        ENGINE_CACHE=str(shared_cache),
        MLFLOW_TRACKING_URI=uri,
        RAY_TMPDIR=str(ray_tmp),
        TMPDIR=str(ray_tmp),
        RAY_AUTH_TOKEN_PATH=str(token),
        PYTHONUNBUFFERED="1",
    )
    space = write_space(tmp_path / "tiny.yaml")
    cmd = [sys.executable, "-m", "engine.scale", "--space", str(space), "--name", "resume-me", "--no-report"]
    trials = tmp_path / "sweeps" / "resume-me" / "trials"
    first, second = trials / "transformer-p0-n40-s0", trials / "transformer-p1-n40-s0"
    frozen = None
    try:
        log = open(tmp_path / "first.log", "w")  # noqa: SIM115 - closed after the process ends
        proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.time() + 400  # a hang guard only: the loop waits on the engine's files
        # interrupt once p0 is done and p1 has checkpointed at least one epoch (then p1 is frozen there)
        while frozen is None:
            if (first / "sweep_status.json").exists():
                frozen = freeze_when_checkpointed(second)
            if frozen is None:
                assert proc.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
                assert time.time() < deadline, "no progress:\n" + (tmp_path / "first.log").read_text()[-3000:]
                time.sleep(0.05)
        assert len(stored_rows(second)) < EPOCHS + 1  # frozen before its last epoch: it cannot complete now
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=300)
        log.close()
        out = (tmp_path / "first.log").read_text()
        assert code == 130, out[-3000:]
        assert "--resume" in out
        assert not (second / "sweep_status.json").exists()

        client = MlflowClient(uri)
        exp = client.get_experiment_by_name("resume-me")
        runs = client.search_runs([exp.experiment_id])
        assert all(r.info.status != "RUNNING" for r in runs), [(r.info.run_name, r.info.status) for r in runs]

        done = subprocess.run([*cmd[:3], "--name", "resume-me", "--resume", "--no-report"], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=400)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        assert "1 trial(s) already finished" in done.stdout
    finally:
        if proc.poll() is None:
            proc.kill()
        if frozen is not None:  # the interrupted driver's Ray ends it; make sure, by its pid
            with contextlib.suppress(ProcessLookupError):
                os.kill(frozen, signal.SIGKILL)
        shutil.rmtree(ray_tmp, ignore_errors=True)

    assert json.loads((first / "attempts.json").read_text())["attempts"] == 1  # not retrained
    assert json.loads((second / "attempts.json").read_text())["attempts"] == 2  # continued
    rows = [json.loads(line) for line in (second / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == list(range(EPOCHS + 1))
    assert rows[-1]["step"] == EPOCHS * rows[1]["step"]

    runs = client.search_runs([exp.experiment_id])
    children = [r for r in runs if r.data.tags["engine.kind"] == "trial"]
    assert sorted(r.data.tags["engine.trial_id"] for r in children) == [
        "transformer-p0-n40-s0", "transformer-p1-n40-s0", "transformer-p2-n40-s0"
    ]
    assert all(r.info.status == "FINISHED" for r in runs)
    assert len([r for r in runs if r.data.tags["engine.kind"] == "sweep"]) == 1
    p1 = next(r for r in children if r.data.tags["engine.trial_id"] == "transformer-p1-n40-s0")
    assert [m.step for m in client.get_metric_history(p1.info.run_id, "epoch")] == list(range(EPOCHS + 1))
