"""MLflow tracking for sweeps: one experiment and one parent run per sweep, one child run per trial.

Conventions (shared with ``engine.report``): the experiment is named after the sweep; the parent
run carries tags ``engine.kind=sweep``, ``engine.sweep``, ``engine.axis`` plus the search space,
git commit and package versions; each trial's child run carries ``engine.kind=trial``,
``engine.trial_id``, ``mlflow.parentRunId``, every hyperparameter as a dotted param and every
loop metric with ``step`` = the report index (the epoch, for epoch-wise trials). Run identities are
found by tag before anything is created, so a resumed sweep adds to the same runs. Everything is
logged from the Ray driver (a Tune callback), which keeps a SQLite store free of concurrent writers.

Final states: a trial that trained to its end → FINISHED (``engine.status=completed``); one that
ASHA stopped at a rung → FINISHED with ``engine.status=stopped`` (its history up to the rung is
valid data for the compute frontier); one that errored → FAILED; one still open when the driver
ends (interrupt) → KILLED (``engine.status=interrupted``), reopened by ``--resume``.

Artifacts: when a trial ends, its ``config.json``, ``metrics.jsonl`` and ``checkpoint.pt`` are logged
at its run's artifact root (tag ``engine.artifacts`` lists them), so ``EngineCalculator("runs:/<id>")``
and the report load a trial from MLflow alone. Each experiment's artifact location is set when it
is created (``mlartifacts`` beside a SQLite store; a server's own root otherwise), never Ray's
session folder. Searches are paged (:func:`search_all`), so sweeps of any size are found whole.
"""

from __future__ import annotations

import json
import logging
import math
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

from engine.errors import TrackingError

log = logging.getLogger(__name__)

KIND_SWEEP = "sweep"
KIND_TRIAL = "trial"
# result keys Tune adds on its own; not trial metrics
TUNE_KEYS = frozenset(
    {
        "timestamp",
        "time_this_iter_s",
        "time_total_s",
        "time_since_restore",
        "pid",
        "training_iteration",
        "iterations_since_restore",
        "done",
        "date",
        "hostname",
        "node_ip",
        "config",
        "trial_id",
        "experiment_tag",
        "checkpoint_dir_name",
        "should_checkpoint",
    }
)
SEARCH_PAGE = 1000  # runs per MLflow search request
# a trial run's artifacts (files of its run folder, logged at the artifact root when the trial ends);
# EngineCalculator("runs:/<run_id>") reads checkpoint.pt
TRIAL_ARTIFACTS = ("config.json", "metrics.jsonl", "checkpoint.pt")
_PACKAGES = ("torch", "ray", "mlflow", "optuna", "ase", "vesin", "torch_geometric", "numpy", "scipy")


def flatten(values: dict, prefix: str = "") -> dict[str, object]:
    """Nested dict → ``{"a.b.c": value}`` (lists and None kept as their string form by MLflow)."""
    out: dict[str, object] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def git_commit(repo: Path | None = None) -> str:
    """HEAD of the project checkout (``+dirty`` when the tree has changes), or ``unknown``."""
    cwd = repo or Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=cwd, capture_output=True, text=True, timeout=10)
        return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def package_versions() -> dict[str, str]:
    from importlib import metadata

    out = {}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name.replace("_", "-"))
        except metadata.PackageNotFoundError:
            try:
                out[name] = metadata.version(name)
            except metadata.PackageNotFoundError:
                out[name] = "absent"
    return out


def artifact_root_for(uri: str) -> str | None:
    """Artifacts beside a SQLite store (``<db dir>/mlartifacts``); a server or file store decides for itself."""
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///") :])
        return (db.parent / "mlartifacts").resolve().as_uri()
    return None


