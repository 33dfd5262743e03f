"""Bookkeeping without races: one driver per sweep (a lock), completion markers that agree with MLflow.

The lock is held by a real second process; the reconcile cases are the two states a driver killed
between "close the MLflow run" and "write the marker" (or a store that lost a close) leaves behind.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys

import pytest
from mlflow import MlflowClient

from engine.errors import ConfigError
from engine.sweep.lock import LOCK_FILE, DriverLock
from engine.sweep.runner import SweepOptions, run_sweep
from engine.sweep.spaces import space_from_dict
from tests.sweep.conftest import TINY_FIXED

HOLD = "import sys; from engine.sweep.lock import DriverLock; DriverLock(sys.argv[1], 'x').acquire(); " \
       "print('held', flush=True); sys.stdin.read()"


@pytest.fixture
def holder(engine_env):
    """A live process (not this one) holding the lock of sweep ``locked``."""
    sweep_dir = engine_env["sweeps"] / "locked"
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(sweep_dir)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    try:
        yield proc, sweep_dir
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)


def test_second_driver_gets_one_error_line(holder, engine_env, tmp_path):
    proc, sweep_dir = holder
    space = tmp_path / "tiny.yaml"
    space.write_text("# tiny\naxis: params\nmodel: transformer\nsizes: [p0]\ntrain_sizes: [40]\nseeds: [0]\n")
    env = {**os.environ, "ENGINE_SWEEPS": str(engine_env["sweeps"]), "MLFLOW_TRACKING_URI": engine_env["uri"]}
    done = subprocess.run([sys.executable, "-m", "engine.scale", "--space", str(space), "--name", "locked",
                           "--no-report"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert "Traceback" not in done.stderr and len(errors) == 1, done.stderr[-2000:]
    assert errors[0].startswith("error: sweep 'locked' is being run by pid "), errors
    assert f"pid {proc.pid} " in errors[0]
    assert json.loads((sweep_dir / LOCK_FILE).read_text())["pid"] == proc.pid  # the holder's lock untouched
    assert sorted(p.name for p in sweep_dir.iterdir()) == [LOCK_FILE]  # nothing written


def test_stale_lock_of_a_dead_driver_is_taken_over(holder):
    proc, sweep_dir = holder
    with pytest.raises(ConfigError, match="is being run by pid"):
        DriverLock(sweep_dir, "locked").acquire()
    proc.send_signal(signal.SIGKILL)  # the driver dies without releasing its lock
    proc.wait(timeout=30)
    lock = DriverLock(sweep_dir, "locked")
    lock.acquire()
    assert json.loads((sweep_dir / LOCK_FILE).read_text())["pid"] == os.getpid()
    lock.release()
    assert not (sweep_dir / LOCK_FILE).exists()


@pytest.mark.slow
def test_resume_reconciles_markers_with_mlflow(ray_session, engine_env):
    values = {"axis": "params", "model": "transformer", "sizes": ["p0", "p1"], "train_sizes": [40], "seeds": [0],
              "fixed": json.loads(json.dumps(TINY_FIXED))}
    space = space_from_dict(values, source="tiny")
    first = run_sweep(space, SweepOptions(name="recon"))
    assert not first.interrupted
    trials = engine_env["sweeps"] / "recon" / "trials"
    client = MlflowClient(engine_env["uri"])
    exp = client.get_experiment_by_name("recon")

    def children():
        runs = client.search_runs([exp.experiment_id], "tags.`engine.kind` = 'trial'")
        return {r.data.tags["engine.trial_id"]: r for r in runs}

    # p0: the driver died after closing the run, before writing the marker
    (trials / "transformer-p0-n40-s0" / "sweep_status.json").unlink()
    # p1: the run was left open (KILLED by the next start) although the marker says completed
    p1 = children()["transformer-p1-n40-s0"].info.run_id
    client.set_terminated(p1, status="KILLED")
    out = io.StringIO()
    again = run_sweep(space, SweepOptions(name="recon", resume=True, stream=out))
    assert "reconciled 2 trial(s)" in out.getvalue() and "2 trial(s) already finished" in out.getvalue()
    assert sorted(again.skipped) == ["transformer-p0-n40-s0", "transformer-p1-n40-s0"]
    for trial in ("transformer-p0-n40-s0", "transformer-p1-n40-s0"):
        assert json.loads((trials / trial / "attempts.json").read_text())["attempts"] == 1  # not retrained
        assert json.loads((trials / trial / "sweep_status.json").read_text())["status"] == "completed"
    runs = children()
    assert len(runs) == 2 and all(r.info.status == "FINISHED" for r in runs.values())
    assert [m.step for m in client.get_metric_history(p1, "epoch")] == [0, 1, 2]  # nothing logged twice
