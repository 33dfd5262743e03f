"""Sweeps on a real multi-node Ray cluster on this machine: a head with 0 CPUs (like cluster.yaml's)
and worker nodes as separate raylets (``ray.cluster_utils.Cluster``). A DDP trial spans two nodes; a
node killed mid-trial costs nothing but the epoch in flight; 50 tiny trials leave nothing behind.

One cluster serves the module (a start costs ~15 s); each sweep writes into its test's tmp_path.
The drivers run in this process (the CLI against a cluster: test_autoscaler.py).
"""

from __future__ import annotations

import io
import json
import shutil

import psutil
import pytest
from mlflow import MlflowClient
from ray import tune

from engine.sweep.runner import SweepOptions, prepare_data, run_sweep
from engine.sweep.spaces import expand, space_from_dict
from tests.sweep.cluster_harness import kill_under, new_base, processes_under, ray_env, start_cluster
from tests.sweep.conftest import TINY_FIXED

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster():
    """Head (0 CPUs) + two 1-CPU worker nodes; every process it started is gone afterwards."""
    base = new_base("rc")
    mp = pytest.MonkeyPatch()
    for key, value in ray_env(base).items():
        if key == "RAY_AUTH_MODE":
            # unset here: Ray turns token mode on for this process when it starts the head (and refreshes its
            # cached config, which a variable set now would not); undo() then removes what Ray set
            mp.delenv(key, raising=False)
        else:
            mp.setenv(key, value)  # the raylets and the in-process drivers read these
    try:
        handle = start_cluster([1, 1], base)
    except BaseException:
        kill_under(base)  # a head that came up before the failure
        shutil.rmtree(base, ignore_errors=True)
        mp.undo()
        raise
    try:
        yield handle
    finally:
        left = handle.stop()
        mp.undo()
        assert left == [], f"Ray processes left behind: {left}"
        assert processes_under(base) == []


def space_values(**changes) -> dict:
    values = {
        "axis": "params",
        "model": "transformer",
        "sizes": ["p0"],
        "train_sizes": [40],
        "seeds": [0],
        "fixed": json.loads(json.dumps(TINY_FIXED)),
    }
    values.update(changes)
    return values


def warm_cache(values: dict) -> None:
    """Build the tiny dataset once here (this machine's nodes share ENGINE_CACHE), not in each DDP rank."""
    prepare_data([spec.config.data for spec in expand(space_from_dict(values, source="tiny"))])


def trial_runs(uri: str, sweep: str) -> list:
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(sweep)
    return [r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("engine.kind") == "trial"]


