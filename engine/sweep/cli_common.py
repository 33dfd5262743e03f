"""What ``engine.scale`` and ``engine.tune`` share: their common options, the space they describe, the
tuned hyperparameters ``--lr-from`` reads, and the closing summary. A library, so neither CLI imports
the other.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from engine import paths
from engine.errors import ConfigError

BEST_CONFIG = "best_config.json"  # written by engine.tune in sweeps/<name>/


def csv_list(kind: type):
    """An argparse type: a comma-separated list of ``kind``."""
    def parse(text: str) -> list:
        try:
            return [kind(x) for x in text.split(",") if x.strip()]
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list of {kind.__name__}: {text!r}") from exc

    return parse


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """Options shared by ``engine.scale`` and ``engine.tune``."""
    parser.add_argument("--space", type=Path, help="search space YAML (default: search_spaces/<axis>.yaml)")
    parser.add_argument("--model", help="model family (its presets must include the space's sizes, or pass --sizes)")
    parser.add_argument("--sizes", type=csv_list(str), help="comma-separated preset names, e.g. p0,p1,p2")
    parser.add_argument("--train-sizes", type=csv_list(int), help="comma-separated training-set sizes (structures)")
    parser.add_argument("--epochs", type=int, help="epochs per trial")
    parser.add_argument("--lr", type=float, help="peak learning rate")
    parser.add_argument("--batch-size", type=int, help="structures per global batch")
    parser.add_argument("--amp", nargs="?", const=True, metavar="bf16|fp16", help="autocast; alone: bf16 if supported")
    parser.add_argument("--seeds", type=int, help="run seeds 0..K-1 for every grid point")
    parser.add_argument("--workers", type=int, help="DDP workers per trial (>1 runs Ray Train)")
    parser.add_argument("--gpus-per-worker", type=float, help="GPUs per worker (0 = CPU)")
    parser.add_argument("--address", help="Ray cluster address ('auto' joins the running cluster); default: local Ray")
    parser.add_argument("--storage", help="trial state all nodes see: shared path, s3://, gs:// (default: sweep dir)")
    parser.add_argument(
        "--name",
        help="sweep name (folder sweeps/<name>/ and MLflow experiment); default <axis>-<model>-<date>-<time>",
    )
    parser.add_argument("--resume", action="store_true", help="continue the interrupted sweep --name")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")
    parser.add_argument("--no-report", action="store_true", help="skip the report stage at the end")


def build_space(args: argparse.Namespace, axis: str | None):
    """The search space the arguments describe (file, then command-line overrides).

    ``args.lr_from`` (engine.scale): the tuned LR and batch size of an engine.tune sweep; a per-size tuning
    gives each size its own (the space's ``per_size``), and every size of the space must have been tuned.
    An explicit ``--lr`` / ``--batch-size`` wins over the tuned value.
    """
    import dataclasses

    from engine.sweep.spaces import load_space, with_overrides

    space = load_space(args.space, axis=axis if args.space is None else None)
    if axis is not None and space.axis != axis:
        raise ConfigError(f"{args.space} is a space for axis {space.axis!r}; pass --axis {space.axis} or another file")
    lr, batch_size, per_size = args.lr, args.batch_size, None
    if getattr(args, "lr_from", None):
        best = best_hyperparameters(args.lr_from, args.tracking_uri, args.sizes or space.sizes)
        if "per_size" in best:
            sizes = args.sizes or space.sizes
            missing = [s for s in sizes if s not in best["per_size"]]
            if missing:
                raise ConfigError(
                    f"--lr-from {args.lr_from} tuned sizes {', '.join(best['per_size'])}, not {', '.join(missing)}; "
                    f"tune them with python -m engine.tune --sizes {','.join(missing)} or pass --sizes")
            per_size = {}
            for s in sizes:
                entry = {"tuned_by": args.lr_from}
                if lr is None:
                    entry["lr"] = float(best["per_size"][s]["lr"])
                if batch_size is None:
                    entry["batch_size"] = int(best["per_size"][s]["batch_size"])
                per_size[s] = entry
            said = [f"{s} lr {e.get('lr', lr):.3g}, batch size {e.get('batch_size', batch_size)}"
                    for s, e in per_size.items()]
            print(f"--lr-from {args.lr_from}: " + "; ".join(said))
        else:
            lr = lr if lr is not None else best["lr"]
            batch_size = batch_size if batch_size is not None else best["batch_size"]
            print(f"--lr-from {args.lr_from}: lr {lr:.3g}, batch size {batch_size}")
    space = with_overrides(
        space,
        model=args.model,
        sizes=args.sizes,
        epochs=args.epochs,
        lr=lr,
        batch_size=batch_size,
        amp=args.amp,
        seeds=args.seeds,
        train_sizes=args.train_sizes,
        per_size=per_size,
    )
    if args.workers is not None or args.gpus_per_worker is not None:
        res = dataclasses.replace(
            space.resources,
            workers=args.workers if args.workers is not None else space.resources.workers,
            gpus_per_worker=(
                args.gpus_per_worker if args.gpus_per_worker is not None else space.resources.gpus_per_worker
            ),
        )
        if res.workers < 1 or res.gpus_per_worker < 0:
            raise ConfigError("--workers must be ≥ 1 and --gpus-per-worker ≥ 0")
        space = dataclasses.replace(space, resources=res)
    if getattr(args, "no_early_stop", False):
        if space.axis != "compute":
            raise ConfigError(f"--no-early-stop applies to the compute axis, not {space.axis!r}; remove it")
        space = dataclasses.replace(space, early_stop=False)
    return space


def _from_mlflow(client, sweep: str) -> dict | None:
    exp = client.get_experiment_by_name(sweep)
    if exp is None:
        return None
    runs = client.search_runs(
        [exp.experiment_id], filter_string=f"tags.`engine.kind` = 'sweep' and tags.`engine.sweep` = '{sweep}'"
    )
    for run in runs:
        params = run.data.params
        if "best.lr" in params and "best.batch_size" in params:
            return {"lr": float(params["best.lr"]), "batch_size": int(params["best.batch_size"])}
    return None


def best_hyperparameters(sweep: str, tracking_uri: str | None = None, sizes: list[str] | None = None) -> dict:
    """Tuned hyperparameters of an ``engine.tune`` run: ``{"lr", "batch_size"}`` for one size, or
    ``{"per_size": {preset: {"lr", "batch_size"}}}`` for a per-size tuning (``engine.tune --sizes``).

    Read from ``sweeps/<sweep>/best_config.json``, else from MLflow: the parent run of sweep ``<sweep>``,
    or of the per-size sweeps ``<sweep>-<preset>`` for ``sizes``.
    """
    path = paths.sweeps_dir() / sweep / BEST_CONFIG
    if path.is_file():
        best = json.loads(path.read_text())
        if "per_size" in best:
            return {"per_size": {p: {"lr": float(b["lr"]), "batch_size": int(b["batch_size"])}
                                 for p, b in best["per_size"].items()}}
        return {"lr": float(best["lr"]), "batch_size": int(best["batch_size"])}
    from mlflow import MlflowClient

    from engine.sweep.tracking import check_reachable

    uri = tracking_uri or paths.default_tracking_uri()
    check_reachable(uri)
    client = MlflowClient(tracking_uri=uri)
    single = _from_mlflow(client, sweep)
    if single is not None:
        return single
    per_size = {s: b for s in sizes or [] if (b := _from_mlflow(client, f"{sweep}-{s}")) is not None}
    if per_size:
        return {"per_size": per_size}
    raise ConfigError(
        f"no tuned hyperparameters for sweep {sweep!r} ({path} missing and no MLflow parent run with best.lr); "
        "run python -m engine.tune first"
    )


def print_summary(result, space_axis: str) -> None:
    """Where things are, and (compute axis) the fraction of the full grid's FLOPs used."""
    c = {s: sum(1 for t in result.trials.values() if t["status"] == s) for s in ("completed", "stopped", "failed")}
    print(
        f"sweep {result.name}: {c['completed']} completed, {c['stopped']} stopped early, {c['failed']} failed "
        f"({len(result.skipped)} finished before) in {result.wall_s:.1f} s "
        f"({result.loop_wall_s:.1f} s inside training loops)"
    )
    if space_axis == "compute" and result.compute_fraction is not None:
        print(
            f"compute: used {result.flops_used:.3e} FLOPs = {100 * result.compute_fraction:.1f} % of the full grid's "
            f"{result.flops_full_estimate:.3e} FLOPs (every size trained to the full budget)"
        )
    print(f"sweep folder: {result.sweep_dir}")
    uri = result.tracking_uri
    print(f"MLflow: experiment {result.name!r} in {uri}; browse with: python -m engine.ui --tracking-uri {uri}")
    if result.report_path:
        print(f"report: {result.report_path}")
    if result.interrupted:
        print(f"interrupted: continue with python -m engine.scale --name {result.name} --resume")


def failed_trials_exit(result, command: str) -> int:
    """Exit status after a sweep that was not interrupted: 1 with one ``error:`` line when trials failed.

    The finished trials, their MLflow runs and the report are kept; ``--resume`` retries only the failed ones
    (a failed trial gets no completion marker)."""
    failed = sorted(tid for tid, t in result.trials.items() if t["status"] == "failed")
    if not failed:
        return 0
    shown = ", ".join(failed[:3]) + (f" and {len(failed) - 3} more" if len(failed) > 3 else "")
    print(f"error: {len(failed)} trial(s) failed ({shown}); the error of each is in its MLflow run (tag "
          f"engine.error) and under {result.sweep_dir}; fix the cause, then retry them with "
          f"python -m {command} --name {result.name} --resume", file=sys.stderr)
    return 1