def check_reachable(uri: str, timeout_s: float = 5.0) -> None:
    """Fail fast, in one line, when an HTTP tracking server does not answer (MLflow itself retries for minutes)."""
    parsed = urlparse(uri)
    if parsed.scheme in ("http", "https"):
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout_s) as resp:
                if resp.status >= 500:
                    raise TrackingError(f"MLflow server at {uri} answered HTTP {resp.status}; check the server's log")
        except urllib.error.HTTPError as exc:
            if exc.code >= 500:
                raise TrackingError(f"MLflow server at {uri} answered HTTP {exc.code}; check the server's log") from exc
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise TrackingError(
                f"cannot reach MLflow tracking server {uri} ({reason}); start it or pass --tracking-uri sqlite:///mlflow.db"
            ) from exc
    elif parsed.scheme == "sqlite":
        db = Path(uri[len("sqlite:///") :])
        if not db.parent.is_dir():
            raise TrackingError(f"folder of the MLflow database {db} does not exist; create it or fix --tracking-uri")
    elif parsed.scheme.split("+")[0] not in ("file", "", "databricks", "postgresql", "postgres", "mysql", "mssql"):
        raise TrackingError(f"unsupported MLflow tracking URI {uri!r}; use sqlite:///mlflow.db or http://host:5000")


