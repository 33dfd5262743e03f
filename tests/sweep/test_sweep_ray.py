"""Real Ray Tune sweeps on tiny spaces: MLflow bookkeeping, a killed worker, DDP against one worker.

One local Ray session serves the whole module (``ray_session``); every sweep writes into the
test's tmp_path (``engine_env``).
"""

from __future__ import annotations

import json
import os
import signal

import pytest
from mlflow import MlflowClient
from ray import tune

from engine.errors import ConfigError
from engine.sweep.runner import SweepOptions, run_sweep
from engine.sweep.spaces import space_from_dict
from tests.sweep.conftest import TINY_FIXED

pytestmark = pytest.mark.slow


def tiny_space(**changes):
    values = {
        "axis": "params",
        "model": "transformer",
        "sizes": ["p0", "p1"],
        "train_sizes": [40],
        "seeds": [0],
        "fixed": json.loads(json.dumps(TINY_FIXED)),
    }
    values.update(changes)
    return space_from_dict(values, source="tiny")


def child_runs(uri, sweep):
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(sweep)
    runs = client.search_runs([exp.experiment_id])
    return client, [r for r in runs if r.data.tags.get("engine.kind") == "trial"], runs


def test_params_sweep_logs_every_trial_once(ray_session, engine_env):
    space = tiny_space()
    result = run_sweep(space, SweepOptions(name="tiny-params", progress_interval_s=1.0))
    assert not result.interrupted
    assert {k: t["status"] for k, t in result.trials.items()} == {
        "transformer-p0-n40-s0": "completed",
        "transformer-p1-n40-s0": "completed",
    }
    client, children, runs = child_runs(engine_env["uri"], "tiny-params")
    parents = [r for r in runs if r.data.tags.get("engine.kind") == "sweep"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert parents[0].data.tags["engine.axis"] == "params"
    assert "engine.git_commit" in parents[0].data.tags and "engine.version.ray" in parents[0].data.tags
    assert sorted(r.data.tags["engine.trial_id"] for r in children) == sorted(result.trials)
    for run in children:
        trial = result.trials[run.data.tags["engine.trial_id"]]
        assert run.info.status == "FINISHED" and run.data.tags["engine.status"] == "completed"
        assert run.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert run.data.tags["engine.checkpoint_path"].endswith("checkpoint.pt")
        assert os.path.exists(run.data.tags["engine.checkpoint_path"])
        params = run.data.params
        assert params["model"] == "transformer" and params["train_size"] == "40" and params["epochs"] == "2"
        assert int(params["n_params"]) > 0 and params["seed"] == "0" and params["optim.lr"] == "0.003"
        for key in ("val_loss", "val_energy_mae_mev_per_atom", "val_forces_mae_mev_per_a", "flops_cum", "wall_s",
                    "train_loss", "throughput_structures_per_s"):
            history = client.get_metric_history(run.info.run_id, key)
            assert [m.step for m in history] == [0, 1, 2], key
        flops = [m.value for m in client.get_metric_history(run.info.run_id, "flops_cum")]
        assert flops[0] == 0 < flops[1] < flops[2] == pytest.approx(trial["flops_cum"])
    # the same name again is refused; --resume finds everything finished and adds no runs
    with pytest.raises(ConfigError, match="already exists"):
        run_sweep(space, SweepOptions(name="tiny-params"))
    again = run_sweep(space, SweepOptions(name="tiny-params", resume=True))
    assert sorted(again.skipped) == sorted(result.trials)
    _, _, runs_after = child_runs(engine_env["uri"], "tiny-params")
    assert len(runs_after) == len(runs)
    assert all(r.info.status == "FINISHED" for r in runs_after)


class KillWorkerOnce(tune.Callback):
    """Kills the trial's worker process (SIGKILL) as soon as it has reported epoch 1."""

    def __init__(self, trial_id: str) -> None:
        self.trial_id = trial_id
        self.killed_pid = None

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if self.killed_pid is None and trial.config["trial"]["trial_id"] == self.trial_id and result["epoch"] == 1:
            self.killed_pid = result["pid"]
            os.kill(self.killed_pid, signal.SIGKILL)


def test_killed_worker_resumes_from_its_checkpoint(ray_session, engine_env):
    fixed = json.loads(json.dumps(TINY_FIXED))
    fixed["epochs"] = 4
    space = tiny_space(sizes=["p1"], fixed=fixed)
    target = "transformer-p1-n40-s0"
    killer = KillWorkerOnce(target)
    result = run_sweep(space, SweepOptions(name="tiny-kill", callbacks=[killer], max_failures=2))
    assert killer.killed_pid is not None
    trial = result.trials[target]
    assert trial["status"] == "completed"
    run_dir = engine_env["sweeps"] / "tiny-kill" / "trials" / target
    assert json.loads((run_dir / "attempts.json").read_text())["attempts"] == 2
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0, 1, 2, 3, 4]  # the checkpoint's history, continued
    steps_per_epoch = rows[1]["step"]
    assert [r["step"] for r in rows] == [0, steps_per_epoch, 2 * steps_per_epoch, 3 * steps_per_epoch,
                                         4 * steps_per_epoch]
    client, children, _ = child_runs(engine_env["uri"], "tiny-kill")
    assert len(children) == 1 and children[0].info.status == "FINISHED"
    run_id = children[0].info.run_id
    attempts = client.get_metric_history(run_id, "attempt")
    resumed = [m for m in attempts if m.value == 2]
    assert resumed, "the second attempt reported"
    resumed_from = client.get_metric_history(run_id, "resumed_from_step")
    second_start = [m.value for m in resumed_from if m.step >= resumed[0].step]
    assert second_start[0] >= steps_per_epoch, "attempt 2 resumed from a checkpoint, not from step 0"
    steps = client.get_metric_history(run_id, "step")
    assert [m.step for m in steps] == [0, 1, 2, 3, 4]  # every epoch logged once
    assert [m.value for m in steps] == [r["step"] for r in rows]


