"""Schedulers on the compute axis, checked against the full grid without training anything.

A *study* is a table of annealed losses: trials (size × seed) × FLOP rungs. The full grid reports every
cell; a scheduler reports the cells of the trials it lets run. Both frontiers are then estimated the same
way the report does (the lower envelope over sizes of each size's seed-mean curve, mean of log L per rung)
and compared (the envelope is :func:`engine.fit.frontier.seed_mean_envelope`'s on a table whose rungs sit at
the same FLOPs for every size; a test checks they agree): the exponent β of L = a·C^−β on the envelope (least
squares in log-log), the largest relative excess of the scheduler's
frontier over the grid's at any budget, the compute-optimal size at the last budget, and the FLOPs spent
(main runs plus one cooldown branch per rung reached, ``cooldown_fraction`` of the rung's FLOPs).

Two sources of studies:

- :func:`synthetic_studies`: L(N, C) = E + A·N^−α + B·(C/(K·N))^−β, times a per-run log-normal offset
  (σ = ``noise``: a seed that is luckier at every budget) and per-report log-normal noise (``report_noise``);
- :func:`replay_study`: the per-rung annealed losses of a recorded compute sweep (a report's
  ``runs/<sweep>.json``).

Two schedulers: the frontier policy (:mod:`engine.sweep.frontier_policy`, the same object the Ray Tune
adapter drives) and ASHA as Ray's ``AsyncHyperBandScheduler`` decides it (one bracket; a trial reporting at a
rung is stopped when its loss is worse than the (1 − 1/η) quantile of the losses already recorded there),
with trials arriving one at a time in a stated order.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.errors import ConfigError, DataError
from engine.sweep.frontier_policy import Arm, FrontierPolicy, PolicyConfig, run_synchronous

SURFACE_KEYS = ("E", "A", "alpha", "B", "beta")


@dataclass
class Study:
    """One study's table: sizes (ordered small → large), seeds, rungs, annealed losses, FLOPs per cell."""

    sizes: list[str]
    n_params: np.ndarray  # per size
    seeds: int
    budgets: np.ndarray  # per rung (the FLOPs coordinate)
    loss: np.ndarray  # [size, seed, rung], NaN where the grid has no report
    cost: np.ndarray  # [size, seed, rung]: FLOPs spent to reach and score the rung (main + that rung's cooldown)
    trial_ids: list[list[str]] = field(default_factory=list)  # [size][seed]
    policy_budgets: np.ndarray | None = None  # the rungs the policy is configured with (a replay: the space's)

    def __post_init__(self) -> None:
        if not self.trial_ids:
            self.trial_ids = [[f"{s}-s{k}" for k in range(self.seeds)] for s in self.sizes]


def parse_surface(text: str) -> dict[str, float]:
    """``"E=1.7,A=400,alpha=0.34,B=410,beta=0.28"`` → a dict of the five parameters."""
    out: dict[str, float] = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or key not in SURFACE_KEYS:
            raise ConfigError(f"--surface takes {','.join(k + '=…' for k in SURFACE_KEYS)}; got {item.strip()!r}")
        try:
            out[key] = float(value)
        except ValueError as exc:
            raise ConfigError(f"--surface {key}={value!r} is not a number") from exc
    missing = [k for k in SURFACE_KEYS if k not in out]
    if missing:
        raise ConfigError(f"--surface is missing {', '.join(missing)}")
    if out["E"] < 0 or out["A"] <= 0 or out["B"] <= 0 or out["alpha"] <= 0 or out["beta"] <= 0:
        raise ConfigError("--surface needs E ≥ 0 and A, alpha, B, beta > 0")
    return out


def surface_loss(surface: dict[str, float], n_params: np.ndarray, flops: np.ndarray, k: float) -> np.ndarray:
    """L(N, C) = E + A·N^−α + B·(C/(K·N))^−β on the outer grid [size, rung]."""
    n = np.asarray(n_params, float)[:, None]
    c = np.asarray(flops, float)[None, :]
    d = c / (k * n)
    return surface["E"] + surface["A"] * n ** -surface["alpha"] + surface["B"] * d ** -surface["beta"]


