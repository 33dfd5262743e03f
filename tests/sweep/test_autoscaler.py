"""``cluster.local.yaml`` with Ray's fake multi-node autoscaler: the real ``python -m engine.scale
--address`` on a cluster that starts with no worker node, as an autoscaling cluster from cluster.yaml does.

Pending DDP trials make the autoscaler add nodes, the two workers of a trial land on two of them, a
trial that no node type can hold stops the driver with one line before anything is written, and a
driver killed mid-sweep resumes with ``--resume``.
One head serves the module; it and every node it started are gone afterwards.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml
from mlflow import MlflowClient

from engine.sweep.runner import prepare_data
from engine.sweep.spaces import expand, space_from_dict
from tests.sweep.cluster_harness import processes_under, start_autoscaling_cluster
from tests.sweep.conftest import TINY_FIXED

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def autoscaling():
    handle = start_autoscaling_cluster()
    try:
        yield handle
    finally:
        base = handle.base
        left = handle.stop()
        assert left == [] and processes_under(base) == [], f"Ray processes left behind: {left}"


def run_scale(autoscaling, engine_env, values: dict, name: str) -> subprocess.CompletedProcess:
    path = engine_env["tmp"] / f"{name}.yaml"
    path.write_text("# test space\n" + yaml.safe_dump(values))
    env = {
        **os.environ,
        "ENGINE_SWEEPS": str(engine_env["sweeps"]),
        "ENGINE_CACHE": str(engine_env["cache"]),
        "MLFLOW_TRACKING_URI": engine_env["uri"],
        **autoscaling.env,
    }
    cmd = [sys.executable, "-m", "engine.scale", "--space", str(path), "--name", name, "--no-report",
           "--address", autoscaling.address]
    return subprocess.run(cmd, cwd=engine_env["tmp"], env=env, capture_output=True, text=True, timeout=900)


def ddp_space(**resources) -> dict:
    return {
        "axis": "params",
        "model": "transformer",
        "sizes": ["p0", "p1"],
        "train_sizes": [40],
        "seeds": [0],
        "fixed": json.loads(json.dumps(TINY_FIXED)),
        "resources": {"workers": 2, **resources},
    }


def test_trial_no_node_type_holds_stops_with_one_line(autoscaling, engine_env):
    done = run_scale(autoscaling, engine_env, ddp_space(cpus_per_worker=2), "too-big")
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "worker.cpu" in errors[0] and "no node type" in errors[0], done.stderr[-2000:]
    assert not (engine_env["sweeps"] / "too-big").exists()  # nothing written


def test_ddp_sweep_on_an_empty_autoscaling_cluster(autoscaling, engine_env):
    values = ddp_space(cpus_per_worker=0.9)  # two 0.9-CPU workers never share a 1-CPU node
    values["sizes"] = ["p0"]
    values["fixed"]["epochs"] = 1
    prepare_data([spec.config.data for spec in expand(space_from_dict(values, source="tiny"))])
    done = run_scale(autoscaling, engine_env, values, "autoscaled")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "visible from 0 worker node(s)" in done.stdout  # it started before any worker node existed

    trials = engine_env["sweeps"] / "autoscaled" / "trials"
    nodes = set()
    for trial in ("transformer-p0-n40-s0",):
        ranks = [json.loads((trials / trial / "workers" / f"rank{k}.json").read_text()) for k in (0, 1)]
        assert ranks[0]["node_id"] != ranks[1]["node_id"], ranks  # the DDP trial spans two nodes
        nodes |= {r["node_id"] for r in ranks}
        assert json.loads((trials / trial / "sweep_status.json").read_text())["status"] == "completed"
    head = "f" * 51 + "00000"  # the fake provider's ids: the head, then ffff…00001, ffff…00002, … as it adds nodes
    assert len(nodes) >= 2 and all(n.startswith("ffff") and n != head for n in nodes), nodes

    client = MlflowClient(engine_env["uri"])
    exp = client.get_experiment_by_name("autoscaled")
    runs = [r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("engine.kind") == "trial"]
    assert [r.data.tags["engine.trial_id"] for r in runs] == ["transformer-p0-n40-s0"]
    assert all(r.info.status == "FINISHED" for r in runs)


def test_killed_driver_resumes_on_the_cluster(autoscaling, engine_env):
    """SIGKILL the driver once trial 1 is done and trial 2 stored epoch 1 (trial 2's process frozen there
    first, so nothing races the kill); ``--resume`` then finishes the sweep: 0 lost, 0 duplicate, 0 RUNNING."""
    values = ddp_space(cpus_per_worker=1)
    values["resources"] = {"workers": 1, "cpus_per_worker": 1, "max_concurrent": 1}
    values["fixed"]["epochs"] = 3
    prepare_data([spec.config.data for spec in expand(space_from_dict(values, source="tiny"))])
    path = engine_env["tmp"] / "killed.yaml"
    path.write_text("# test space\n" + yaml.safe_dump(values))
    env = {**os.environ, "ENGINE_SWEEPS": str(engine_env["sweeps"]), "ENGINE_CACHE": str(engine_env["cache"]),
           "MLFLOW_TRACKING_URI": engine_env["uri"], **autoscaling.env}
    cmd = [sys.executable, "-m", "engine.scale", "--name", "killed", "--no-report", "--address", autoscaling.address]
    trials = engine_env["sweeps"] / "killed" / "trials"
    first, second = trials / "transformer-p0-n40-s0", trials / "transformer-p1-n40-s0"
    log = open(engine_env["tmp"] / "driver.log", "w")  # noqa: SIM115 - closed below
    driver = subprocess.Popen([*cmd, "--space", str(path)], cwd=engine_env["tmp"], env=env, stdout=log,
                              stderr=subprocess.STDOUT)
    frozen = None
    try:
        deadline = time.time() + 600  # a hang guard only: the loop waits on the engine's files
        while frozen is None:
            rows = (second / "metrics.jsonl").read_text().splitlines() if (second / "metrics.jsonl").exists() else []
            if (first / "sweep_status.json").exists() and len(rows) >= 2 and (second / "attempts.json").exists():
                frozen = int(json.loads((second / "attempts.json").read_text())["pid"])
                os.kill(frozen, signal.SIGSTOP)
                break
            assert driver.poll() is None and time.time() < deadline, (engine_env["tmp"] / "driver.log").read_text()
            time.sleep(0.05)
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=60)
        log.close()
        os.kill(frozen, signal.SIGCONT)  # its job is gone: Ray ends it; it must not be stuck forever
        resumed = subprocess.run([*cmd, "--resume"], cwd=engine_env["tmp"], env=env, capture_output=True,
                                 text=True, timeout=900)
    finally:
        if driver.poll() is None:
            driver.kill()
        if frozen is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(frozen, signal.SIGKILL)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "1 trial(s) already finished" in resumed.stdout
    assert json.loads((first / "attempts.json").read_text())["attempts"] == 1  # not retrained
    assert json.loads((second / "attempts.json").read_text())["attempts"] == 2  # continued
    rows = [json.loads(line) for line in (second / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0, 1, 2, 3] and rows[-1]["step"] == 3 * rows[1]["step"]
    client = MlflowClient(engine_env["uri"])
    exp = client.get_experiment_by_name("killed")
    runs = client.search_runs([exp.experiment_id])
    children = [r for r in runs if r.data.tags.get("engine.kind") == "trial"]
    assert sorted(r.data.tags["engine.trial_id"] for r in children) == [first.name, second.name]
    assert all(r.info.status == "FINISHED" for r in runs)
    p1 = next(r for r in children if r.data.tags["engine.trial_id"] == "transformer-p1-n40-s0")
    assert [m.step for m in client.get_metric_history(p1.info.run_id, "epoch")] == [0, 1, 2, 3]