def test_ddp_two_workers_match_one_worker(ray_session, engine_env):
    fixed = json.loads(json.dumps(TINY_FIXED))
    fixed["epochs"] = 2
    one = tiny_space(sizes=["p0"], fixed=fixed)
    two = tiny_space(sizes=["p0"], fixed=fixed, resources={"workers": 2, "cpus_per_worker": 0.5})
    r1 = run_sweep(one, SweepOptions(name="ddp-1"))
    r2 = run_sweep(two, SweepOptions(name="ddp-2"))
    t1 = r1.trials["transformer-p0-n40-s0"]
    t2 = r2.trials["transformer-p0-n40-s0"]
    assert t1["status"] == t2["status"] == "completed"
    assert t2["last"]["step"] == t1["last"]["step"]
    for key in ("val_loss", "train_loss", "val_energy_mae_mev_per_atom", "val_forces_mae_mev_per_a"):
        assert t2["last"][key] == pytest.approx(t1["last"][key], rel=1e-4), key
    _, children, _ = child_runs(engine_env["uri"], "ddp-2")
    assert len(children) == 1 and children[0].info.status == "FINISHED"


def write_yaml(path, values):
    import yaml

    path.write_text("# test space\n" + yaml.safe_dump(values))
    return path


def test_compute_sweep_runs_the_frontier_policy_and_prints_fraction(ray_session, engine_env, capsys):
    from engine.scale import main
    from engine.sweep.frontier_policy import FrontierPolicy

    fixed = json.loads(json.dumps(TINY_FIXED))
    fixed["epochs"] = 40
    budgets = [2.5e8, 7.5e8, 2.25e9]
    space = write_yaml(engine_env["tmp"] / "compute.yaml", {
        "axis": "compute", "model": "transformer", "sizes": ["p0", "p1", "p2"], "train_sizes": [40], "seeds": [0],
        "flop_budgets": budgets, "fixed": fixed,
    })
    assert main(["--axis", "compute", "--space", str(space), "--name", "tiny-compute", "--no-report"]) == 0
    out = capsys.readouterr().out
    assert "compute: used" in out and "% of the full grid" in out
    sweep = engine_env["sweeps"] / "tiny-compute"
    summary = json.loads((sweep / "summary.json").read_text())
    assert 0 < summary["compute_fraction"] <= 1.1  # the full grid's estimate is one; a step can pass a budget
    policy = FrontierPolicy.from_dict(json.loads((sweep / "frontier_policy.json").read_text()))
    assert policy.decided == len(budgets) - 2  # every rung before the last was decided at its barrier
    client, children, _ = child_runs(engine_env["uri"], "tiny-compute")
    assert len(children) == 3
    for run in children:
        key = run.data.tags["engine.trial_id"]
        trial = summary["trials"][key]
        assert run.info.status == "FINISHED"
        assert run.data.tags["engine.status"] == trial["status"] in ("completed", "stopped")
        assert (trial["status"] == "stopped") == (key in policy.stops)
        rungs = [int(m.value) for m in client.get_metric_history(run.info.run_id, "rung")]
        assert rungs == sorted(policy.losses[key])  # each rung reported once, none after a stop
        if trial["status"] == "completed":  # trained to the budget (the loop stops inside the epoch)
            assert rungs[-1] == len(budgets) - 1
            assert client.get_metric_history(run.info.run_id, "rung_flops")[-1].value >= budgets[-1] * 0.99