def synthetic_studies(surface: dict[str, float], k: float, sizes: list[float], budgets: list[float], seeds: int,
                      noise: float, studies: int, report_noise: float | None = None, cooldown_fraction: float = 0.2,
                      seed: int = 0) -> list[Study]:
    """``studies`` independent noisy draws of the same surface (module docstring)."""
    rng = np.random.default_rng(seed)
    n = np.asarray(sizes, float)
    b = np.asarray(budgets, float)
    sigma_r = noise / 3 if report_noise is None else report_noise
    base = np.log(surface_loss(surface, n, b, k))  # [size, rung]
    names = [f"N{v:.3g}" for v in n]
    cost = np.broadcast_to(b * (1 + cooldown_fraction), (len(n), seeds, len(b))).copy()
    out = []
    for _ in range(studies):
        offset = rng.normal(0.0, noise, (len(n), seeds, 1))
        jitter = rng.normal(0.0, sigma_r, (len(n), seeds, len(b)))
        loss = np.exp(base[:, None, :] + offset + jitter)
        out.append(Study(names, n, seeds, b, loss, cost))
    return out


# ---------------------------------------------------------------------------------------------
# frontier and comparison


def seed_mean_log(study: Study, alive: np.ndarray | None = None) -> np.ndarray:
    """Mean of log L over each size's seeds at each rung, [size, rung]; NaN where a size has no report
    (not reached, or stopped: ``alive[size, seed, rung]`` False)."""
    logl = np.log(study.loss)
    if alive is not None:
        logl = np.where(alive, logl, np.nan)
    with np.errstate(invalid="ignore"):
        counts = np.sum(np.isfinite(logl), axis=1)
        sums = np.nansum(logl, axis=1)
        mean = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    return mean