def test_ddp_trial_spans_two_nodes(cluster, engine_env):
    # 0.9 CPU per worker on 1-CPU nodes: the two workers of a trial cannot share a node
    values = space_values(resources={"workers": 2, "cpus_per_worker": 0.9})
    warm_cache(values)
    out = io.StringIO()
    result = run_sweep(space_from_dict(values, source="tiny"),
                       SweepOptions(name="ddp-nodes", address=cluster.address, stream=out))
    assert "visible from 2 worker node(s)" in out.getvalue()
    assert not result.interrupted and result.trials["transformer-p0-n40-s0"]["status"] == "completed"
    trial = engine_env["sweeps"] / "ddp-nodes" / "trials" / "transformer-p0-n40-s0"
    ranks = [json.loads((trial / "workers" / f"rank{k}.json").read_text()) for k in (0, 1)]
    assert ranks[0]["node_id"] != ranks[1]["node_id"], ranks
    rows = [json.loads(line) for line in (trial / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0, 1, 2]
    runs = trial_runs(engine_env["uri"], "ddp-nodes")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert (trial / "sweep_status.json").is_file()


class RemoveTrialNode(tune.Callback):
    """On the target trial's first trained epoch, add a spare node and remove the node the trial runs on
    (its raylet and its workers): synchronized on the trial's own report and stored attempt file.

    No race with the trial: a one-worker trial blocks in ``tune.report`` until the driver asks for its next
    result, which Tune does only after this callback returns. The trial's process (pid from attempts.json) is
    killed and seen gone here, before its raylet: a worker whose raylet dies notices only at its next
    liveness check, and could otherwise finish its remaining epochs in between."""

    def __init__(self, handle, storage_dir, trial_id: str) -> None:
        self.handle = handle
        self.storage_dir = storage_dir
        self.trial_id = trial_id
        self.removed = None

    def __getstate__(self):  # Tune saves its callbacks with the experiment state; the cluster handle stays here
        return {**self.__dict__, "handle": None}

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if self.removed is not None or trial.config["trial"]["trial_id"] != self.trial_id or result["epoch"] != 1:
            return
        attempt = json.loads((self.storage_dir / "trials" / self.trial_id / "attempts.json").read_text())
        node = next(n for n in self.handle.cluster.list_all_nodes() if n.node_id == attempt["node_id"])
        self.handle.nodes.append(self.handle.cluster.add_node(num_cpus=1))
        trial_process = psutil.Process(int(attempt["pid"]))
        trial_process.kill()
        trial_process.wait(timeout=60)  # a hang guard only: returns as soon as the process is gone
        self.handle.cluster.remove_node(node, allow_graceful=False)
        self.handle.nodes.remove(node)
        self.removed = attempt["node_id"]


def test_node_lost_mid_trial_resumes_on_another_node(cluster, engine_env):
    fixed = json.loads(json.dumps(TINY_FIXED))
    fixed["epochs"] = 4
    warm_cache(space_values(fixed=fixed))
    space = space_from_dict(space_values(fixed=fixed), source="tiny")
    storage_dir = engine_env["tmp"] / "object-store"
    target = "transformer-p0-n40-s0"
    killer = RemoveTrialNode(cluster, storage_dir, target)
    options = SweepOptions(name="node-loss", address=cluster.address, storage=storage_dir.as_uri(),
                           callbacks=[killer], max_failures=3)
    result = run_sweep(space, options)
    assert killer.removed is not None
    assert not result.interrupted and result.trials[target]["status"] == "completed"
    stored = storage_dir / "trials" / target  # state went through pyarrow's file system (a file:// URI)
    attempt = json.loads((stored / "attempts.json").read_text())
    assert attempt["attempts"] == 2 and attempt["node_id"] != killer.removed
    rows = [json.loads(line) for line in (stored / "metrics.jsonl").read_text().splitlines()]
    per_epoch = rows[1]["step"]
    assert [r["epoch"] for r in rows] == [0, 1, 2, 3, 4]
    assert [r["step"] for r in rows] == [k * per_epoch for k in range(5)]  # the step count continued
    runs = trial_runs(engine_env["uri"], "node-loss")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"  # 0 lost, 0 duplicate, 0 RUNNING
    client = MlflowClient(engine_env["uri"])
    assert [m.step for m in client.get_metric_history(runs[0].info.run_id, "step")] == [0, 1, 2, 3, 4]
    resumed = [m.value for m in client.get_metric_history(runs[0].info.run_id, "resumed_from_step")]
    assert max(resumed) >= per_epoch, "the second attempt started from a checkpoint, not from step 0"
    assert json.loads((stored / "sweep_status.json").read_text())["status"] == "completed"


def test_soak_fifty_tiny_trials_two_at_a_time(cluster, engine_env):
    fixed = json.loads(json.dumps(TINY_FIXED))
    fixed["epochs"] = 1
    values = space_values(seeds=list(range(50)), fixed=fixed, resources={"workers": 1, "max_concurrent": 2})
    warm_cache(values)
    result = run_sweep(space_from_dict(values, source="tiny"),
                       SweepOptions(name="soak", address=cluster.address, progress_interval_s=30.0))
    assert not result.interrupted
    assert len(result.trials) == 50 and all(t["status"] == "completed" for t in result.trials.values())
    runs = trial_runs(engine_env["uri"], "soak")
    ids = [r.data.tags["engine.trial_id"] for r in runs]
    assert len(ids) == 50 and sorted(ids) == sorted(result.trials)  # none lost, none duplicated
    assert all(r.info.status == "FINISHED" for r in runs)  # none left RUNNING
    markers = list((engine_env["sweeps"] / "soak" / "trials").glob("*/sweep_status.json"))
    assert len(markers) == 50  # (the module's fixture checks that stopping the cluster leaves no process)
