"""The training protocol of a real sweep: one normalization for every trial, the budget rule and the
naive baselines on the parent run, test metrics per trial, and a diverged trial tagged, not crashed.

Tiny Ray Tune sweeps (module-wide local Ray, ``ray_session``); folders and MLflow in tmp_path.
"""

from __future__ import annotations

import json

import pytest
import torch
from mlflow import MlflowClient

from engine import metrics as M
from engine.sweep.runner import SweepOptions, run_sweep
from engine.sweep.spaces import space_from_dict

pytestmark = pytest.mark.slow

TINY_FIXED = {"epochs": 2, "batch_size": 8, "optim": {"lr": 3e-3}, "data": {"emt_size": 60, "max_val": 8}}


def _runs(uri: str, sweep: str):
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(sweep)
    runs = client.search_runs([exp.experiment_id])
    parent = [r for r in runs if r.data.tags.get("engine.kind") == "sweep"]
    children = {r.data.tags["engine.trial_id"]: r for r in runs if r.data.tags.get("engine.kind") == "trial"}
    assert len(parent) == 1
    return client, parent[0], children


def test_data_sweep_shares_one_normalization_and_logs_budget_and_baselines(ray_session, engine_env):
    fixed = json.loads(json.dumps(TINY_FIXED))
    fixed["budget"] = {"steps": 4}
    fixed["data"]["test_fraction"] = 0.15  # a test split of a few structures out of 60
    space = space_from_dict(
        {"axis": "data", "model": "transformer", "sizes": ["p0"], "train_sizes": [10, 30], "seeds": [0],
         "fixed": fixed},
        source="tiny-data",
    )
    result = run_sweep(space, SweepOptions(name="tiny-data", progress_interval_s=5.0))
    assert not result.interrupted
    assert {t["status"] for t in result.trials.values()} == {"completed"}

    sweep_dir = engine_env["sweeps"] / "tiny-data"
    shared = json.loads((sweep_dir / "normalization.json").read_text())
    norms = []
    for trial_id in result.trials:
        ck = torch.load(sweep_dir / "trials" / trial_id / "checkpoint.pt", weights_only=True)
        norms.append(ck["normalization"])
        assert ck["trial_config"]["data"]["normalization_file"] == str((sweep_dir / "normalization.json").resolve())
    assert norms[0] == norms[1] == shared  # the 10- and the 30-structure trial train in one unit system

    _, parent, children = _runs(engine_env["uri"], "tiny-data")
    assert parent.data.params["budget_rule"] == "steps=4"
    metrics = parent.data.metrics
    for name in ("predict_zero", "linear_reference", "nearest_neighbour"):
        for target in M.TARGETS:
            assert f"baseline_{name}_val_{target}" in metrics, (name, target)
    assert metrics["baseline_predict_zero_val_loss"] > metrics["baseline_linear_reference_val_loss"]
    assert json.loads((sweep_dir / "baselines.json").read_text()) == pytest.approx(
        {k: v for k, v in metrics.items() if k.startswith("baseline_")}
    )
    epochs_run = {}
    for trial_id, run in children.items():
        assert run.data.metrics[M.STEP] == 4  # the same optimizer steps for every training-set size
        epochs_run[run.data.params["train_size"]] = run.data.metrics[M.EPOCHS_RUN]
        for target in M.TARGETS:
            assert M.split_key("test", target) in run.data.metrics, (trial_id, target)
    # batches of ≤ 8: 10 structures = 2 steps per epoch, 30 = 4 steps: 4 steps are 2 epochs and 1 epoch
    assert epochs_run["10"] == pytest.approx(2.0) and epochs_run["30"] == pytest.approx(1.0)


def test_a_diverging_trial_is_tagged_and_the_sweep_completes(ray_session, engine_env):
    fixed = json.loads(json.dumps(TINY_FIXED))
    fixed["optim"] = {"lr": 1e30, "warmup_fraction": 0.0}
    space = space_from_dict(
        {"axis": "params", "model": "transformer", "sizes": ["p0"], "train_sizes": [30], "seeds": [0],
         "fixed": fixed},
        source="tiny-diverge",
    )
    result = run_sweep(space, SweepOptions(name="tiny-diverge", progress_interval_s=5.0))
    assert not result.interrupted
    assert [t["status"] for t in result.trials.values()] == [M.STATUS_DIVERGED]
    _, parent, children = _runs(engine_env["uri"], "tiny-diverge")
    (run,) = children.values()
    assert run.info.status == "FINISHED" and run.data.tags["engine.status"] == M.STATUS_DIVERGED
    assert run.data.metrics[M.DIVERGED_EPOCH] == 1
    assert parent.data.metrics["trials_diverged"] == 1 and parent.data.params["budget_rule"] == "epochs=2"
    marker = json.loads((engine_env["sweeps"] / "tiny-diverge" / "trials" / run.data.tags["engine.trial_id"]
                         / "sweep_status.json").read_text())
    assert marker["status"] == M.STATUS_DIVERGED
