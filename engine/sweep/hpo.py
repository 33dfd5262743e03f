"""Tuning one model size's learning rate and batch size: Optuna (TPE) + ASHA inside a sweep, the best trial.

The library behind ``python -m engine.tune``: :func:`make_tuner_factory` builds the Tuner that
:func:`engine.sweep.runner.run_sweep` runs; :func:`tune_space` runs one search and records its best
trial (``best_config.json`` and the parent run's ``best.*`` params), where ``engine.scale --lr-from``
finds it. ``engine.tune --sizes p0,p1,…`` runs one search per size (a sweep ``<name>-<size>`` each) and
:func:`write_per_size` gathers their bests in ``sweeps/<name>/best_config.json`` as ``per_size``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from engine import paths
from engine.errors import ConfigError
from engine.sweep.cli_common import BEST_CONFIG


def make_tuner_factory(space: Any, seed: int = 0):
    """A ``tuner_factory`` for :func:`engine.sweep.runner.run_sweep`: Optuna + ASHA over ``space.search``."""
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    from engine.sweep.asha import RecordingASHA

    search = space.search
    epochs = int(space.fixed.get("epochs", 10))

    def factory(trainable: Any, base_spec: dict, tune_kwargs: dict, run_config: Any) -> Any:
        param_space = {
            "trial": base_spec,
            "hpo": {
                "lr": tune.loguniform(search.lr_min, search.lr_max),
                "batch_size": tune.choice(list(search.batch_sizes)),
            },
        }
        scheduler = RecordingASHA(
            time_attr="epoch",
            grace_period=min(search.grace_epochs, epochs),
            max_t=epochs,
            reduction_factor=search.reduction_factor,
        )
        kwargs = dict(tune_kwargs)
        kwargs.update(
            metric="val_loss",
            mode="min",
            num_samples=search.num_samples,
            search_alg=OptunaSearch(seed=seed),
            scheduler=scheduler,
        )
        factory.scheduler = scheduler
        return tune.Tuner(trainable, param_space=param_space, tune_config=tune.TuneConfig(**kwargs),
                          run_config=run_config)

    return factory


def best_trial(result: Any) -> dict:
    """The trial with the lowest final val_loss among those trained to the end (else among all)."""
    finals = [(k, t) for k, t in result.trials.items() if t["status"] != "diverged"
              and t["last"].get("val_loss") is not None and math.isfinite(float(t["last"]["val_loss"]))]
    completed = [(k, t) for k, t in finals if t["status"] == "completed"] or finals
    if not completed:
        raise ConfigError(f"sweep {result.name}: no trial reported a val_loss; check the trials' logs")
    trial_id, t = min(completed, key=lambda kt: kt[1]["last"]["val_loss"])
    from engine.sweep.storage import TrialStorage

    stored = TrialStorage(result.storage or str(result.sweep_dir)).read_text(f"trials/{trial_id}/config.json")
    if stored is None:
        raise ConfigError(f"sweep {result.name}: trial {trial_id} has no config.json in its storage")
    config = json.loads(stored)
    return {
        "trial_id": trial_id,
        "val_loss": float(t["last"]["val_loss"]),
        "lr": float(config["optim"]["lr"]),
        "batch_size": int(config["batch_size"]),
    }


def tune_space(space: Any, options: Any, seed: int = 0, space_text: str | None = None) -> tuple[Any, dict | None]:
    """Run one search over ``space`` (one size); returns (the sweep result, its best trial or None if interrupted)."""
    from engine.sweep.runner import run_sweep
    from engine.sweep.tracking import SweepTracker

    result = run_sweep(space, options, space_text=space_text, tuner_factory=make_tuner_factory(space, seed))
    if result.interrupted:
        return result, None
    best = best_trial(result)
    best["preset"] = space.sizes[0]
    best["sweep"] = options.name
    (Path(result.sweep_dir) / BEST_CONFIG).write_text(json.dumps(best, indent=2) + "\n")
    tracker = SweepTracker(result.tracking_uri, options.name, "hpo")
    tracker.parent_id = result.parent_run_id
    tracker.log_parent(
        metrics={"best.val_loss": best["val_loss"]},
        params={"best.lr": best["lr"], "best.batch_size": best["batch_size"], "best.trial_id": best["trial_id"]},
    )
    return result, best


def write_per_size(name: str, bests: dict[str, dict]) -> Path:
    """``sweeps/<name>/best_config.json`` holding each size's best (``{"per_size": {preset: best}}``)."""
    folder = paths.sweeps_dir() / name
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / BEST_CONFIG
    path.write_text(json.dumps({"per_size": bests}, indent=2) + "\n")
    return path
