"""Tune the learning rate and batch size of each model size: ``python -m engine.tune [--sizes p0,p1,…]``.

Optuna's TPE sampler (``ray.tune.search.optuna.OptunaSearch``) proposes (lr, batch size), lr
log-uniform; ASHA stops poor trials early by epoch. One size: the best values are saved to
``sweeps/<name>/best_config.json`` and as params ``best.lr`` / ``best.batch_size`` of the sweep's
MLflow parent run. Several sizes (``--sizes``): one search per size, each a sweep ``<name>-<size>``,
their bests gathered in ``sweeps/<name>/best_config.json``, and one tuning report for all of them.
``python -m engine.scale --lr-from <name>`` then gives each size its own tuned values: a scaling law
over one shared learning rate can measure the learning rate, not the model (Porian et al. 2024).

Examples::

    python -m engine.tune                                   # search_spaces/hpo.yaml
    python -m engine.tune --sizes p0,p1,p2,p3 --num-samples 8 --name hpo-ladder
    python -m engine.scale --axis params --sizes p0,p1,p2,p3 --lr-from hpo-ladder
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from engine.cli import run_cli
from engine.errors import ConfigError


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from engine.sweep.cli_common import add_common_args

    parser = argparse.ArgumentParser(prog="python -m engine.tune", description=__doc__.splitlines()[0])
    parser.add_argument("--num-samples", type=int, help="trials Optuna proposes (per size)")
    parser.add_argument("--search-seed", type=int, default=0, help="seed of the Optuna sampler")
    add_common_args(parser)
    args = parser.parse_args(argv)
    if args.resume:
        raise ConfigError("engine.tune does not resume a search; start a new one with --name")
    if args.num_samples is not None and args.num_samples < 1:
        raise ConfigError(f"--num-samples must be ≥ 1, got {args.num_samples}")
    args.lr_from = None
    return args


def main(argv: list[str] | None = None) -> int:
    from engine.report.build import report_after_sweep
    from engine.sweep.cli_common import build_space, print_summary
    from engine.sweep.hpo import tune_space, write_per_size
    from engine.sweep.runner import SweepOptions

    args = parse_args(argv)
    sizes = args.sizes or [None]
    spaces = []
    for size in sizes:  # every size's space is built (and checked) before the first search starts
        args.sizes = [size] if size else None
        space = build_space(args, "hpo")
        if args.num_samples is not None:
            space.search.num_samples = args.num_samples
        spaces.append(space)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    name = args.name or (f"hpo-{spaces[0].model}-{spaces[0].sizes[0]}-{stamp}" if len(spaces) == 1
                         else f"hpo-{spaces[0].model}-{stamp}")
    text = Path(spaces[0].source).read_text() if Path(spaces[0].source).is_file() else None
    bests, results = {}, []
    for space in spaces:
        sweep = name if len(spaces) == 1 else f"{name}-{space.sizes[0]}"
        options = SweepOptions(name=sweep, address=args.address, tracking_uri=args.tracking_uri, storage=args.storage)
        result, best = tune_space(space, options, args.search_seed, text)
        results.append(result)
        if best is None:  # interrupted: stop here, the finished sizes keep their best_config.json
            print_summary(result, "hpo")
            return 130
        bests[space.sizes[0]] = best
        print(f"best for {space.sizes[0]}: lr {best['lr']:.3g}, batch size {best['batch_size']} "
              f"(val_loss {best['val_loss']:.4g}, {best['trial_id']})")
        print_summary(result, "hpo")
    if len(spaces) > 1:
        path = write_per_size(name, bests)
        print(f"per-size best values: {path}")
    print(f"use them with: python -m engine.scale --axis params --sizes {','.join(bests)} --lr-from {name}")
    if not args.no_report:
        # one size: the search is the sweep `name`; several: one search per size, one report `name`
        report = report_after_sweep(name, results[0].tracking_uri, sweeps=[r.name for r in results])
        print(f"tuning report: {report}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