def search_all(client, experiment_ids: list[str], filter_string: str = "", page_size: int | None = None) -> list:
    """Every run matching ``filter_string``, page after page of ``page_size`` (default :data:`SEARCH_PAGE`):
    one ``search_runs`` call stops at its ``max_results``, and a 10,000-trial sweep needs several."""
    page_size = page_size or SEARCH_PAGE
    runs: list = []
    token = None
    while True:
        page = client.search_runs(experiment_ids, filter_string=filter_string, max_results=page_size, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def report_step(metrics: dict, default: int = -1) -> int:
    """The MLflow step of a report: its index in the trial (``report``; a compute trial reports at FLOP
    rungs, several per epoch or none), else its epoch (the index of epoch-wise reports)."""
    return int(metrics.get("report", metrics.get("epoch", default)))


def _finite_metrics(metrics: dict) -> dict[str, float]:
    out = {}
    for key, value in metrics.items():
        if key in TUNE_KEYS or isinstance(value, bool):
            continue
        if isinstance(value, (int, float)) and math.isfinite(float(value)):
            out[key] = float(value)
    return out


class SweepTracker:
    """Parent/child MLflow runs of one sweep, through :class:`mlflow.MlflowClient` (no global state)."""

    def __init__(self, tracking_uri: str, sweep: str, axis: str) -> None:
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException

        from engine.tracking_server import with_postgres_driver

        tracking_uri = with_postgres_driver(tracking_uri)  # a database several drivers share, used directly
        check_reachable(tracking_uri)
        self.uri = tracking_uri
        self.sweep = sweep
        self.axis = axis
        self.client = MlflowClient(tracking_uri=tracking_uri)
        try:
            exp = self.client.get_experiment_by_name(sweep)
            if exp is None:
                self.experiment_id = self.client.create_experiment(
                    sweep, artifact_location=artifact_root_for(tracking_uri), tags={"engine.sweep": sweep}
                )
            else:
                if exp.lifecycle_stage == "deleted":
                    self.client.restore_experiment(exp.experiment_id)
                self.experiment_id = exp.experiment_id
        except MlflowException as exc:
            raise TrackingError(f"MLflow store {tracking_uri} failed: {str(exc).splitlines()[0]}") from exc
        self.parent_id: str | None = None
        self._children: dict[str, str] = {}  # trial_id -> run_id
        self._last_step: dict[str, int] = {}  # run_id -> last epoch logged
        self._logged_params: dict[str, set[str]] = {}
        self._run_dirs: dict[str, Path] = {}  # trial_id -> its run folder (from the checkpoint path)
        self.dataset = None  # engine.sweep.datasets.DatasetInfo: logged as an input of each new trial run

    # -- lookups ---------------------------------------------------------------------
    def _search(self, filter_string: str) -> list:
        return search_all(self.client, [self.experiment_id], filter_string)

    def child_runs(self) -> list:
        return self._search(f"tags.`engine.kind` = '{KIND_TRIAL}' and tags.`engine.sweep` = '{self.sweep}'")

    # -- parent ----------------------------------------------------------------------
    def start_parent(self, space_dict: dict, space_text: str | None, extra_params: dict | None = None) -> str:
        """Find (by tag) or create the sweep's parent run; log the space, commit and versions."""
        found = self._search(f"tags.`engine.kind` = '{KIND_SWEEP}' and tags.`engine.sweep` = '{self.sweep}'")
        if found:
            run_id = found[0].info.run_id
            self.client.update_run(run_id, status="RUNNING")
        else:
            tags = {"engine.kind": KIND_SWEEP, "engine.sweep": self.sweep, "engine.axis": self.axis}
            run = self.client.create_run(self.experiment_id, tags=tags, run_name=self.sweep)
            run_id = run.info.run_id
        self.parent_id = run_id
        versions = package_versions()
        tags = {"engine.git_commit": git_commit(), **{f"engine.version.{k}": v for k, v in versions.items()}}
        for k, v in tags.items():
            self.client.set_tag(run_id, k, v)
        params = {f"space.{k}": v for k, v in flatten(space_dict).items()}
        params["git_commit"] = tags["engine.git_commit"]  # a resumed sweep keeps the first value
        params.update({f"version.{k}": v for k, v in versions.items()})
        params.update(extra_params or {})
        self._log_params(run_id, params)
        self.client.log_dict(run_id, space_dict, "search_space.json")
        if space_text is not None:
            self.client.log_text(run_id, space_text, "search_space.yaml")
        env = {"git_commit": tags["engine.git_commit"], "versions": versions}
        self.client.log_dict(run_id, env, "environment.json")
        return run_id

    def end_parent(self, status: str = "FINISHED") -> None:
        if self.parent_id is not None:
            self.client.set_terminated(self.parent_id, status=status)

    def log_parent(self, metrics: dict | None = None, params: dict | None = None, tags: dict | None = None) -> None:
        assert self.parent_id is not None, "start_parent first"
        if metrics:
            self.client.log_batch(self.parent_id, metrics=self._metric_list(_finite_metrics(metrics), step=0))
        if params:
            self._log_params(self.parent_id, params)
        for k, v in (tags or {}).items():
            self.client.set_tag(self.parent_id, k, str(v))

    # -- children --------------------------------------------------------------------
    def start_trial(self, trial_id: str, params: dict, checkpoint_path: str | None = None) -> str:
        """Find (by ``engine.trial_id``) or create the trial's child run and mark it RUNNING."""
        run_id = self._children.get(trial_id)
        if run_id is None:
            found = self._search(
                f"tags.`engine.kind` = '{KIND_TRIAL}' and tags.`engine.sweep` = '{self.sweep}' "
                f"and tags.`engine.trial_id` = '{trial_id}'"
            )
            if found:
                run_id = found[0].info.run_id
                history = self.client.get_metric_history(run_id, "epoch")
                self._last_step[run_id] = max((int(m.step) for m in history), default=-1)
            else:
                tags = {
                    "engine.kind": KIND_TRIAL,
                    "engine.sweep": self.sweep,
                    "engine.trial_id": trial_id,
                    "engine.axis": self.axis,
                }
                if self.parent_id:
                    tags["mlflow.parentRunId"] = self.parent_id
                run = self.client.create_run(self.experiment_id, tags=tags, run_name=trial_id)
                run_id = run.info.run_id
                self._last_step[run_id] = -1
                if self.dataset is not None:
                    from engine.sweep.datasets import log_dataset

                    log_dataset(self.client, run_id, self.dataset, params.get("data.train_size"))
            self._children[trial_id] = run_id
        self.client.update_run(run_id, status="RUNNING")
        self.client.set_tag(run_id, "engine.status", "running")
        if checkpoint_path:
            self.client.set_tag(run_id, "engine.checkpoint_path", checkpoint_path)
            self._run_dirs[trial_id] = Path(checkpoint_path).parent
        self._log_params(run_id, params)
        return run_id

    def last_epoch(self, trial_id: str) -> int:
        """Highest epoch logged to the trial's run (-1 when none)."""
        return self._last_step.get(self._children.get(trial_id, ""), -1)

    def log_trial(self, trial_id: str, metrics: dict) -> bool:
        """Log one report at ``step=epoch``; a report for an epoch already logged (a resumed trial) is skipped."""
        run_id = self._children[trial_id]
        values = _finite_metrics(metrics)
        epoch = report_step(values, self._last_step.get(run_id, -1) + 1)
        if epoch <= self._last_step.get(run_id, -1):
            return False
        self.client.log_batch(run_id, metrics=self._metric_list(values, step=epoch))
        self._last_step[run_id] = epoch
        first = {k: metrics[k] for k in ("n_params", "train_size") if k in metrics}
        if first:
            self._log_params(run_id, {k: int(v) for k, v in first.items()})
        return True

    def log_trial_artifacts(self, trial_id: str, run_dir: str | Path | None = None) -> list[str]:
        """Log the trial's ``config.json``, ``metrics.jsonl`` and ``checkpoint.pt`` to its run (artifact root).

        ``run_dir`` defaults to the folder of the checkpoint path given to :meth:`start_trial`. Returns
        the names logged and records them in the tag ``engine.artifacts``. A folder this driver cannot
        see (a node's local disk) or a failed upload is a warning and a tag, never a crash of the sweep.
        """
        run_id = self._children.get(trial_id)
        folder = Path(run_dir) if run_dir is not None else self._run_dirs.get(trial_id)
        if run_id is None or folder is None:
            return []
        from mlflow.exceptions import MlflowException

        logged = []
        try:
            for name in TRIAL_ARTIFACTS:
                if (folder / name).is_file():
                    self.client.log_artifact(run_id, str(folder / name))
                    logged.append(name)
        except (MlflowException, OSError) as exc:
            log.warning("could not log artifacts of trial %s to MLflow: %s", trial_id, str(exc).splitlines()[0])
            self.client.set_tag(run_id, "engine.artifacts", "failed")
            return logged
        if not logged:
            log.warning("trial %s: no artifacts in %s (not visible from the driver?)", trial_id, folder)
        self.client.set_tag(run_id, "engine.artifacts", ",".join(logged) or "missing")
        return logged

    def end_trial(
        self, trial_id: str, status: str, engine_status: str, error: str | None = None, artifacts: bool = True
    ) -> None:
        """Close the trial's run with ``status``; first log its artifacts (``artifacts=True``)."""
        run_id = self._children.get(trial_id)
        if run_id is None:
            return
        if artifacts:
            self.log_trial_artifacts(trial_id)
        self.client.set_tag(run_id, "engine.status", engine_status)
        if error:
            self.client.set_tag(run_id, "engine.error", error[:4000])
        self.client.set_terminated(run_id, status=status)

    def close_leftovers(self, status: str = "KILLED", engine_status: str = "interrupted") -> list[str]:
        """End child runs still RUNNING (a trial the driver never saw finish); returns their trial ids."""
        closed = []
        for run in self.child_runs():
            if run.info.status == "RUNNING":
                self.client.set_tag(run.info.run_id, "engine.status", engine_status)
                self.client.set_terminated(run.info.run_id, status=status)
                closed.append(run.data.tags.get("engine.trial_id", run.info.run_id))
        return closed

    # -- helpers ---------------------------------------------------------------------
    def _metric_list(self, values: dict[str, float], step: int) -> list:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        return [Metric(key=k, value=v, timestamp=now, step=step) for k, v in sorted(values.items())]

    def _log_params(self, run_id: str, params: dict) -> None:
        """Log params not logged yet by this tracker (MLflow rejects changing a param's value)."""
        from mlflow.entities import Param

        done = self._logged_params.setdefault(run_id, set())
        if not done:
            done.update(self.client.get_run(run_id).data.params)
        items = []
        for key, value in params.items():
            if key in done:
                continue
            text = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
            items.append(Param(key, text[:6000]))
            done.add(key)
        for start in range(0, len(items), 100):  # MLflow's batch limit on params
            self.client.log_batch(run_id, params=items[start : start + 100])


def trial_params(trial_id: str, config: dict) -> dict:
    """The child run's params: the conventional short names plus every hyperparameter flattened with dots."""
    params = {
        "trial_id": trial_id,
        "model": config.get("model"),
        "preset": config.get("preset"),
        "seed": config.get("seed"),
        "epochs": config.get("epochs"),
        "lr": (config.get("optim") or {}).get("lr"),
        "batch_size": config.get("batch_size"),
    }
    for key, value in flatten(config).items():
        params.setdefault(key, value)
    return params
