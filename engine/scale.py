"""Run a scaling sweep: ``python -m engine.scale --axis {params,data,compute}``.

Examples::

    python -m engine.scale --axis params                      # default space search_spaces/params.yaml
    python -m engine.scale --axis data --seeds 3 --epochs 20
    python -m engine.scale --axis compute --name frontier-1
    python -m engine.scale --name frontier-1 --resume          # continue an interrupted sweep
    python -m engine.scale --axis params --address auto       # on a Ray cluster (ray up cluster.yaml)
    python -m engine.scale --axis params --lr-from hpo-p3             # lr/batch size from an engine.tune sweep

Thin: parse, load and override the search space, call :func:`engine.sweep.runner.run_sweep`,
print where the results are.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from engine import paths
from engine.cli import run_cli
from engine.errors import ConfigError

AXES = ("params", "data", "compute")


def _csv(kind: type):
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
    parser.add_argument("--sizes", type=_csv(str), help="comma-separated preset names, e.g. p0,p1,p2")
    parser.add_argument("--train-sizes", type=_csv(int), help="comma-separated training-set sizes (structures)")
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
    """The search space the arguments describe (file, then command-line overrides)."""
    import dataclasses

    from engine.sweep.spaces import load_space, with_overrides

    space = load_space(args.space, axis=axis if args.space is None else None)
    if axis is not None and space.axis != axis:
        raise ConfigError(f"{args.space} is a space for axis {space.axis!r}; pass --axis {space.axis} or another file")
    lr, batch_size = args.lr, args.batch_size
    if getattr(args, "lr_from", None):
        best = best_hyperparameters(args.lr_from, args.tracking_uri)
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


def best_hyperparameters(sweep: str, tracking_uri: str | None = None) -> dict:
    """Best lr and batch size of an ``engine.tune`` sweep: its ``best_config.json``, else its MLflow parent run."""
    path = paths.sweeps_dir() / sweep / "best_config.json"
    if path.is_file():
        best = json.loads(path.read_text())
        return {"lr": float(best["lr"]), "batch_size": int(best["batch_size"])}
    from mlflow import MlflowClient

    from engine.sweep.tracking import check_reachable

    uri = tracking_uri or paths.default_tracking_uri()
    check_reachable(uri)
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(sweep)
    if exp is not None:
        runs = client.search_runs(
            [exp.experiment_id], filter_string=f"tags.`engine.kind` = 'sweep' and tags.`engine.sweep` = '{sweep}'"
        )
        for run in runs:
            params = run.data.params
            if "best.lr" in params and "best.batch_size" in params:
                return {"lr": float(params["best.lr"]), "batch_size": int(params["best.batch_size"])}
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m engine.scale", description=__doc__.splitlines()[0])
    parser.add_argument("--axis", choices=AXES, help="which scaling axis (default: the space file's)")
    parser.add_argument("--lr-from", metavar="SWEEP", help="use the best lr and batch size of an engine.tune sweep")
    parser.add_argument("--no-early-stop", action="store_true",
                        help="compute axis: no ASHA; every trial to the last budget (the reference grid)")
    add_common_args(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from engine.sweep.runner import SweepOptions, load_saved_space, run_report, run_sweep, sweep_dir_for

    if args.resume:
        if not args.name:
            raise ConfigError("--resume needs --name of the sweep to continue")
        space = load_saved_space(sweep_dir_for(args.name))
        text = None
    else:
        if args.axis is None and args.space is None:
            raise ConfigError("pass --axis params|data|compute (or --space FILE)")
        space = build_space(args, args.axis)
        text = Path(space.source).read_text() if Path(space.source).is_file() else None
        if space.axis == "hpo":
            raise ConfigError(f"{space.source} is an hpo space; run it with python -m engine.tune")
    # A default name is new each run (so the same command can run twice); --name makes it reproducible.
    name = args.name or f"{space.axis}-{space.model}-{time.strftime('%Y%m%d-%H%M%S')}"
    if not args.resume:
        print(f"sweep {name}: interrupt with Ctrl-C, continue with python -m engine.scale --name {name} --resume")
    from engine.sweep.tracking import check_reachable

    check_reachable(args.tracking_uri or paths.default_tracking_uri())  # fail before the sweep folder is written
    options = SweepOptions(name=name, address=args.address, resume=args.resume, tracking_uri=args.tracking_uri,
                           storage=args.storage)
    result = run_sweep(space, options, space_text=text)
    if not args.no_report and not result.interrupted:
        result.report_path = run_report(result)
    print_summary(result, space.axis)
    return 130 if result.interrupted else 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
