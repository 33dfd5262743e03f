"""MLflow records everything a user needs to pick and reuse a model (issue 13, items 1 and 2).

ONE tiny real sweep (two fcn sizes, two epochs, probes with a few steps) on a real local Ray and a real
SQLite MLflow store, shared by every assertion here: each trial run carries its artifacts, system
metrics and a dataset input; the best trial of each size is a registered model version that
``EngineCalculator("models:/<name>/<version>")`` loads and predicts with; the probe metrics are in
MLflow and drawn in the report beside the validation-loss law.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from mlflow import MlflowClient

from engine.loop import probes as P
from engine.sweep import sysmetrics as S
from engine.sweep.registry import registry_name
from engine.sweep.runner import SweepOptions, run_sweep
from engine.sweep.spaces import space_from_dict

pytestmark = pytest.mark.slow

SWEEP = "records-sweep"
SPACE = {
    "axis": "params",
    "model": "fcn",
    "sizes": ["f0", "f1"],
    "train_sizes": [32],
    "seeds": [0],
    "fixed": {
        "epochs": 2,
        "batch_size": 8,
        "optim": {"lr": 3e-3},
        "data": {"emt_size": 48, "max_val": 8, "test_fraction": 0.15},  # a test split, so test_* metrics
        "probes": {"enabled": True, "structures": 2, "nve_steps": 10, "relax_steps": 10},
    },
    "resources": {"workers": 1, "cpus_per_worker": 1},
}


@pytest.fixture(scope="module")
def env(tmp_path_factory, shared_cache):
    """engine_env's folders, for the module (one sweep serves every test here)."""
    tmp = tmp_path_factory.mktemp("records")
    mp = pytest.MonkeyPatch()
    mp.setenv("ENGINE_SWEEPS", str(tmp / "sweeps"))
    mp.setenv("ENGINE_REPORTS", str(tmp / "reports"))
    mp.setenv("ENGINE_CACHE", str(shared_cache))
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    mp.setenv("MLFLOW_TRACKING_URI", uri)
    yield {"uri": uri, "tmp": tmp}
    mp.undo()


@pytest.fixture(scope="module")
def sweep(ray_session, env):
    """Run the sweep once (system metrics sampled every 0.2 s); the store's runs and registered versions."""
    import io

    out = io.StringIO()
    space = space_from_dict(json.loads(json.dumps(SPACE)), source="records")
    result = run_sweep(space, SweepOptions(name=SWEEP, system_metrics_interval_s=0.2, stream=out))
    assert not result.interrupted, out.getvalue()
    client = MlflowClient(env["uri"])
    exp = client.get_experiment_by_name(SWEEP)
    runs = client.search_runs([exp.experiment_id])
    trials = {r.data.tags["engine.trial_id"]: r for r in runs if r.data.tags.get("engine.kind") == "trial"}
    parent = next(r for r in runs if r.data.tags.get("engine.kind") == "sweep")
    assert len(trials) == 2 and all(r.info.status == "FINISHED" for r in trials.values())
    return {"client": client, "trials": trials, "parent": parent, "uri": env["uri"], "log": out.getvalue(),
            "tmp": env["tmp"], "result": result}


def test_every_trial_run_has_its_artifacts(sweep):
    client = sweep["client"]
    for run in sweep["trials"].values():
        names = {f.path for f in client.list_artifacts(run.info.run_id)}
        assert {"checkpoint.pt", "config.json", "metrics.jsonl"} <= names, run.info.run_name
        assert run.data.tags["engine.artifacts"] == "config.json,metrics.jsonl,checkpoint.pt"


def test_every_trial_run_has_system_metrics_with_each_report(sweep):
    client = sweep["client"]
    for run in sweep["trials"].values():
        metrics = run.data.metrics
        assert {S.CPU, S.MEMORY_MB, S.MEMORY_PERCENT, S.PROCESS_RSS_MB} <= set(metrics), sorted(metrics)
        assert metrics[S.PROCESS_RSS_MB] > 0.0 and 0.0 <= metrics[S.MEMORY_PERCENT] <= 100.0
        # one value per report: epoch 0, 1 and 2, at the same steps as the losses
        steps = [m.step for m in client.get_metric_history(run.info.run_id, S.PROCESS_RSS_MB)]
        assert steps == [m.step for m in client.get_metric_history(run.info.run_id, "val_loss")] == [0, 1, 2]
        assert run.data.metrics["val_loss"] > 0  # the report's own metrics are untouched by the merge


