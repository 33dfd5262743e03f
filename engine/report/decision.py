"""What the next compute buys: the decision section, first in every report.

Per model family, every sweep of that family in the report is pooled into one set of points, each a run's
*annealed* state: a compute-axis rung (scored after its cooldown branch) or the last report of a run that
trained to the end of its schedule (a cosine run ends annealed). A point is (N parameters, D structures seen
= epochs_run · train_size, repeats counted, C FLOPs counted for it) with its validation metrics. On them:

- the joint law L(N, D) = E + A·N^−a + B·D^−b (:func:`engine.fit.joint.fit_joint`, bootstrap over runs) and its
  graded verdict (:func:`engine.fit.verdict.grade_joint`);
- the FLOPs per structure the engine counted for each size, f(N) = C/D, fitted as f ∝ N^γ across sizes (a graph
  model's cost per structure depends on its neighbours, so not 6·N); with C = f(N)·D the compute-optimal
  allocation is N_opt ∝ C^(b/(a+γb)), D_opt ∝ C^(a/(a+γb)) (minimize L along C = k·N^γ·D; γ = 1 gives
  Hoffmann et al. 2022 eq. 4), with intervals from the law's bootstrap;
- at the best measured point: the predicted loss for 2× and 10× its compute spent on N at fixed D, on D at fixed
  N, and at the compute-optimal split, with 95 % intervals, and the energy, force and stress errors where their
  own joint laws are identified; each also in hours on the hardware the sweep ran on, from the trials' measured
  wall seconds per counted FLOP per size (a GPU sweep gives GPU-hours);
- where the law is not identified, the next runs that would identify it, instead of a number.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from engine import metrics as M
from engine.fit.extrapolate import extrapolation_check
from engine.fit.joint import fit_joint
from engine.fit.result import FitUnavailable, LawFit, jsonable
from engine.fit.verdict import LAW, grade_joint

FACTORS = (2.0, 10.0)
TARGETS = {
    M.VAL_LOSS: ("validation loss", ""),
    f"val_{M.ENERGY_MAE}": ("energy MAE", "meV/atom"),
    f"val_{M.FORCES_MAE}": ("force MAE", "meV/Å"),
    f"val_{M.STRESS_MAE}": ("stress MAE", "meV/Å³"),
}


@dataclass
class FamilyPoints:
    """One family's annealed points, pooled over its sweeps."""

    name: str
    sweeps: list[str]
    frame: pd.DataFrame  # columns: sweep, run_id, seed, n_params, structures, flops, flops_spent, wall_s, metrics…
    hardware: str = "this machine"
    gpus: float = 0.0
    excluded: dict[str, int] = field(default_factory=dict)  # why → runs left out
    baselines: dict[str, float] = field(default_factory=dict)  # the sweeps' parent-run baseline_* metrics


def family_name(frame: pd.DataFrame) -> str:
    """A sweep's family: its model(s) and the letters of its size ladders (engine.report.compare.family_key)."""
    models = sorted({str(m) for m in frame.get("model", pd.Series(dtype=str)).dropna()})
    ladders = sorted({str(p).rstrip("0123456789") for p in frame.get("preset", pd.Series(dtype=str)).dropna()} - {""})
    return " ".join([*models, *(f"{x}-ladder" for x in ladders)]) or "runs"


