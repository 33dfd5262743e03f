"""Read a sweep's trials from MLflow into a tidy frame: one row per trial and epoch.

MLflow conventions (fixed by the sweep's tracking): one experiment per sweep named after it; a
parent run tagged engine.kind=sweep; one child run per trial tagged engine.kind=trial with
engine.trial_id, engine.axis, engine.status (completed | stopped | diverged | …), params (model,
preset, n_params, train_size, seed, lr, batch_size, epochs, …) and metric histories (one MLflow step
per report, the epoch as a metric). The report reads only MLflow, so it works after the cluster is gone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

from engine import metrics as M
from engine.errors import TrackingError, UserError
from engine.paths import default_tracking_uri

ID_COLUMNS = ["sweep", "run_id", "trial_id", "axis", "model", "preset", "n_params", "train_size", "seed", "status",
              "engine_status", "peak_lr", "batch_size", "epochs_planned"]
CURVE_COLUMNS = [M.EPOCH, M.FLOPS_CUM, M.WALL_S]
BASELINE_PREFIX = "baseline_"  # parent-run metrics such as baseline_predict_mean_val_loss (reference lines)


class SweepNotFoundError(UserError):
    """No MLflow experiment, or no trial runs, for a sweep name."""


@dataclass
class SweepData:
    """A sweep as the report sees it."""

    name: str
    tracking_uri: str
    experiment_id: str
    parent_run_id: str | None
    axis: str | None
    frame: pd.DataFrame  # one row per (trial, epoch)
    baselines: dict[str, float] = field(default_factory=dict)  # parent-run "baseline_*" metrics
    parent_params: dict[str, str] = field(default_factory=dict)
    snapshot: str | None = None  # the runs file it was read from (engine.report.snapshot); None = MLflow


def _client(tracking_uri: str):
    from mlflow.tracking import MlflowClient

    try:
        return MlflowClient(tracking_uri=tracking_uri)
    except Exception as exc:  # mlflow raises many types for a bad URI
        raise TrackingError(f"cannot open MLflow store {tracking_uri}: {exc}; check --tracking-uri") from exc


def _search_all(client, experiment_id: str, filter_string: str) -> list:
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], filter_string=filter_string, max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def list_sweeps(tracking_uri: str | None = None) -> list[str]:
    """Names of experiments in the store that hold a sweep parent run."""
    uri = tracking_uri or default_tracking_uri()
    client = _client(uri)
    names = []
    for exp in client.search_experiments():
        page = client.search_runs([exp.experiment_id], filter_string="tags.`engine.kind` = 'sweep'", max_results=1)
        if len(page):
            names.append(exp.name)
    return sorted(names)


def _num(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def collect_sweep(sweep: str, tracking_uri: str | None = None) -> SweepData:
    """All trial runs of ``sweep`` with their metric histories, as a tidy frame.

    Columns: sweep, run_id, trial_id, axis, model, preset, n_params, train_size, seed, status,
    engine_status (the engine.status tag), epoch, flops_cum, wall_s and every metric the trials
    logged (val_loss, val_energy_mae_mev_per_atom, …).
    Raises :class:`SweepNotFoundError` (one line naming the sweep and how to list sweeps) when empty.
    """
    uri = tracking_uri or default_tracking_uri()
    client = _client(uri)
    hint = f"list sweeps with `python -m engine.report --list --tracking-uri {uri}`"
    exp = client.get_experiment_by_name(sweep)
    if exp is None:
        raise SweepNotFoundError(f"no MLflow experiment for sweep '{sweep}' in {uri}; {hint}")
    trials = _search_all(client, exp.experiment_id, "tags.`engine.kind` = 'trial'")
    if not trials:
        raise SweepNotFoundError(f"sweep '{sweep}' has no trial runs in {uri}; {hint}")
    parents = _search_all(client, exp.experiment_id, "tags.`engine.kind` = 'sweep'")
    parent = parents[0] if parents else None

    rows = []
    for run in trials:
        tags, params, last = run.data.tags, run.data.params, run.data.metrics
        ident = {
            "sweep": sweep,
            "run_id": run.info.run_id,
            "trial_id": tags.get("engine.trial_id", run.info.run_name or run.info.run_id),
            "axis": tags.get("engine.axis", parent.data.tags.get("engine.axis") if parent else None),
            "model": params.get("model"),
            "preset": params.get("preset"),
            "n_params": _num(params.get(M.N_PARAMS, last.get(M.N_PARAMS))),
            "train_size": _num(params.get(M.TRAIN_SIZE, last.get(M.TRAIN_SIZE))),
            "seed": _num(params.get("seed")),
            "status": run.info.status,
            # tag engine.status: completed | stopped (ASHA, FINISHED in MLflow) | diverged | interrupted | …
            "engine_status": tags.get("engine.status"),
            "peak_lr": _num(params.get("lr", params.get("optim.lr"))),  # the metric "lr" is the scheduled LR
            "batch_size": _num(params.get("batch_size")),
            "epochs_planned": _num(params.get("epochs")),
        }
        if ident["engine_status"] != M.STATUS_DIVERGED and (
                M.DIVERGED_EPOCH in last or M.DIVERGED_EPOCH in tags):
            ident["engine_status"] = M.STATUS_DIVERGED  # the loop's own mark, if the tag was not set
        if M.DIVERGED_EPOCH in tags and M.DIVERGED_EPOCH not in last:
            ident[M.DIVERGED_EPOCH] = _num(tags[M.DIVERGED_EPOCH])
        by_step: dict[int, dict[str, float]] = {}
        for key in last:
            for m in client.get_metric_history(run.info.run_id, key):
                by_step.setdefault(int(m.step), {})[key] = float(m.value)
        for step in sorted(by_step):
            row = dict(ident)
            row.update(by_step[step])
            row[M.EPOCH] = float(by_step[step].get(M.EPOCH, step))
            row["report_index"] = step
            rows.append(row)
    frame = pd.DataFrame(rows)
    for col in CURVE_COLUMNS:
        if col not in frame:
            frame[col] = math.nan
    frame = frame.sort_values(["trial_id", M.EPOCH, "report_index"], kind="stable").reset_index(drop=True)
    lead = ID_COLUMNS + CURVE_COLUMNS
    frame = frame[lead + sorted(c for c in frame.columns if c not in lead)]
    baselines = {}
    axis = None
    if parent is not None:
        baselines = {k: float(v) for k, v in parent.data.metrics.items() if k.startswith(BASELINE_PREFIX)}
        axis = parent.data.tags.get("engine.axis")
    if axis is None and frame["axis"].notna().any():
        axis = str(frame["axis"].dropna().iloc[0])
    return SweepData(
        name=sweep,
        tracking_uri=uri,
        experiment_id=exp.experiment_id,
        parent_run_id=parent.info.run_id if parent else None,
        axis=axis,
        frame=frame,
        baselines=baselines,
        parent_params=dict(parent.data.params) if parent else {},
    )
