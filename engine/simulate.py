"""Check a compute-axis scheduler against the full grid without training: ``python -m engine.simulate``.

Examples::

    # 200 synthetic studies of a known surface, the frontier policy (default) and ASHA
    python -m engine.simulate --surface "E=1.5,A=300,alpha=0.45,B=300,beta=0.28" \\
        --flops-per-param-structure 6 --sizes 1e4,2.5e4,6.3e4,1.6e5,4e5,1e6,2.5e6 \\
        --budgets 1e11,3.2e11,1e12,3.2e12,1e13,3.2e13 --seeds 2 --noise 0.03 --studies 200
    python -m engine.simulate ... --scheduler asha
    # a recorded full-grid compute sweep replayed through the scheduler
    python -m engine.simulate --replay reports/gallery/seed/runs/seed-cpu-eqv2-compute.json

Prints one JSON object on stdout (the summary the issue's bars read; for a replay, the runs kept and
stopped at each rung) and a table on stderr. Thin: the library is :mod:`engine.sweep.simulation`.
"""

from __future__ import annotations

import argparse
import json
import sys

from engine.cli import run_cli
from engine.errors import ConfigError


def _floats(text: str, what: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise ConfigError(f"{what} takes comma-separated numbers, got {text!r}") from exc
    if len(values) < 2 or any(v <= 0 for v in values) or values != sorted(values) or len(set(values)) < len(values):
        raise ConfigError(f"{what} needs ≥ 2 increasing positive numbers, got {text!r}")
    return values


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m engine.simulate", description=__doc__.splitlines()[0])
    p.add_argument("--surface", help='"E=…,A=…,alpha=…,B=…,beta=…": L(N, D) = E + A·N^−α + B·D^−β')
    p.add_argument("--flops-per-param-structure", type=float, default=6.0, metavar="K",
                   help="FLOPs per parameter per structure seen: D = C/(K·N) (default 6)")
    p.add_argument("--sizes", help="parameter counts N1,N2,… (increasing)")
    p.add_argument("--budgets", help="FLOP rungs C1,C2,… (increasing; the last is the full budget)")
    p.add_argument("--seeds", type=int, default=2, help="seeds per size (default 2)")
    p.add_argument("--noise", type=float, default=0.03, help="σ of the per-run log-normal offset (default 0.03)")
    p.add_argument("--report-noise", type=float, default=None,
                   help="σ of the per-report log-normal noise (default noise/3)")
    p.add_argument("--studies", type=int, default=200, help="independent studies (default 200)")
    p.add_argument("--cooldown-fraction", type=float, default=0.2, help="a rung's cooldown, as a share of its FLOPs")
    p.add_argument("--seed", type=int, default=0, help="random seed of the draws")
    p.add_argument("--replay", metavar="RUNS_JSON", help="a recorded full-grid compute sweep (runs/<sweep>.json)")
    p.add_argument("--metric", default="val_loss", help="the metric a replay reads (default val_loss)")
    p.add_argument("--scheduler", choices=("frontier", "asha"), default="frontier")
    p.add_argument("--through-tune", type=int, default=0, metavar="K",
                   help="also run the first K studies through real Ray Tune (the adapter) and check its decisions")
    p.add_argument("--asha-order", choices=("small-first", "large-first", "random"), default="small-first",
                   help="the order trials reach ASHA's rungs (ASHA's cuts depend on it)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from engine.sweep import simulation as sim

    if args.replay:
        study = sim.replay_study(args.replay, args.metric)
        out = sim.replay_summary(study, args.scheduler, args.asha_order)
        print(sim.replay_table(out), file=sys.stderr)
    else:
        if not (args.surface and args.sizes and args.budgets):
            raise ConfigError("pass --surface, --sizes and --budgets (or --replay RUNS_JSON)")
        if args.seeds < 1 or args.studies < 1 or args.noise < 0:
            raise ConfigError("--seeds and --studies must be ≥ 1 and --noise ≥ 0")
        studies = sim.synthetic_studies(
            sim.parse_surface(args.surface), args.flops_per_param_structure, _floats(args.sizes, "--sizes"),
            _floats(args.budgets, "--budgets"), args.seeds, args.noise, args.studies, args.report_noise,
            args.cooldown_fraction, args.seed)
        summary, _ = sim.simulate(studies, args.scheduler, args.asha_order)
        out = summary.to_dict()
        if args.through_tune > 0:
            out["tune_agrees"] = sim.check_through_tune(studies[: args.through_tune])
        print(sim.summary_table([summary]), file=sys.stderr)
    print(json.dumps(out, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
