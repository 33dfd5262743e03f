"""Run a scaling sweep: ``python -m engine.scale --axis {params,data,compute}``.

Examples::

    python -m engine.scale --axis params                      # default space search_spaces/params.yaml
    python -m engine.scale --axis data --seeds 3 --epochs 20
    python -m engine.scale --axis compute --name frontier-1
    python -m engine.scale --axis compute --name frontier-grid --no-early-stop   # the full grid, nothing stopped
    python -m engine.scale --name frontier-1 --resume          # continue an interrupted sweep
    python -m engine.scale --axis params --address auto       # on a Ray cluster (ray up cluster.yaml)
    python -m engine.scale --axis params --lr-from hpo-ladder         # each size's tuned lr/batch size (engine.tune)

Thin: parse, load and override the search space, call :func:`engine.sweep.runner.run_sweep`,
print where the results are.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from engine import paths
from engine.cli import run_cli
from engine.errors import ConfigError
from engine.sweep.cli_common import add_common_args, build_space, failed_trials_exit, print_summary

__all__ = ["build_parser", "build_space", "main"]

AXES = ("params", "data", "compute")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m engine.scale", description=__doc__.splitlines()[0])
    parser.add_argument("--axis", choices=AXES, help="which scaling axis (default: the space file's)")
    parser.add_argument("--lr-from", metavar="SWEEP",
                        help="tuned lr and batch size of an engine.tune sweep (per size when it tuned several)")
    parser.add_argument("--no-early-stop", action="store_true",
                        help="compute axis: no early stopping; every trial to the last budget (the reference grid)")
    add_common_args(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from engine.report.build import report_after_sweep
    from engine.sweep.runner import SweepOptions, load_saved_space, run_sweep, sweep_dir_for

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
        result.report_path = report_after_sweep(result.name, result.tracking_uri)
    print_summary(result, space.axis)
    return 130 if result.interrupted else failed_trials_exit(result, "engine.scale")


if __name__ == "__main__":
    sys.exit(run_cli(main))