def envelope(mean_log: np.ndarray, budgets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(envelope log L per rung, the size index on it): min over sizes at each rung, then a running min over
    rungs (a smaller budget's point is also within a larger budget)."""
    filled = np.where(np.isfinite(mean_log), mean_log, np.inf)
    best_size = np.argmin(filled, axis=0)
    best = filled[best_size, np.arange(filled.shape[1])]
    env = np.minimum.accumulate(best)
    size = best_size.copy()
    for r in range(1, len(env)):
        if best[r] > env[r - 1]:
            size[r] = size[r - 1]
    return env, size


def frontier_beta(env_log: np.ndarray, budgets: np.ndarray) -> float:
    """β of L = a·C^−β, least squares in log-log through the envelope's distinct points."""
    ok = np.isfinite(env_log)
    keep = ok.copy()
    keep[1:] &= env_log[1:] < env_log[:-1]  # a flat stretch repeats an earlier point
    x, y = np.log(budgets[keep]), env_log[keep]
    if len(x) < 2:
        return float("nan")
    return float(-np.polyfit(x, y, 1)[0])


@dataclass
class Outcome:
    """One scheduler on one study, beside the grid."""

    beta_grid: float
    beta_scheduler: float
    frontier_gap: float  # max over rungs of (scheduler envelope − grid envelope) / grid envelope
    n_opt_match: bool  # the size best at the last budget is the same
    flops_fraction: float
    winner_grid: str
    winner_scheduler: str
    stopped_at: dict[str, int]  # trial → the rung after which it was stopped


def compare(study: Study, alive: np.ndarray) -> Outcome:
    """The scheduler's frontier (cells ``alive``) beside the grid's."""
    grid_env, grid_size = envelope(seed_mean_log(study), study.budgets)
    sch_env, sch_size = envelope(seed_mean_log(study, alive), study.budgets)
    gap = float(np.max(np.exp(sch_env - grid_env) - 1.0))
    spent = float(np.sum(np.where(alive, study.cost, 0.0)))
    total = float(np.sum(study.cost[np.isfinite(study.loss)]))
    stopped = {}
    for i in range(len(study.sizes)):
        for s in range(study.seeds):
            reached = np.flatnonzero(alive[i, s])
            if len(reached) and reached[-1] < len(study.budgets) - 1 and np.isfinite(study.loss[i, s, -1]):
                stopped[study.trial_ids[i][s]] = int(reached[-1])
            elif not len(reached):
                stopped[study.trial_ids[i][s]] = -1
    return Outcome(
        beta_grid=frontier_beta(grid_env, study.budgets),
        beta_scheduler=frontier_beta(sch_env, study.budgets),
        frontier_gap=max(gap, 0.0),
        n_opt_match=bool(grid_size[-1] == sch_size[-1]),
        flops_fraction=spent / total if total > 0 else float("nan"),
        winner_grid=study.sizes[grid_size[-1]],
        winner_scheduler=study.sizes[sch_size[-1]],
        stopped_at=stopped,
    )


# ---------------------------------------------------------------------------------------------
# schedulers


def policy_for(study: Study, config: PolicyConfig | None = None) -> FrontierPolicy:
    arms = [Arm(study.trial_ids[i][s], study.sizes[i], float(study.n_params[i]), s)
            for i in range(len(study.sizes)) for s in range(study.seeds)]
    budgets = study.policy_budgets if study.policy_budgets is not None else study.budgets
    return FrontierPolicy(arms, config or PolicyConfig(budgets=[float(b) for b in budgets]))


def run_frontier(study: Study, config: PolicyConfig | None = None) -> tuple[np.ndarray, FrontierPolicy]:
    """The frontier policy on the study, rung by rung: ``alive[size, seed, rung]`` and the policy."""
    policy = policy_for(study, config)
    curves = {}
    for i in range(len(study.sizes)):
        for s in range(study.seeds):
            row = study.loss[i, s]
            n = int(np.argmax(~np.isfinite(row))) if not np.all(np.isfinite(row)) else len(row)
            curves[study.trial_ids[i][s]] = [float(v) for v in row[:n]]
    run_synchronous(policy, curves)
    alive = np.zeros(study.loss.shape, dtype=bool)
    for i in range(len(study.sizes)):
        for s in range(study.seeds):
            t = study.trial_ids[i][s]
            alive[i, s, : len(policy.losses[t])] = [r in policy.losses[t] for r in range(len(policy.losses[t]))]
    return alive & np.isfinite(study.loss), policy


def arrival_order(study: Study, order: str, rng: np.random.Generator) -> list[tuple[int, int]]:
    cells = [(i, s) for i in range(len(study.sizes)) for s in range(study.seeds)]
    if order == "small-first":
        return cells
    if order == "large-first":
        return sorted(cells, key=lambda c: (-c[0], c[1]))
    if order == "random":
        return [cells[j] for j in rng.permutation(len(cells))]
    raise ConfigError(f"--asha-order is small-first, large-first or random; got {order!r}")


def run_asha(study: Study, order: str = "small-first", seed: int = 0) -> np.ndarray:
    """ASHA as Ray decides it (module docstring): trials one at a time in ``order``; ``alive[size, seed, rung]``."""
    rng = np.random.default_rng(seed)
    b = study.budgets
    eta = float(b[1] / b[0])
    recorded: list[list[float]] = [[] for _ in b]
    alive = np.zeros(study.loss.shape, dtype=bool)
    for i, s in arrival_order(study, order, rng):
        for r in range(len(b)):
            value = study.loss[i, s, r]
            if not np.isfinite(value):
                break
            alive[i, s, r] = True
            if r == len(b) - 1:
                break
            cutoff = float(np.percentile(recorded[r], 100.0 / eta)) if recorded[r] else None
            recorded[r].append(float(value))
            if cutoff is not None and value > cutoff:
                break
    return alive


# ---------------------------------------------------------------------------------------------
# many studies


@dataclass
class Summary:
    """Over studies: the figures the issue's bars read."""

    scheduler: str
    studies: int
    beta_grid: float  # median over studies
    beta_scheduler: float
    abs_dbeta_median: float
    abs_dbeta_p95: float
    frontier_gap_p95: float
    frontier_gap_max: float
    n_opt_match_rate: float
    flops_fraction: float  # mean over studies
    flops_fraction_max: float
    optimal_size_changes: float  # median number of times the grid's best size changes over the rungs

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def summarize(name: str, studies: list[Study], outcomes: list[Outcome]) -> Summary:
    dbeta = np.abs(np.array([o.beta_scheduler - o.beta_grid for o in outcomes]))
    gaps = np.array([o.frontier_gap for o in outcomes])
    frac = np.array([o.flops_fraction for o in outcomes])
    changes = []
    for st in studies:
        _, size = envelope(seed_mean_log(st), st.budgets)
        changes.append(int(np.sum(size[1:] != size[:-1])))
    return Summary(
        scheduler=name,
        studies=len(outcomes),
        beta_grid=float(np.median([o.beta_grid for o in outcomes])),
        beta_scheduler=float(np.median([o.beta_scheduler for o in outcomes])),
        abs_dbeta_median=float(np.nanmedian(dbeta)),
        abs_dbeta_p95=float(np.nanpercentile(dbeta, 95)),
        frontier_gap_p95=float(np.percentile(gaps, 95)),
        frontier_gap_max=float(np.max(gaps)),
        n_opt_match_rate=float(np.mean([o.n_opt_match for o in outcomes])),
        flops_fraction=float(np.mean(frac)),
        flops_fraction_max=float(np.max(frac)),
        optimal_size_changes=float(np.median(changes)),
    )


def simulate(studies: list[Study], scheduler: str, asha_order: str = "small-first",
             config: PolicyConfig | None = None) -> tuple[Summary, list[Outcome]]:
    outcomes = []
    for j, st in enumerate(studies):
        if scheduler == "frontier":
            alive, _ = run_frontier(st, config)
        elif scheduler == "asha":
            alive = run_asha(st, asha_order, seed=j)
        else:
            raise ConfigError(f"--scheduler is frontier or asha; got {scheduler!r}")
        outcomes.append(compare(st, alive))
    return summarize(scheduler, studies, outcomes), outcomes


# ---------------------------------------------------------------------------------------------
# replay of a recorded sweep


def replay_study(path: str | Path, metric: str = "val_loss", cooldown_fraction: float | None = None) -> Study:
    """The per-rung annealed losses of a recorded full-grid compute sweep (``runs/<sweep>.json``) as a study.

    Sizes are (preset, training-set size), ordered by parameter count; seeds are the trials of a size; a rung's
    FLOPs coordinate is the mean over the size's trials of what they logged at it; a cell's cost is the FLOPs
    the trial logged at that rung minus those at the previous one (cooldowns included as logged)."""
    p = Path(path)
    try:
        values = json.loads(p.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read {p} as a runs file ({exc}); pass a report's runs/<sweep>.json") from exc
    if not isinstance(values, dict) or "columns" not in values or "rows" not in values:
        raise DataError(f"{p} is not a runs file (no columns/rows); pass a report's runs/<sweep>.json")
    cols = values["columns"]
    need = ["run_id", "preset", "n_params", "train_size", "seed", "rung", "flops_cum", metric]
    missing = [c for c in need if c not in cols]
    if missing:
        raise DataError(f"{p} has no column(s) {', '.join(missing)}: replay needs a compute-axis sweep with rungs")
    at = {c: cols.index(c) for c in cols}
    rows = [r for r in values["rows"] if r[at["rung"]] is not None and not _nan(r[at["rung"]])]
    if not rows:
        raise DataError(f"{p} holds no rung reports; replay needs a compute-axis sweep (axis compute, with rungs)")
    spent_col = at.get("flops_spent")
    trials: dict[str, dict] = {}
    for r in rows:
        t = trials.setdefault(str(r[at["run_id"]]), {"size": f"{r[at['preset']]}-n{int(r[at['train_size']])}",
                                                     "n_params": float(r[at["n_params"]]), "seed": r[at["seed"]],
                                                     "rungs": {}})
        spent = r[spent_col] if spent_col is not None and r[spent_col] is not None else r[at["flops_cum"]]
        t["rungs"][int(r[at["rung"]])] = (float(r[at[metric]]) if r[at[metric]] is not None else float("nan"),
                                          float(r[at["flops_cum"]]), float(spent))
    sizes = sorted({t["size"] for t in trials.values()}, key=lambda s: next(
        t["n_params"] for t in trials.values() if t["size"] == s))
    by_size = {s: sorted((t for t in trials.values() if t["size"] == s), key=lambda t: str(t["seed"])) for s in sizes}
    seeds = max(len(v) for v in by_size.values())
    n_rungs = max(max(t["rungs"]) for t in trials.values()) + 1
    loss = np.full((len(sizes), seeds, n_rungs), np.nan)
    flops = np.full_like(loss, np.nan)
    cost = np.zeros_like(loss)
    ids = []
    for i, s in enumerate(sizes):
        ids.append([])
        for j, t in enumerate(by_size[s]):
            ids[i].append(f"{s}-s{_seed_name(t['seed'])}")
            prev = 0.0
            for r in range(n_rungs):
                if r in t["rungs"]:
                    loss[i, j, r], flops[i, j, r], spent = t["rungs"][r]
                    cost[i, j, r] = spent - prev
                    prev = spent
        ids[i] += [f"{s}-missing{j}" for j in range(len(by_size[s]), seeds)]
    incomplete = [ids[i][j] for i in range(len(sizes)) for j in range(seeds) if not np.isfinite(loss[i, j, -1])]
    if incomplete:
        raise DataError(f"{p}: trial(s) {', '.join(incomplete[:3])} did not reach the last rung; replay needs the "
                        "full grid (rerun the sweep with --no-early-stop)")
    budgets = np.exp(np.nanmean(np.log(flops), axis=(0, 1)))
    n_params = np.array([by_size[s][0]["n_params"] for s in sizes])
    # the policy runs on the rungs the sweep was configured with (rung_flops), as it did live; the frontier's
    # coordinates stay the FLOPs each rung's model was trained with
    policy_budgets = None
    if "rung_flops" in at:
        per_rung: dict[int, list[float]] = {}
        for r in rows:
            if r[at["rung_flops"]] is not None:
                per_rung.setdefault(int(r[at["rung"]]), []).append(float(r[at["rung_flops"]]))
        if len(per_rung) == n_rungs:
            policy_budgets = np.array([float(np.median(per_rung[k])) for k in range(n_rungs)])
            policy_budgets[-1] = max(policy_budgets[-1], policy_budgets[-2] * (1 + 1e-9))
    return Study(sizes, n_params, seeds, budgets, loss, cost, ids, policy_budgets)


def _nan(v: object) -> bool:
    return isinstance(v, float) and math.isnan(v)


def replay_summary(study: Study, scheduler: str, asha_order: str = "small-first") -> dict:
    """One recorded sweep through ``scheduler``: the comparison with its grid and the runs kept per rung."""
    if scheduler == "frontier":
        alive, policy = run_frontier(study)
        reasons = {t: f"{d.rule}: {d.why}" for t, d in policy.stops.items()}
    else:
        alive, reasons = run_asha(study, asha_order), {}
    o = compare(study, alive)
    per_rung = []
    for r in range(len(study.budgets)):
        kept = [study.trial_ids[i][s] for i in range(len(study.sizes)) for s in range(study.seeds) if alive[i, s, r]]
        stopped = [t for t, at in o.stopped_at.items() if at == r]
        per_rung.append({"rung": r, "flops": float(study.budgets[r]), "kept": kept, "stopped_after": stopped})
    return {
        "scheduler": scheduler,
        "sizes": study.sizes,
        "beta_grid": o.beta_grid,
        "beta_scheduler": o.beta_scheduler,
        "abs_dbeta": abs(o.beta_scheduler - o.beta_grid),
        "frontier_gap": o.frontier_gap,
        "winner_grid": o.winner_grid,
        "winner_scheduler": o.winner_scheduler,
        "keeps_last_winner": o.winner_grid == o.winner_scheduler and any(
            alive[study.sizes.index(o.winner_grid), :, -1]),
        "flops_fraction": o.flops_fraction,
        "rungs": per_rung,
        "why_stopped": reasons,
    }


def replay_table(out: dict) -> str:
    lines = [f"{out['scheduler']}: grid winner at the last budget {out['winner_grid']}, scheduler's "
             f"{out['winner_scheduler']} ({'kept' if out['keeps_last_winner'] else 'LOST'}); β grid "
             f"{out['beta_grid']:.4f}, scheduler {out['beta_scheduler']:.4f}; frontier gap {out['frontier_gap']:.4f}; "
             f"FLOPs {100 * out['flops_fraction']:.1f} % of the grid"]
    for r in out["rungs"]:
        lines.append(f"  rung {r['rung']} ({r['flops']:.3g} FLOPs): {len(r['kept'])} reported; stopped after it: "
                     f"{', '.join(r['stopped_after']) or '—'}")
    return "\n".join(lines)


def summary_table(summaries: list[Summary]) -> str:
    cols = ["scheduler", "studies", "beta_grid", "beta_scheduler", "abs_dbeta_median", "abs_dbeta_p95",
            "frontier_gap_p95", "n_opt_match_rate", "flops_fraction", "optimal_size_changes"]
    rows = [cols] + [[f"{v:.4g}" if isinstance(v, float) else str(v) for v in (s.to_dict()[c] for c in cols)]
                     for s in summaries]
    width = [max(len(r[j]) for r in rows) for j in range(len(cols))]
    return "\n".join("  ".join(v.rjust(w) for v, w in zip(r, width)) for r in rows)


def _seed_name(seed: object) -> str:
    try:
        return str(int(float(seed)))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return str(seed)


# ---------------------------------------------------------------------------------------------
# the same decisions through real Ray Tune


def _synthetic_trainable(config: dict) -> None:
    """A Tune trainable that replays one trial's annealed losses, rung by rung, as a compute trial reports
    them: its progress is saved (a file) before each report, so a trial paused at a rung restarts after it."""
    from ray import tune

    from engine import metrics as M

    spec = config["trial"]
    state = Path(spec["state_dir"]) / f"{spec['trial_id']}.json"
    done = json.loads(state.read_text())["rung"] if state.exists() else -1
    for rung in range(done + 1, len(spec["losses"])):
        tmp = state.with_suffix(".tmp")
        tmp.write_text(json.dumps({"rung": rung}))
        tmp.replace(state)
        tune.report({M.RUNG: float(rung), M.VAL_LOSS: spec["losses"][rung], M.FLOPS_CUM: spec["budgets"][rung]})


def run_through_tune(study: Study, state_dir: str | Path, max_running: int = 2, order: str = "small-first",
                     seed: int = 0) -> FrontierPolicy:
    """The study's trials as real Ray Tune trials (``max_running`` at once, created in ``order``) under the Tune
    adapter (engine.sweep.frontier_scheduler); the policy it ends with. Ray must be initialized."""
    import os

    from ray import tune

    from engine.sweep.frontier_scheduler import FrontierScheduler

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # no Tune tables on the console
    state_dir = Path(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    policy = policy_for(study)
    cells = arrival_order(study, order, np.random.default_rng(seed))
    grid = [{"trial_id": study.trial_ids[i][s], "losses": [float(v) for v in study.loss[i, s]],
             "budgets": [float(b) for b in study.budgets], "state_dir": str(state_dir)} for i, s in cells]
    scheduler = FrontierScheduler(policy, state_dir / "policy.json", max_running=max_running)
    tuner = tune.Tuner(
        tune.with_resources(_synthetic_trainable, {"cpu": 1}),
        param_space={"trial": tune.grid_search(grid)},
        tune_config=tune.TuneConfig(scheduler=scheduler, reuse_actors=True),
        run_config=tune.RunConfig(storage_path=str(state_dir / "ray"), verbose=0),
    )
    tuner.fit()
    return scheduler.policy


def check_through_tune(studies: list[Study], max_running: int = 2) -> str:
    """Run each study through real Ray Tune (a local Ray started and shut down here, its files in a temporary
    folder) and compare the adapter's stops and reported cells with the core's: ``"K/K"`` studies agree."""
    import tempfile

    import ray

    agree = 0
    with tempfile.TemporaryDirectory(prefix="simulate-tune-") as tmp:
        started = not ray.is_initialized()
        if started:
            ray.init(address="local", num_cpus=max_running, include_dashboard=False, logging_level="ERROR",
                     _temp_dir=str(Path(tmp) / "ray"))
        try:
            for j, study in enumerate(studies):
                _, core = run_frontier(study)
                tuned = run_through_tune(study, Path(tmp) / f"study{j}", max_running=max_running,
                                         order="random", seed=j)
                agree += int(tuned.stopped_at() == core.stopped_at() and tuned.losses == core.losses)
        finally:
            if started:
                ray.shutdown()
    return f"{agree}/{len(studies)}"