def test_every_trial_run_has_the_dataset_as_input(sweep):
    digests = set()
    for run in sweep["trials"].values():
        inputs = sweep["client"].get_run(run.info.run_id).inputs.dataset_inputs
        assert len(inputs) == 1
        ds, tags = inputs[0].dataset, {t.key: t.value for t in inputs[0].tags}
        assert ds.name == "emt-seed0-n48" and "emt://seed0/n48" in ds.source and len(ds.digest) == 16
        assert tags["mlflow.data.context"] == "train" and tags["engine.train_size"] == "32"
        n_pool, n_val, n_test = int(tags["engine.train_pool"]), int(tags["engine.n_val"]), int(tags["engine.n_test"])
        assert 0 < n_val <= 8 and n_test > 0 and n_pool >= 32 and n_pool + n_val + n_test <= 48  # max_val caps val at 8
        digests.add(ds.digest)
    assert len(digests) == 1  # both sizes trained and were scored on the same structures


def test_one_registered_version_per_size_loads_and_predicts(sweep):
    from ase.build import bulk

    from models.calculator import EngineCalculator

    client, name = sweep["client"], registry_name(SWEEP)
    versions = client.search_model_versions(f"name = '{name}'")
    by_size = {v.tags["engine.size"]: v for v in versions}
    assert sorted(by_size) == ["f0", "f1"] and len(versions) == 2
    parent_tags = sweep["parent"].data.tags
    assert parent_tags["engine.registered_model"] == name
    assert sorted(parent_tags["engine.registered_versions"].split(",")) == sorted(
        f"{s}:{v.version}" for s, v in by_size.items())
    assert f"registry: model '{name}'" in sweep["log"]
    for size, version in by_size.items():
        run = sweep["trials"][f"fcn-{size}-n32-s0"]
        assert version.run_id == run.info.run_id
        assert float(version.tags["val_loss"]) == pytest.approx(run.data.metrics["val_loss"])
        assert "test_loss" in version.tags
        atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 1, 1))
        atoms.rattle(0.05, seed=1)
        with pytest.MonkeyPatch.context() as mp:  # the store named here, not $MLFLOW_TRACKING_URI's registry
            mp.delenv("MLFLOW_TRACKING_URI")
            cwd = sweep["tmp"] / "elsewhere"
            cwd.mkdir(exist_ok=True)
            mp.chdir(cwd)
            atoms.calc = EngineCalculator(f"models:/{name}/{version.version}", tracking_uri=sweep["uri"])
            forces, energy = atoms.get_forces(), atoms.get_potential_energy()
            assert not (cwd / "mlflow.db").exists()  # no default store was touched
        assert forces.shape == (8, 3) and np.isfinite(forces).all() and math.isfinite(energy)
        # the same weights as the trial's own checkpoint
        local = atoms.copy()
        local.calc = EngineCalculator(run.data.tags["engine.checkpoint_path"])
        assert local.get_potential_energy() == pytest.approx(energy, rel=1e-12, abs=1e-12)


def test_probe_metrics_are_in_mlflow_and_in_the_report(sweep):
    from engine.report.build import build_report

    for run in sweep["trials"].values():
        m = run.data.metrics
        assert m[P.PROBE_STRUCTURES] == 2.0 and 0.0 <= m[P.NVE_STABLE] <= 1.0 and m[P.PROBE_WALL_S] > 0
        # logged once, with the last report (the one that holds the test metrics)
        history = sweep["client"].get_metric_history(run.info.run_id, P.NVE_STABLE)
        assert [h.step for h in history] == [2]
        assert P.RELAX_MAX_FORCE in m  # EMT scores the relaxation of the embedded EMT data
    out = build_report([SWEEP], tracking_uri=sweep["uri"], out_dir=sweep["tmp"] / "report", n_boot=20)
    fits = json.loads((out / "fits.json").read_text())
    probes = fits["sweeps"][0]["probes"]
    assert probes["variable"] == "n_params" and P.NVE_STABLE in probes["metrics"]
    assert sorted(probes["metrics"][P.NVE_STABLE]["x"]) == sorted(
        r.data.metrics["n_params"] for r in sweep["trials"].values())
    figure = fits["figures"][f"{SWEEP}|probes:n_params"]
    assert (out / figure).stat().st_size > 0
    assert "runs" in fits["legends"][figure]
    md = (out / "report.md").read_text()
    section = md[md.index("## Physical probes"):]
    assert f"]({figure})" in section and P.NVE_STABLE in section and "probes off" not in md


def test_a_report_without_probe_metrics_says_probes_off():
    import pandas as pd

    from engine.report.probes import OFF, probe_blocks, probe_summary

    frame = pd.DataFrame({"run_id": ["a", "a"], "n_params": [10.0, 10.0], "epoch": [0.0, 1.0],
                          "report_index": [0, 1], "val_loss": [2.0, 1.0], "engine_status": ["completed"] * 2})
    summary = probe_summary(frame, "params")
    assert summary == {"not_available": OFF}
    blocks = probe_blocks({"probes": summary}, {})
    assert blocks[0].text == "Physical probes" and blocks[1].text.startswith("probes off")
