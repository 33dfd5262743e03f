"""MLflow tracking without Ray: run identities by tag, no duplicate epochs, no run left RUNNING."""

from __future__ import annotations

import socket
import time

import pytest
from mlflow import MlflowClient

from engine.errors import TrackingError
from engine.sweep.tracking import SweepTracker, check_reachable, flatten, trial_params


@pytest.fixture(scope="module")
def uri(tmp_path_factory):
    """One SQLite store for the module (creating MLflow's tables costs seconds); sweeps differ by name."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


def test_flatten_and_trial_params():
    assert flatten({"a": {"b": 1, "c": {"d": 2}}, "e": {}}) == {"a.b": 1, "a.c.d": 2, "e": {}}
    params = trial_params("t-1", {"model": "fcn", "preset": "f0", "seed": 1, "epochs": 3, "batch_size": 8,
                                  "optim": {"lr": 0.01}, "data": {"train_size": 40}})
    assert params["lr"] == 0.01 and params["optim.lr"] == 0.01 and params["data.train_size"] == 40
    assert params["model"] == "fcn" and params["trial_id"] == "t-1"


def test_runs_are_found_by_tag_and_epochs_never_logged_twice(uri):
    tracker = SweepTracker(uri, "sw", "params")
    parent = tracker.start_parent({"axis": "params", "sizes": ["p0"]}, "axis: params\n")
    tracker.start_trial("t0", {"model": "fcn", "lr": 0.01}, checkpoint_path="/x/checkpoint.pt")
    assert tracker.log_trial("t0", {"epoch": 0, "val_loss": 3.0, "flops_cum": 0.0, "n_params": 10, "train_size": 5,
                                    "pid": 123, "config": {"a": 1}, "checkpoint_path": "/x"})
    assert tracker.log_trial("t0", {"epoch": 1, "val_loss": 2.0, "flops_cum": 1e6})

    # a second driver (resume) finds the same parent and child and skips epochs already logged
    again = SweepTracker(uri, "sw", "params")
    assert again.start_parent({"axis": "params", "sizes": ["p0"]}, None) == parent
    again.start_trial("t0", {"model": "fcn", "lr": 0.01})
    assert not again.log_trial("t0", {"epoch": 1, "val_loss": 2.0, "flops_cum": 1e6})
    assert again.log_trial("t0", {"epoch": 2, "val_loss": 1.5, "flops_cum": 2e6})
    again.end_trial("t0", "FINISHED", "completed")
    again.end_parent()

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("sw")
    assert exp.artifact_location.endswith("mlartifacts")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 2
    child = next(r for r in runs if r.data.tags["engine.kind"] == "trial")
    assert child.data.tags["mlflow.parentRunId"] == parent
    assert child.data.tags["engine.checkpoint_path"] == "/x/checkpoint.pt"
    assert child.info.status == "FINISHED" and child.data.tags["engine.status"] == "completed"
    history = client.get_metric_history(child.info.run_id, "val_loss")
    assert [m.step for m in history] == [0, 1, 2]
    assert [m.value for m in history] == [3.0, 2.0, 1.5]
    assert "pid" not in child.data.metrics and "config" not in child.data.metrics
    assert child.data.params["n_params"] == "10" and child.data.params["train_size"] == "5"


def test_leftover_running_runs_are_closed_killed(uri):
    tracker = SweepTracker(uri, "sw2", "data")
    tracker.start_parent({}, None)
    tracker.start_trial("a", {})
    tracker.start_trial("b", {})
    tracker.end_trial("a", "FINISHED", "completed")
    assert tracker.close_leftovers() == ["b"]
    client = MlflowClient(uri)
    statuses = {r.data.tags["engine.trial_id"]: (r.info.status, r.data.tags["engine.status"])
                for r in tracker.child_runs()}
    assert statuses == {"a": ("FINISHED", "completed"), "b": ("KILLED", "interrupted")}
    assert client.get_run(tracker.parent_id).info.status == "RUNNING"


def test_unreachable_server_is_one_line_tracking_error():
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.perf_counter()
    with pytest.raises(TrackingError, match="cannot reach MLflow tracking server") as info:
        check_reachable(f"http://127.0.0.1:{port}")
    assert "\n" not in str(info.value)
    assert time.perf_counter() - t0 < 10
    with pytest.raises(TrackingError, match="does not exist"):
        check_reachable("sqlite:////nonexistent-dir-xyz/mlflow.db")


def test_fresh_sweep_refuses_a_name_mlflow_already_has(uri, tmp_path, monkeypatch):
    from engine.errors import ConfigError
    from engine.sweep.runner import SweepOptions, run_sweep
    from engine.sweep.spaces import space_from_dict

    monkeypatch.setenv("ENGINE_SWEEPS", str(tmp_path / "sweeps"))
    old = SweepTracker(uri, "ghost", "params")
    old.start_parent({}, None)
    old.start_trial("transformer-p0-n40-s0", {})
    old.close_leftovers()
    space = space_from_dict({"axis": "params", "sizes": ["p0"], "train_sizes": [40], "seeds": [0]})
    with pytest.raises(ConfigError, match="already has runs of a sweep named 'ghost'"):
        run_sweep(space, SweepOptions(name="ghost", tracking_uri=uri))
    assert not (tmp_path / "sweeps" / "ghost" / "space.json").exists()


def test_searches_are_paged(uri, monkeypatch):
    """More trial runs than one search page: every lookup still sees all of them (MLflow stops a page at
    ``max_results``; unpaged, the tracker missed runs past 5,000 and would create duplicates on resume)."""
    from engine.sweep import tracking

    tracker = SweepTracker(uri, "paged", "params")
    tracker.start_parent({}, None)
    for k in range(7):
        tracker.start_trial(f"t{k}", {})
    tracker.end_trial("t6", "FINISHED", "completed", artifacts=False)
    monkeypatch.setattr(tracking, "SEARCH_PAGE", 3)  # 7 runs = 3 pages
    assert len(tracking.search_all(tracker.client, [tracker.experiment_id], page_size=2)) == 8  # 7 + the parent
    assert sorted(r.data.tags["engine.trial_id"] for r in tracker.child_runs()) == [f"t{k}" for k in range(7)]
    assert sorted(tracker.close_leftovers()) == [f"t{k}" for k in range(6)]
    # a resumed driver finds the trial on the last page instead of creating a second run for it
    again = SweepTracker(uri, "paged", "params")
    assert again.start_trial("t6", {}) == tracker._children["t6"]
    assert len(again.child_runs()) == 7


def test_trial_artifacts_are_logged_when_it_ends(uri, tmp_path):
    run_dir = tmp_path / "trial"
    run_dir.mkdir()
    (run_dir / "config.json").write_text('{"model": "fcn"}\n')
    (run_dir / "metrics.jsonl").write_text('{"epoch": 1, "val_loss": 0.5}\n')
    tracker = SweepTracker(uri, "arts", "params")
    tracker.start_parent({}, None)
    run_id = tracker.start_trial("a", {}, checkpoint_path=str(run_dir / "checkpoint.pt"))  # no checkpoint written
    tracker.end_trial("a", "FAILED", "failed", error="boom")
    client = MlflowClient(uri)
    assert sorted(f.path for f in client.list_artifacts(run_id)) == ["config.json", "metrics.jsonl"]
    assert client.get_run(run_id).data.tags["engine.artifacts"] == "config.json,metrics.jsonl"
    # a folder the driver cannot see (another node's disk) is a tag and a warning, not a crash
    run_b = tracker.start_trial("b", {}, checkpoint_path=str(tmp_path / "elsewhere" / "checkpoint.pt"))
    tracker.end_trial("b", "FINISHED", "completed")
    assert client.get_run(run_b).data.tags["engine.artifacts"] == "missing"
    assert client.get_run(run_b).info.status == "FINISHED"