def client_epochs(uri: str, run_id: str) -> int:
    """The last epoch a run logged."""
    from mlflow import MlflowClient

    return int(max(m.value for m in MlflowClient(tracking_uri=uri).get_metric_history(run_id, "epoch")))


def test_tune_then_scale_with_lr_from(ray_session, engine_env, capsys):
    from engine.scale import main as scale_main
    from engine.tune import main as tune_main

    fixed = json.loads(json.dumps(TINY_FIXED))
    hpo = write_yaml(engine_env["tmp"] / "hpo.yaml", {
        "axis": "hpo", "model": "transformer", "sizes": ["p0"], "train_sizes": [40], "seeds": [0], "fixed": fixed,
        "search": {"lr_min": 1e-4, "lr_max": 1e-1, "batch_sizes": [4, 8], "num_samples": 3, "grace_epochs": 1},
    })
    assert tune_main(["--space", str(hpo), "--name", "tiny-hpo", "--no-report"]) == 0
    best = json.loads((engine_env["sweeps"] / "tiny-hpo" / "best_config.json").read_text())
    assert 1e-4 <= best["lr"] <= 1e-1 and best["batch_size"] in (4, 8)
    trial_dirs = list((engine_env["sweeps"] / "tiny-hpo" / "trials").iterdir())
    assert len(trial_dirs) == 3
    _, children, runs = child_runs(engine_env["uri"], "tiny-hpo")
    assert len(children) == 3 and all(r.info.status == "FINISHED" for r in children)
    parent = next(r for r in runs if r.data.tags["engine.kind"] == "sweep")
    assert float(parent.data.params["best.lr"]) == pytest.approx(best["lr"])
    # whatever ASHA decided, a trial cut before its last epoch is reported as stopped, one trained out as completed
    epochs = fixed["epochs"]
    for run in children:
        last_epoch = client_epochs(engine_env["uri"], run.info.run_id)
        assert run.data.tags["engine.status"] == ("completed" if last_epoch == epochs else "stopped")

    params = write_yaml(engine_env["tmp"] / "params.yaml", {
        "axis": "params", "model": "transformer", "sizes": ["p0"], "train_sizes": [40], "seeds": [0], "fixed": fixed,
    })
    assert scale_main(["--space", str(params), "--name", "tuned", "--lr-from", "tiny-hpo", "--epochs", "1",
                       "--amp", "--no-report"]) == 0
    config = json.loads((engine_env["sweeps"] / "tuned" / "trials" / "transformer-p0-n40-s0" / "config.json")
                        .read_text())
    assert config["optim"]["lr"] == pytest.approx(best["lr"]) and config["batch_size"] == best["batch_size"]
    assert config["amp"] is True  # bf16 autocast on CPU: the AMP code path runs in the sweep
    with pytest.raises(ConfigError, match=r"run python -m engine\.tune first"):
        scale_main(["--space", str(params), "--name", "x", "--lr-from", "no-such-sweep"])
