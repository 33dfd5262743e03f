"""Tune the learning rate and batch size of one model size: ``python -m engine.tune``.

Optuna's TPE sampler (``ray.tune.search.optuna.OptunaSearch``) proposes (lr, batch size), lr
log-uniform; ASHA stops poor trials early by epoch. The best values are saved to
``sweeps/<name>/best_config.json`` and as params ``best.lr`` / ``best.batch_size`` of the sweep's
MLflow parent run, where ``python -m engine.scale --lr-from <name>`` picks them up: a scaling law
over badly tuned sizes measures the tuning, not the model.

Examples::

    python -m engine.tune                                   # search_spaces/hpo.yaml
    python -m engine.tune --sizes p3 --num-samples 16 --name hpo-p3
    python -m engine.scale --axis params --lr-from hpo-p3
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from engine.cli import run_cli
from engine.errors import ConfigError


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
    finals = [(k, t) for k, t in result.trials.items() if t["last"].get("val_loss") is not None]
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


def main(argv: list[str] | None = None) -> int:
    from engine.scale import add_common_args, build_space, print_summary
    from engine.sweep.runner import SweepOptions, run_report, run_sweep
    from engine.sweep.tracking import SweepTracker

    parser = argparse.ArgumentParser(prog="python -m engine.tune", description=__doc__.splitlines()[0])
    parser.add_argument("--num-samples", type=int, help="trials Optuna proposes")
    parser.add_argument("--search-seed", type=int, default=0, help="seed of the Optuna sampler")
    add_common_args(parser)
    args = parser.parse_args(argv)
    if args.resume:
        raise ConfigError("engine.tune does not resume a search; start a new one with --name")
    args.lr_from = None
    space = build_space(args, "hpo")
    if args.num_samples is not None:
        if args.num_samples < 1:
            raise ConfigError(f"--num-samples must be ≥ 1, got {args.num_samples}")
        space.search.num_samples = args.num_samples
    name = args.name or f"hpo-{space.model}-{space.sizes[0]}-{time.strftime('%Y%m%d-%H%M%S')}"
    text = Path(space.source).read_text() if Path(space.source).is_file() else None
    options = SweepOptions(name=name, address=args.address, tracking_uri=args.tracking_uri, storage=args.storage)
    result = run_sweep(space, options, space_text=text, tuner_factory=make_tuner_factory(space, args.search_seed))
    if not result.interrupted:
        best = best_trial(result)
        (Path(result.sweep_dir) / "best_config.json").write_text(json.dumps(best, indent=2) + "\n")
        tracker = SweepTracker(result.tracking_uri, name, "hpo")
        tracker.parent_id = result.parent_run_id
        tracker.log_parent(
            metrics={"best.val_loss": best["val_loss"]},
            params={"best.lr": best["lr"], "best.batch_size": best["batch_size"], "best.trial_id": best["trial_id"]},
        )
        print(f"best: lr {best['lr']:.3g}, batch size {best['batch_size']} (val_loss {best['val_loss']:.4g}, "
              f"{best['trial_id']}); use it with: python -m engine.scale --axis params --lr-from {name}")
        if not args.no_report:
            result.report_path = run_report(result)
    print_summary(result, "hpo")
    return 130 if result.interrupted else 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
