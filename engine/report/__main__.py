"""``python -m engine.report --sweep NAME [--sweep NAME2] [--runs FILE] [--out DIR] [--metric M ...]``

Reads the sweep(s) from MLflow, fits every axis and metric present, and writes report.md,
report.html, fits.json, PNG plots and runs/<sweep>.json to reports/<sweep>/ (and to the parent run as
artifacts). ``--runs`` reads a sweep from such a runs file instead, so a report folder rebuilds without
its MLflow store. ``--list`` prints the sweeps in the store.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from engine.cli import run_cli
from engine.errors import UserError


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m engine.report", description=__doc__.split("\n\n")[1])
    p.add_argument("--sweep", action="append", default=[], help="sweep (MLflow experiment) name; repeat to compare")
    p.add_argument("--runs", action="append", type=Path, default=[],
                   help="a sweep's runs file (runs/<sweep>.json in a report folder) instead of MLflow; repeat")
    p.add_argument("--tracking-uri", default=None, help="MLflow store (default $MLFLOW_TRACKING_URI or ./mlflow.db)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default reports/<sweep>)")
    p.add_argument("--metric", action="append", default=None,
                   help="metric to fit (default: val loss, energy, forces, stress MAE)")
    p.add_argument("--n-boot", type=int, default=500, help="bootstrap resamples over runs (default 500)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.add_argument("--no-mlflow-artifacts", action="store_true", help="do not upload the report to the parent run")
    p.add_argument("--list", action="store_true", help="list the sweeps in the store and exit")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list:
        from engine.report.collect import list_sweeps

        for name in list_sweeps(args.tracking_uri):
            print(name)
        return 0
    if not args.sweep and not args.runs:
        raise UserError("name a sweep with --sweep NAME (list them with `python -m engine.report --list`) "
                        "or a runs file with --runs FILE")
    if args.n_boot < 0:
        raise UserError(f"--n-boot must be ≥ 0, got {args.n_boot}")
    from engine.report.build import build_report

    out = build_report(args.sweep, args.tracking_uri, args.out, args.metric, n_boot=args.n_boot, seed=args.seed,
                       log_to_mlflow=not args.no_mlflow_artifacts, runs=args.runs)
    print(f"report: {out / 'report.html'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
