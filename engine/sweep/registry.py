"""After a sweep: register the best trial of each model size in MLflow's Model Registry.

One registered model per sweep (its name is the sweep's, made registry-safe), one version per model
size: the trial with the lowest final validation loss among that size's finished, non-diverged trials.
A version's source is its trial run's artifact root (``checkpoint.pt``, ``config.json``,
``metrics.jsonl``, logged by :mod:`engine.sweep.tracking`), so
``EngineCalculator("models:/<name>/<version>")`` loads it with ``weights_only=True``; its tags carry
the preset, parameter count, training-set size, validation and test metrics and the trial id.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from engine import metrics as M
from engine.sweep.tracking import KIND_TRIAL, search_all

# the metrics copied onto each version (when the trial has them)
VERSION_METRICS = (
    M.VAL_LOSS,
    "val_energy_mae_mev_per_atom",
    "val_forces_mae_mev_per_a",
    "val_stress_mae_mev_per_a3",
    "test_loss",
    "test_energy_mae_mev_per_atom",
    "test_forces_mae_mev_per_a",
    "test_stress_mae_mev_per_a3",
)
EXCLUDED_STATUSES = ("diverged", "failed", "interrupted")


@dataclass
class RegisteredVersion:
    name: str
    version: str
    size: str
    run_id: str
    val_loss: float


def registry_name(sweep: str) -> str:
    """A registry-safe name for a sweep's models (letters, digits, '-', '_', '.')."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", sweep).strip("-") or "sweep"


def _size_of(run) -> str:
    preset = run.data.params.get("preset")
    if preset and preset != "None":
        return str(preset)
    n = run.data.metrics.get(M.N_PARAMS)
    return f"n{int(n)}" if n is not None else "unknown"


def best_per_size(client, experiment_id: str, sweep: str) -> dict[str, object]:
    """size -> the finished, finite-loss trial run with the lowest final validation loss."""
    runs = search_all(
        client,
        [experiment_id],
        f"tags.`engine.kind` = '{KIND_TRIAL}' and tags.`engine.sweep` = '{sweep}' and attributes.status = 'FINISHED'",
    )
    best: dict[str, object] = {}
    for run in runs:
        if run.data.tags.get("engine.status") in EXCLUDED_STATUSES:
            continue
        loss = run.data.metrics.get(M.VAL_LOSS)
        if loss is None or not math.isfinite(loss) or "engine.artifacts" not in run.data.tags:
            continue
        size = _size_of(run)
        if size not in best or loss < best[size].data.metrics[M.VAL_LOSS]:
            best[size] = run
    return best


def register_best(tracking_uri: str, sweep: str, experiment_id: str) -> list[RegisteredVersion]:
    """Register one version per model size; returns what was registered (empty when nothing qualifies)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri=tracking_uri)
    best = best_per_size(client, experiment_id, sweep)
    if not best:
        return []
    name = registry_name(sweep)
    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(
            name, tags={"engine.sweep": sweep}, description=f"best trial per model size of sweep {sweep}"
        )
    # a resumed sweep registers again only sizes whose best trial changed
    known = {v.run_id: v for v in client.search_model_versions(f"name = '{name}'")}
    out = []
    for size, run in sorted(best.items(), key=lambda kv: kv[1].data.metrics.get(M.N_PARAMS, 0.0)):
        run_id = run.info.run_id
        if run_id in known:
            version = known[run_id].version
        else:
            tags = {"engine.size": size, "engine.trial_id": run.data.tags.get("engine.trial_id", "")}
            for key in (M.N_PARAMS, M.TRAIN_SIZE, *VERSION_METRICS):
                if key in run.data.metrics:
                    tags[key] = repr(float(run.data.metrics[key]))
            mv = client.create_model_version(
                name,
                source=run.info.artifact_uri,
                run_id=run_id,
                tags=tags,
                description=f"{size}: best final validation loss {run.data.metrics[M.VAL_LOSS]:.4g} in sweep {sweep}",
            )
            version = mv.version
        out.append(RegisteredVersion(name, str(version), size, run_id, float(run.data.metrics[M.VAL_LOSS])))
    return out