def annealed_points(frame: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    """Every run's annealed points (module docstring) and the count of runs left out, by reason."""
    rows, excluded = [], {}
    diverged = frame["engine_status"].fillna("") == M.STATUS_DIVERGED if "engine_status" in frame else None
    for run_id, g in frame.groupby("run_id", sort=True):
        if diverged is not None and bool(diverged[g.index].any()):
            excluded["diverged"] = excluded.get("diverged", 0) + 1
            continue
        if M.RUNG in g and g[M.RUNG].notna().any():
            pts = g[g[M.RUNG].notna()]
        else:
            status = str(g["engine_status"].iloc[0]) if "engine_status" in g else "completed"
            if status != "completed":
                excluded[f"{status} before the end of its schedule (not annealed)"] = excluded.get(
                    f"{status} before the end of its schedule (not annealed)", 0) + 1
                continue
            order = M.REPORT if M.REPORT in g and g[M.REPORT].notna().any() else M.EPOCH
            pts = g.sort_values(order).iloc[[-1]]
        for _, r in pts.iterrows():
            epochs = r.get(M.EPOCHS_RUN)
            if epochs is None or not np.isfinite(epochs):
                epochs = r.get(M.EPOCH)
            structures = float(epochs) * float(r[M.TRAIN_SIZE]) if epochs is not None else math.nan
            spent = r.get(M.FLOPS_SPENT)
            row = {"sweep": r.get("sweep"), "run_id": run_id, "seed": r.get("seed"), "preset": r.get("preset"),
                   "n_params": float(r[M.N_PARAMS]), "structures": structures, "flops": float(r[M.FLOPS_CUM]),
                   "flops_spent": float(spent) if spent is not None and np.isfinite(spent) else float(r[M.FLOPS_CUM]),
                   "wall_s": float(r.get(M.WALL_S, math.nan))}
            for metric in TARGETS:
                row[metric] = float(r[metric]) if metric in r and r[metric] is not None else math.nan
            rows.append(row)
    out = pd.DataFrame(rows)
    if len(out):
        ok = (out["n_params"] > 0) & (out["structures"] > 0) & (out["flops"] > 0)
        out = out[ok & np.isfinite(out[["n_params", "structures", "flops"]]).all(axis=1)]
    return out.reset_index(drop=True), excluded


def _hardware(parent_params: dict) -> tuple[str, float]:
    """How the sweep's trials ran, from its space's resources: (words, GPUs per trial)."""
    def num(key: str, default: float) -> float:
        try:
            return float(parent_params.get(f"space.resources.{key}", default))
        except (TypeError, ValueError):
            return default

    workers, cpus, gpus = num("workers", 1), num("cpus_per_worker", 1), num("gpus_per_worker", 0)
    if gpus > 0:
        return f"GPU-hours ({workers:g} worker(s) × {gpus:g} GPU)", workers * gpus
    return f"hours on {workers:g} worker(s) × {cpus:g} CPU core(s) of the machine the sweep ran on", 0.0


def pool_families(datas: list) -> list[FamilyPoints]:
    """The report's sweeps (engine.report.collect.SweepData) grouped by family, their annealed points pooled."""
    fams: dict[str, FamilyPoints] = {}
    for data in datas:
        if data.axis == "hpo" or data.frame is None or data.frame.empty:
            continue
        frame = data.frame.assign(sweep=data.name)
        name = family_name(frame)
        pts, excluded = annealed_points(frame)
        hardware, gpus = _hardware(data.parent_params or {})
        fam = fams.setdefault(name, FamilyPoints(name, [], pts.iloc[0:0], hardware, gpus))
        fam.sweeps.append(data.name)
        fam.frame = pd.concat([fam.frame, pts], ignore_index=True) if len(fam.frame) else pts
        for k, v in excluded.items():
            fam.excluded[k] = fam.excluded.get(k, 0) + v
        for k, v in (data.baselines or {}).items():  # the lowest of a baseline over the family's sweeps
            fam.baselines[k] = min(float(v), fam.baselines.get(k, math.inf))
        if fam.hardware != hardware:
            fam.hardware = "hours on the hardware each sweep ran on (they differ: compare with care)"
    return list(fams.values())


def _loglog(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(slope, intercept) of log y on log x; slope 1 through the mean when x has one value."""
    lx, ly = np.log(x), np.log(y)
    if len(np.unique(lx)) < 2:
        return 1.0, float(np.mean(ly - lx))
    slope, intercept = np.polyfit(lx, ly, 1)
    return float(slope), float(intercept)


def cost_model(points: pd.DataFrame) -> dict:
    """FLOPs per structure seen and wall seconds per FLOP, per size (medians) and fitted against N."""
    by = points.groupby("n_params")
    sizes = np.array(sorted(by.groups), dtype=float)
    f = np.array([float(np.median(by.get_group(n)["flops"] / by.get_group(n)["structures"])) for n in sizes])
    gamma, log_k = _loglog(sizes, f)
    assumed = len(sizes) < 2
    if not (math.isfinite(gamma) and gamma >= 0.1):  # cost per structure that does not grow with N: not a model
        gamma, log_k, assumed = 1.0, float(np.mean(np.log(f) - np.log(sizes))), True
    wall = []
    for n in sizes:
        g = by.get_group(n)
        ok = (g["wall_s"] > 0) & (g["flops_spent"] > 0)
        wall.append(float(np.median(g.loc[ok, "wall_s"] / g.loc[ok, "flops_spent"])) if ok.any() else math.nan)
    wall = np.array(wall)
    good = np.isfinite(wall)
    s_slope, s_int = _loglog(sizes[good], wall[good]) if good.any() else (0.0, math.nan)
    if good.sum() < 2:
        s_slope = 0.0
    return {"sizes": sizes.tolist(), "flops_per_structure": f.tolist(), "gamma": gamma, "log_k": log_k,
            "seconds_per_flop": wall.tolist(), "seconds_slope": s_slope, "seconds_log_intercept": s_int,
            "one_size": assumed}


def seconds_per_flop(cost: dict, n: float) -> float:
    if not math.isfinite(cost["seconds_log_intercept"]):
        return math.nan
    return math.exp(cost["seconds_log_intercept"] + cost["seconds_slope"] * math.log(n))


def allocation(theta: np.ndarray, gamma: float) -> tuple[np.ndarray, np.ndarray]:
    """Exponents (a, b) of N_opt ∝ C^a, D_opt ∝ C^b for θ rows [log A, α, log B, β, log E] and f ∝ N^γ."""
    t = np.atleast_2d(theta)
    alpha, beta = t[:, 1], t[:, 3]
    s = alpha + gamma * beta
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(s > 0, beta / s, np.nan), np.where(s > 0, alpha / s, np.nan)


def n_opt(theta: np.ndarray, gamma: float, k: float, flops: float) -> np.ndarray:
    """The compute-optimal N at ``flops`` for θ rows, with C = k·N^γ·D (module docstring)."""
    t = np.atleast_2d(theta)
    log_a, alpha, log_b, beta = t[:, 0], t[:, 1], t[:, 2], t[:, 3]
    s = alpha + gamma * beta
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        log_n = (np.log(alpha) + log_a - np.log(gamma * beta) - log_b - beta * math.log(k) + beta * math.log(flops)) / s
        return np.exp(log_n)


def _predict(fit: LawFit, n: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Point estimate and 95 % bootstrap interval of L at (n, d), n and d per bootstrap row or scalars."""
    x = np.column_stack([np.atleast_1d(n), np.atleast_1d(d)])
    mid = fit.predict(x[:1] if len(x) == 1 else x)
    return mid, *fit.predict_interval(x[:1] if len(x) == 1 else x)


@dataclass
class Option:
    what: str
    factor: float
    n_params: float
    structures: float
    flops: float
    hours: float
    loss: dict  # metric → [estimate, lo, hi] or None
    outside: list[str]  # "N ×3.2 beyond the largest measured", …


def _options(fit: LawFit, target_fits: dict[str, LawFit], best: pd.Series, cost: dict,
             n_max: float, d_max: float) -> list[Option]:
    n0, d0, c0 = float(best["n_params"]), float(best["structures"]), float(best["flops"])
    gamma = cost["gamma"]
    k0 = c0 / (d0 * n0**gamma)  # anchor f(N) = k0·N^γ at the best run's own FLOPs per structure
    out = []
    for factor in FACTORS:
        c = factor * c0
        plans = [("more parameters, same data", n0 * factor ** (1 / gamma), d0),
                 ("more data, same model", n0, d0 * factor)]
        n_star = float(n_opt(np.asarray(fit.theta), gamma, k0, c)[0])
        if math.isfinite(n_star) and n_star > 0:
            plans.append(("compute-optimal split", n_star, c / (k0 * n_star**gamma)))
        for what, n, d in plans:
            losses = {}
            for metric, tf in target_fits.items():
                mid, lo, hi = _predict(tf, np.array([n]), np.array([d]))
                losses[metric] = [float(mid[0]), float(lo[0]), float(hi[0])]
            outside = []
            if n > n_max * 1.0001:
                outside.append(f"N ×{n / n_max:.2g} beyond the largest measured")
            if d > d_max * 1.0001:
                outside.append(f"D ×{d / d_max:.2g} beyond the most measured")
            out.append(Option(what, factor, n, d, c, c * seconds_per_flop(cost, n) / 3600.0, losses, outside))
    return out


def next_runs(points: pd.DataFrame, fit: LawFit | None, why: str = "") -> list[str]:
    """The runs that would identify the law (what is missing, in words)."""
    out = []
    sizes, data = np.unique(points["n_params"]), np.unique(points["structures"])
    if len(sizes) < 3:
        out.append(f"at least 3 model sizes (now {len(sizes)})")
    if len(data) < 3:
        out.append(f"at least 3 numbers of structures seen, e.g. a data sweep or a compute sweep (now {len(data)})")
    seeds = points.groupby(["n_params", "structures"]).size()
    if len(seeds) and seeds.max() < 2:
        out.append("a second seed at each point (the intervals rest on one run per point)")
    if fit is not None:
        flagged = {**fit.not_identified, **fit.interval_unreliable}
        if "a" in flagged or "A" in flagged:
            out.append(f"a size above {sizes.max():.3g} parameters")
        if "b" in flagged or "B" in flagged:
            out.append(f"more than {data.max():.3g} structures seen (longer training or a larger training set)")
        if "E" in flagged:
            out.append("points where the loss bends towards its floor (larger sizes and more data together)")
    elif why and not out:
        out.append(why)
    return out or ["a larger size and more data than measured, to test the law where it is used"]


def decide_family(fam: FamilyPoints, baselines: dict[str, float] | None = None, n_boot: int = 200,
                  seed: int = 0) -> dict:
    """``baselines``: name → value of the naive baselines of the validation loss (default: the family's own)."""
    """The decision for one family (module docstring), as a JSON-ready dict."""
    if baselines is None:
        baselines = {k[len("baseline_"):-len(M.VAL_LOSS) - 1]: v for k, v in fam.baselines.items()
                     if k.startswith("baseline_") and k.endswith("_" + M.VAL_LOSS)}
    pts = fam.frame
    out: dict = {"family": fam.name, "sweeps": fam.sweeps, "n_points": len(pts), "excluded_runs": fam.excluded,
                 "hardware": fam.hardware}
    if pts.empty:
        out["not_available"] = "no annealed point (a compute rung or a run trained to the end of its schedule)"
        out["next_runs"] = ["runs trained to the end of their schedule"]
        return out
    out["n_runs"] = int(pts["run_id"].nunique())
    cost = cost_model(pts)
    out["cost"] = cost
    metric = M.VAL_LOSS
    y = pts[metric].to_numpy(float)
    ok = np.isfinite(y) & (y > 0)
    x = pts.loc[ok, ["n_params", "structures"]].to_numpy(float)
    best = pts.loc[ok].iloc[int(np.argmin(y[ok]))] if ok.any() else pts.iloc[0]
    out["best"] = {"run_id": best["run_id"], "sweep": best["sweep"], "n_params": float(best["n_params"]),
                   "structures": float(best["structures"]), "flops": float(best["flops"]),
                   "measured": {m: float(best[m]) for m in TARGETS if np.isfinite(best[m])}}
    try:
        fit = fit_joint(x[:, 0], x[:, 1], y[ok], n_boot=n_boot, seed=seed)
    except FitUnavailable as exc:
        out["law"] = {"not_available": str(exc)}
        out["verdict"] = {"label": "trend", "reasons": [str(exc)]}
        out["next_runs"] = next_runs(pts, None, str(exc))
        one = _one_axis(pts.loc[ok], best, cost, baselines, n_boot, seed)
        if one is not None:
            out["one_axis"] = one
            out["answer"] = one["answer"]
        return jsonable(out)
    check = extrapolation_check("joint", x, y[ok], "n_params", n_boot=min(n_boot, 100), seed=seed,
                                variables=["n_params", "structures"])
    verdict = grade_joint(x, y[ok], fit.to_dict(), check, baselines, variables=("N", "D"))
    out["law"] = {k: v for k, v in fit.to_dict().items() if k in (
        "formula", "params", "ci95", "r2_log", "n_points", "n_runs", "method", "flags", "not_identified",
        "interval_unreliable", "converged")}
    out["law"]["formula"] = "L = E + A/N^a + B/D^b (D = structures seen)"
    out["extrapolation"] = {k: check.get(k) for k in ("verdict", "rel_error", "residual_dof", "not_available")
                            if k in check}
    out["verdict"] = {"label": verdict["label"], "reasons": verdict["reasons"]}
    a, b = allocation(np.asarray(fit.theta), cost["gamma"])
    boot = fit.boot_theta if fit.boot_theta is not None and len(fit.boot_theta) else None
    alloc = {"a": [float(a[0]), None, None], "b": [float(b[0]), None, None], "gamma": cost["gamma"]}
    if boot is not None:
        ba, bb = allocation(boot, cost["gamma"])
        for key, arr in (("a", ba), ("b", bb)):
            arr = arr[np.isfinite(arr)]
            if len(arr) > 10:
                alloc[key][1:] = [float(np.percentile(arr, 2.5)), float(np.percentile(arr, 97.5))]
    out["allocation"] = alloc
    targets = {metric: fit}
    out["target_laws"] = {metric: verdict["label"]}
    for m in TARGETS:
        if m == metric:
            continue
        ym = pts.loc[ok, m].to_numpy(float)
        good = np.isfinite(ym) & (ym > 0)
        if good.sum() < 4:
            continue
        try:
            tf = fit_joint(x[good, 0], x[good, 1], ym[good], n_boot=min(n_boot, 100), seed=seed)
        except FitUnavailable:
            continue
        identified = tf.converged and not tf.not_identified
        out["target_laws"][m] = "identified" if identified else "not identified"
        if identified:
            targets[m] = tf
    at_best = {}
    for m, tf in targets.items():
        mid, lo, hi = _predict(tf, np.array([float(best["n_params"])]), np.array([float(best["structures"])]))
        at_best[m] = [float(mid[0]), float(lo[0]), float(hi[0])]
    out["best"]["law"] = at_best  # the law at the measured point: how far its predictions sit from the data
    options = _options(fit, targets, best, cost, float(x[:, 0].max()), float(x[:, 1].max()))
    out["options"] = [o.__dict__ for o in options]
    out["next_runs"] = [] if verdict["label"] == LAW else next_runs(pts.loc[ok], fit)
    out["answer"] = _answer(out, options, verdict["label"])
    return jsonable(out)


def _one_axis(pts: pd.DataFrame, best: pd.Series, cost: dict, baselines: dict | None, n_boot: int,
              seed: int) -> dict | None:
    """Without a joint law: the one direction the runs measure. At the best run's D, L(N) over the sizes trained on
    it (a params sweep), else at its N, L(D) over the structures seen (a data sweep); 2× and 10× the best run's
    compute spent along it, with intervals, graded by the axis law's verdict; the other direction unmeasured."""
    from engine.fit.powerlaw import fit_axis
    from engine.fit.verdict import grade

    n0, d0, c0 = float(best["n_params"]), float(best["structures"]), float(best["flops"])
    same_d = pts[np.isclose(pts["structures"], d0, rtol=0.02)]
    same_n = pts[np.isclose(pts["n_params"], n0, rtol=1e-9)]
    if same_d["n_params"].nunique() >= 3:
        rows, var, what, other = same_d, "n_params", "more parameters, same data", "more data (one D measured)"
    elif same_n["structures"].nunique() >= 3:
        rows, var, what, other = same_n, "structures", "more data, same model", "more parameters (one N measured)"
    else:
        return None
    xv, yv = rows[var].to_numpy(float), rows[M.VAL_LOSS].to_numpy(float)
    try:
        axis = fit_axis(xv, yv, variable="N" if var == "n_params" else "D", metric=M.VAL_LOSS, n_boot=n_boot,
                        seed=seed)
    except FitUnavailable:
        return None
    law = axis.best
    if law is None:
        return None
    verdict = grade(xv, yv, law.to_dict(), axis.extrapolation, baselines, exponent="beta",
                    variable="N" if var == "n_params" else "D")
    options = []
    for factor in FACTORS:
        target = n0 * factor ** (1 / cost["gamma"]) if var == "n_params" else d0 * factor
        mid, (lo, hi) = law.predict(np.array([target])), law.predict_interval(np.array([target]))
        outside = [f"{'N' if var == 'n_params' else 'D'} ×{target / xv.max():.2g} beyond the largest measured"] \
            if target > xv.max() * 1.0001 else []
        n_new = target if var == "n_params" else n0
        options.append({"what": what, "factor": factor, "n_params": n_new,
                        "structures": d0 if var == "n_params" else target, "flops": factor * c0,
                        "hours": factor * c0 * seconds_per_flop(cost, n_new) / 3600.0,
                        "loss": {M.VAL_LOSS: [float(mid[0]), float(lo[0]), float(hi[0])]}, "outside": outside})
    ten = options[-1]
    est, lo, hi = ten["loss"][M.VAL_LOSS]
    text = (f"10× the best run's compute spent as {what} gives validation loss {est:.4g} [{lo:.4g}, {hi:.4g}] "
            f"against {float(best[M.VAL_LOSS]):.4g} measured ({law.formula}, verdict {verdict['label']}); "
            f"{other}: not measured, so the split cannot be chosen")
    if ten["outside"]:
        text += f" ({ten['outside'][0]}: an extrapolation)"
    if verdict["label"] != LAW:
        text = f"Direction only (the verdict is {verdict['label']}, not law): " + text
    return {"variable": var, "formula": law.formula, "params": law.params, "ci95": law.ci95,
            "verdict": {"label": verdict["label"], "reasons": verdict["reasons"]}, "options": options,
            "answer": text + "."}


def _answer(out: dict, options: list[Option], label: str) -> str:
    """One sentence: where 10× the best run's compute goes, graded by the law's verdict."""
    ten = [o for o in options if o.factor == FACTORS[-1] and M.VAL_LOSS in o.loss]
    if not ten:
        return "no prediction"
    pick = min(ten, key=lambda o: o.loss[M.VAL_LOSS][0])
    est, lo, hi = pick.loss[M.VAL_LOSS]
    measured = out["best"]["measured"].get(M.VAL_LOSS, math.nan)
    text = (f"10× the best run's compute buys the most as {pick.what} (N ≈ {pick.n_params:.3g}, "
            f"{pick.structures:.3g} structures seen): validation loss {est:.4g} [{lo:.4g}, {hi:.4g}] against "
            f"{measured:.4g} measured")
    if pick.outside:
        text += f" ({'; '.join(pick.outside)}: an extrapolation)"
    if label != LAW:
        text = f"Direction only (the verdict is {label}, not law): " + text
    return text + "."


def _num(v: object, spec: str) -> str:
    return format(v, spec) if isinstance(v, (int, float)) and math.isfinite(v) else "n/a"


def _iv(v: list | None, mid: str = ".4g") -> str:
    """"estimate [lo, hi]" of a [estimate, lo, hi] triple whose entries may be None (NaN in fits.json)."""
    if not v or v[0] is None:
        return "not identified"
    if len(v) < 3 or v[1] is None or v[2] is None:
        return _num(v[0], mid)
    return f"{_num(v[0], mid)} [{_num(v[1], '.3g')}, {_num(v[2], '.3g')}]"


def decision_blocks(decisions: list[dict]) -> list:
    """The section's blocks (engine.report.document.Block), first in the report after its title."""
    from engine.report.document import Block

    blocks = [Block("h2", "What the next compute buys")]
    if not decisions:
        return [*blocks, Block("p", "No sweep in this report has annealed points to decide from.")]
    blocks.append(Block("p", "Per model family, every sweep of it in this report pooled: annealed points only "
                             "(compute-axis rungs, each after its cooldown; the last report of runs trained to the end "
                             "of their schedule), D = structures seen (epochs run × training-set size, repeats "
                             "counted), C = the FLOPs the engine counted. Predictions at the best measured point; "
                             "intervals are 95 % bootstrap intervals of the law."))
    for dec in decisions:
        blocks.append(Block("h3", f"{dec['family']} ({', '.join(dec['sweeps'])})"))
        law = dec.get("law", dec)
        if "not_available" in law:
            one = dec.get("one_axis")
            if one is not None:
                v = one["verdict"]
                reasons = f" ({'; '.join(v['reasons'])})" if v["reasons"] else ""
                rows = [[f"{o['factor']:g}×", o["what"] + (" †" if o["outside"] else ""), _num(o['n_params'], '.3g'),
                         _num(o['structures'], '.3g'), _num(o['flops'], '.3g'),
                         _num(o['hours'], '.3g') if o["hours"] is not None else "—",
                         _iv(o["loss"][M.VAL_LOSS])] for o in one["options"]]
                blocks += [Block("p", f"**Answer.** {one['answer']}"),
                           Block("p", f"Verdict on {one['formula']} against "
                                      f"{'N' if one['variable'] == 'n_params' else 'D'}: **{v['label']}**{reasons}."),
                           Block("table", header=["compute", "spent on", "N", "D seen", "FLOPs", "hours",
                                                  "validation loss"], rows=rows),
                           Block("p", f"Hours: {dec['hardware']}. † outside the measured range.")]
            blocks.append(Block("p", f"No joint law L(N, D): {law['not_available']}. The runs that would give one: "
                                     f"{'; '.join(dec['next_runs'])}."))
            continue
        v = dec["verdict"]
        p, ci = law["params"], law["ci95"]
        cells = ", ".join(f"{k} = {_iv([p[k], *(ci.get(k) or [None, None])])}"
                          for k in ("E", "A", "a", "B", "b") if p.get(k) is not None)
        reasons = f" ({'; '.join(v['reasons'])})" if v["reasons"] else ""
        blocks += [Block("p", f"**Answer.** {dec['answer']}"),
                   Block("p", f"Verdict on L(N, D): **{v['label']}**{reasons}. {law['formula']}: {cells} (log-R² "
                              f"{_num(law['r2_log'], '.3f')}, {dec['n_points']} points of {dec['n_runs']} runs).")]
        al = dec["allocation"]

        def rng(x: list) -> str:
            return _iv(x, ".3g")

        one = " (γ = 1 assumed: one size, or a counted cost that does not grow with N)" if dec["cost"]["one_size"] \
            else ""
        blocks.append(Block("p", f"Compute-optimal allocation: N_opt ∝ C^a with a = {rng(al['a'])}, D_opt ∝ C^b with "
                                 f"b = {rng(al['b'])} (γa + b = 1), for the FLOPs per structure the engine counted, "
                                 f"∝ N^γ with γ = {al['gamma']:.3g}{one}."))
        metrics = [m for m in TARGETS if any(m in o["loss"] for o in dec["options"])]
        header = ["compute", "spent on", "N", "D seen", "FLOPs", "hours"]
        header += [TARGETS[m][0] + (f" ({TARGETS[m][1]})" if TARGETS[m][1] else "") for m in metrics]
        b = dec["best"]
        where = [_num(b["n_params"], ".3g"), _num(b["structures"], ".3g"), _num(b["flops"], ".3g")]
        rows = [["1× (measured)", "best run", *where,
                 "—", *[_num(b["measured"][m], ".4g") if m in b["measured"] else "—" for m in metrics]]]
        at = b.get("law") or {}
        rows.append(["1× (the law)", "best run", *where,
                     "—", *[_iv(at[m]) if m in at else "not identified"
                            for m in metrics]])
        for o in dec["options"]:
            vals = [_iv(o["loss"][m]) if o["loss"].get(m)
                    else "not identified" for m in metrics]
            hours = _num(o['hours'], '.3g') if o["hours"] is not None else "—"
            rows.append([f"{o['factor']:g}×", o["what"] + (" †" if o["outside"] else ""), _num(o['n_params'], '.3g'),
                         _num(o['structures'], '.3g'), _num(o['flops'], '.3g'), hours, *vals])
        blocks += [Block("table", header=header, rows=rows),
                   Block("p", f"Hours: {dec['hardware']}, from the trials' wall seconds per counted FLOP per size. "
                              "† outside the measured range (an extrapolation of the law). A target whose own joint "
                              "law is not identified reads \"not identified\".")]
        if dec["next_runs"]:
            blocks.append(Block("p", f"Not a law yet; the runs that would identify it: {'; '.join(dec['next_runs'])}."))
        if dec["excluded_runs"]:
            left = ", ".join(f"{n} run(s) {why}" for why, n in dec["excluded_runs"].items())
            blocks.append(Block("p", f"Left out: {left}."))
    return blocks


def decision_markdown(decisions: list[dict]) -> str:
    """The section as Markdown (what report.md holds)."""
    from engine.report.document import to_markdown

    return to_markdown(decision_blocks(decisions))
