"""The compute frontier and compute-optimal allocation (Hoffmann et al. 2022, arXiv 2203.15556).

Compute C is the FLOPs the engine counted for every training step (``flops_cum``), not 6·N·D: a
graph model's cost per structure depends on its neighbors. Each trial contributes its learning
curve (loss after each epoch against cumulative FLOPs).

- Frontier: the lower envelope of loss over all curves' points, and L(C) = α·C^−β fitted on it.
- Approach 1 (§3.1): at each budget, the run whose curve reaches the envelope; N_opt ∝ C^x.
- Approach 2 (§3.2): IsoFLOP profiles: at fixed budgets, each model size's curve interpolated in
  log-log, a parabola in log N through the sizes, its minimum; N_opt ∝ C^x through the minima.
- Approach 3 (§3.3): from the joint law L = E + A/N^a + B/D^b, x = b/(a+b), y = a/(a+b).

Intervals: a bootstrap over runs (whole curves resampled with replacement, the envelope recomputed from
each resample and refitted; a frontier point weighs in the refit of L(C) as often as its run was drawn).
The envelope is a minimum over curves, and the bootstrap of a minimum is not consistent: a resample can
only lose curves, so its envelope lies on or above the full one, and when few runs make the envelope
(often one small model's curve) every resample either repeats them (the same fit: an end of the interval
on the estimate) or loses them (no frontier at all; such resamples used to be dropped silently, which
conditioned the interval on keeping those runs). Resamples without an estimate therefore count as drawn,
and an interval that cannot be trusted (too few runs on the envelope, > 5 % of resamples without a
frontier, an end on the estimate, few distinct values) is flagged "interval not reliable"
(:func:`engine.fit.trust.unreliable_intervals`), for L(C) and approaches 1–2 alike. Where the data cannot
support an approach, the result says "not available: <why>"; an unconverged L(C) or a parameter the runs
do not identify is flagged (:mod:`engine.fit.trust`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.fit.bootstrap import percentile_ci
from engine.fit.multistart import fit_multistart, refit_many
from engine.fit.result import LawFit, jsonable, params_from_theta
from engine.fit.shape import LseLaw
from engine.fit.trust import fit_flags, not_identified, unreliable_intervals

POWER = LseLaw(1, False)


@dataclass
class Curve:
    """One trial's learning curve: loss after each epoch against cumulative FLOPs."""

    run_id: str
    n_params: float
    train_size: float
    flops: np.ndarray  # cumulative training FLOPs after each report
    loss: np.ndarray
    epoch: np.ndarray | None = None  # epochs done at each report (for samples seen)

    def points(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(flops, loss, epoch) at reports with positive finite FLOPs and loss (drops epoch 0)."""
        c = np.asarray(self.flops, dtype=float)
        y = np.asarray(self.loss, dtype=float)
        e = np.asarray(self.epoch, dtype=float) if self.epoch is not None else np.full(len(c), np.nan)
        ok = np.isfinite(c) & np.isfinite(y) & (c > 0) & (y > 0)
        order = np.argsort(c[ok], kind="stable")
        return c[ok][order], y[ok][order], e[ok][order]


def pareto_frontier(curves: list[Curve]) -> dict[str, np.ndarray]:
    """Lower envelope: points no other point beats with fewer or equal FLOPs.

    Returns arrays flops, loss, run (index into ``curves``), n_params, train_size, samples_seen
    (epoch · train_size, structures processed; NaN without epochs), sorted by FLOPs.
    """
    rows = []
    for i, cv in enumerate(curves):
        c, y, e = cv.points()
        rows += [(ci, yi, i, ei) for ci, yi, ei in zip(c, y, e)]
    if not rows:
        return {k: np.zeros(0) for k in ("flops", "loss", "run", "n_params", "train_size", "samples_seen")}
    arr = np.array(rows, dtype=float)
    arr = arr[np.lexsort((arr[:, 1], arr[:, 0]))]
    best = np.minimum.accumulate(arr[:, 1])
    keep = np.r_[True, arr[1:, 1] < best[:-1]]
    arr = arr[keep]
    run = arr[:, 2].astype(int)
    n = np.array([curves[r].n_params for r in run], dtype=float)
    d = np.array([curves[r].train_size for r in run], dtype=float)
    return {"flops": arr[:, 0], "loss": arr[:, 1], "run": run, "n_params": n, "train_size": d,
            "samples_seen": arr[:, 3] * d}


def _envelope_at(front: dict, budgets: np.ndarray) -> np.ndarray:
    """Index into the frontier of the best point with FLOPs ≤ each budget (−1 where none)."""
    return np.searchsorted(front["flops"], budgets, side="right") - 1


def _loglog_slope(x: np.ndarray, y: np.ndarray) -> float:
    """Least-squares slope of log y on log x."""
    return float(np.polyfit(np.log(x), np.log(y), 1)[0])


def approach1(front: dict, n_budgets: int = 12) -> dict:
    """Chinchilla approach 1 on the envelope: (N, D) reaching the frontier at log-spaced budgets."""
    if len(front["flops"]) < 3:
        return {"not_available": f"the frontier has {len(front['flops'])} points; needs ≥ 3"}
    budgets = np.geomspace(front["flops"][0], front["flops"][-1], n_budgets)
    idx = _envelope_at(front, budgets)
    n_opt, d_seen = front["n_params"][idx], front["samples_seen"][idx]
    out = {"budgets_flops": budgets, "n_opt": n_opt, "samples_seen_opt": d_seen,
           "train_size_opt": front["train_size"][idx]}
    sizes = np.unique(n_opt)
    if len(sizes) < 2:
        out["not_available"] = (
            f"one model size (N={sizes[0]:.4g}) reaches the frontier at every budget; "
            "sweep sizes whose curves cross to estimate N_opt(C)"
        )
        return out
    out["x_n_opt"] = _loglog_slope(budgets, n_opt)
    if np.all(np.isfinite(d_seen)) and np.all(d_seen > 0):
        out["y_samples_seen"] = _loglog_slope(budgets, d_seen)
    return out


def _interp_loglog(c: np.ndarray, y: np.ndarray, budget: float) -> float:
    """log L of a curve at ``budget`` by linear interpolation in (log C, log L); NaN outside it."""
    if len(c) == 0 or budget < c[0] or budget > c[-1]:
        return float("nan")
    if len(c) == 1:
        return float(np.log(y[0]))
    return float(np.interp(np.log(budget), np.log(c), np.log(y)))


def isoflop_budgets(curves: list[Curve], n_budgets: int = 6, min_sizes: int = 3) -> np.ndarray:
    """Log-spaced budgets that at least ``min_sizes`` distinct model sizes' curves span."""
    spans = []
    for cv in curves:
        c, _, _ = cv.points()
        if len(c):
            spans.append((c[0], c[-1], cv.n_params))
    if not spans:
        return np.zeros(0)
    lo = min(s[0] for s in spans)
    hi = max(s[1] for s in spans)
    cand = np.geomspace(lo, hi, 40) if hi > lo else np.array([lo])
    ok = [b for b in cand if len({n for a, z, n in spans if a <= b <= z}) >= min_sizes]
    if not ok:
        return np.zeros(0)
    pick = np.unique(np.round(np.linspace(0, len(ok) - 1, min(n_budgets, len(ok)))).astype(int))
    return np.array(ok)[pick]


def isoflop_profiles(curves: list[Curve], budgets: np.ndarray) -> list[dict]:
    """For each budget: sizes, mean log L per size (seeds averaged), the parabola in log N, its minimum."""
    profiles = []
    sizes_all = np.array([cv.n_params for cv in curves], dtype=float)
    pts = [cv.points() for cv in curves]
    for b in budgets:
        vals = np.array([_interp_loglog(c, y, b) for c, y, _ in pts])
        ok = np.isfinite(vals)
        sizes = np.unique(sizes_all[ok])
        mean_log = np.array([vals[ok & (sizes_all == s)].mean() for s in sizes])
        prof = {"budget_flops": float(b), "n_params": sizes, "loss": np.exp(mean_log)}
        if len(sizes) < 3:
            prof["not_available"] = f"{len(sizes)} model sizes span this budget; a parabola needs ≥ 3"
            profiles.append(prof)
            continue
        u = np.log(sizes)
        c2, c1, c0 = np.polyfit(u, mean_log, 2)
        prof["parabola_log"] = [float(c2), float(c1), float(c0)]  # log L = c2·u² + c1·u + c0, u = ln N
        if c2 <= 0:
            prof["not_available"] = "the profile is not convex (no minimum); sizes do not bracket the optimum"
        else:
            u_star = -c1 / (2 * c2)
            if not (u.min() <= u_star <= u.max()):
                prof["not_available"] = (
                    f"the parabola's minimum N={np.exp(u_star):.3g} lies outside the swept sizes "
                    f"{sizes.min():.3g}–{sizes.max():.3g}"
                )
            else:
                prof["n_opt"] = float(np.exp(u_star))
                prof["loss_opt"] = float(np.exp(c0 + c1 * u_star + c2 * u_star**2))
        profiles.append(prof)
    return profiles


def approach2(curves: list[Curve], budgets: np.ndarray) -> dict:
    """Chinchilla approach 2: N_opt(C) from IsoFLOP minima, N_opt ∝ C^x."""
    if len(budgets) == 0:
        why = "no budget is spanned by ≥ 3 model sizes' curves; sweep ≥ 3 sizes with overlapping FLOPs"
        return {"not_available": why,
                "profiles": []}
    profiles = isoflop_profiles(curves, budgets)
    good = [p for p in profiles if "n_opt" in p]
    out: dict = {"profiles": profiles}
    if len(good) < 2:
        out["not_available"] = (
            f"{len(good)} of {len(profiles)} IsoFLOP budgets have an interior minimum; needs ≥ 2 "
            "(sweep sizes on both sides of the optimum)"
        )
        return out
    out["x_n_opt"] = _loglog_slope(np.array([p["budget_flops"] for p in good]), np.array([p["n_opt"] for p in good]))
    return out


def allocation_from_joint(fit: LawFit | None, why: str = "") -> dict:
    """Chinchilla approach 3: N_opt ∝ C^x, D_opt ∝ C^y with x = b/(a+b), y = a/(a+b), bootstrap CIs."""
    if fit is None:
        return {"not_available": why or "no joint law L(N, D) was fitted"}
    return {
        "x_n_opt": fit.params["x_n_opt"],
        "y_d_opt": fit.params["y_d_opt"],
        "ci95": {"x_n_opt": fit.ci95["x_n_opt"], "y_d_opt": fit.ci95["y_d_opt"]},
        "note": "D is the training-set size; compute is assumed ∝ N·D here (the law's allocation rule)",
    }


def fit_frontier(
    curves: list[Curve], n_boot: int = 200, seed: int = 0, n_budgets: int = 6
) -> dict:
    """Frontier, L(C) = α·C^−β on it, approaches 1 and 2, each with bootstrap-over-runs 95 % CIs."""
    front = pareto_frontier(curves)
    out: dict = {"frontier": front, "n_runs": len(curves)}
    if len(front["flops"]) < 3:
        out["law"] = {"not_available": f"the frontier has {len(front['flops'])} points; L(C) needs ≥ 3"}
        out["approach1"] = approach1(front)
        out["approach2"] = approach2(curves, np.zeros(0))
        return jsonable_frontier(out)
    logx = np.log(front["flops"])[:, None]
    ms = fit_multistart(POWER, logx, np.log(front["loss"]))
    resid = POWER.predict_log(ms.theta, logx) - np.log(front["loss"])
    budgets = isoflop_budgets(curves, n_budgets)
    a1 = approach1(front)
    a2 = approach2(curves, budgets)

    rng = np.random.default_rng(seed)
    boot_x1, boot_y1, boot_x2, fronts, drawn = [], [], [], [], []
    for b in range(n_boot):
        pick = rng.integers(0, len(curves), len(curves))
        sample = [curves[i] for i in pick]
        fb = pareto_frontier(sample)
        if len(fb["flops"]) >= 3:
            # the envelope keeps one copy of a run drawn twice: weigh its points by the draw count
            draws = np.bincount(pick, minlength=len(curves))[pick[fb["run"]]]
            fronts.append((np.log(fb["flops"]), np.log(fb["loss"]), draws.astype(float)))
            drawn.append(b)
        if "x_n_opt" in a1:
            r1 = approach1(fb)
            boot_x1.append(r1.get("x_n_opt", np.nan))
            boot_y1.append(r1.get("y_samples_seen", np.nan))
        if "x_n_opt" in a2:
            boot_x2.append(approach2(sample, budgets).get("x_n_opt", np.nan))
    boot_theta = np.zeros((0, 2))
    every = np.full((n_boot, 2), np.nan)  # one row per resample drawn; NaN where it gave no L(C)
    if fronts:
        n_max = max(len(c) for c, _, _ in fronts)
        lx = np.zeros((len(fronts), n_max, 1))
        ly = np.zeros((len(fronts), n_max))
        w = np.zeros((len(fronts), n_max))
        for i, (c, y, d) in enumerate(fronts):
            lx[i, :, 0], ly[i] = c[0], y[0]  # padding: weight 0
            lx[i, : len(c), 0], ly[i, : len(c)], w[i, : len(c)] = c, y, d * len(c) / d.sum()
        th, ok = refit_many(POWER, lx, ly, w, ms.top_thetas)
        boot_theta = th[ok]
        every[np.asarray(drawn)[ok]] = th[ok]
    params = params_from_theta("power", ms.theta)
    samples = {k: np.array([params_from_theta("power", t)[k] if np.all(np.isfinite(t)) else np.nan for t in every])
               for k in params}
    ci = {k: list(percentile_ci(samples[k])) for k in params}
    unident = not_identified(params, ci, len(boot_theta), n_boot)
    front_runs = len(np.unique(front["run"]))
    unreliable = {k: why for k, why in unreliable_intervals(params, ci, samples, n_boot, front_runs,
                                                             "runs on the envelope").items() if k not in unident}
    ss_tot = float(np.sum((np.log(front["loss"]) - np.log(front["loss"]).mean()) ** 2))
    out["law"] = {
        "formula": "L = α·C^−β",
        "params": params,
        "ci95": ci,
        "theta": [float(v) for v in ms.theta],
        "converged": ms.converged,
        "not_identified": unident,
        "interval_unreliable": unreliable,
        "flags": fit_flags(ms.converged, ms.n_starts, unident, unreliable),
        "boot_theta": boot_theta,
        "n_points": len(front["flops"]),
        "n_frontier_runs": front_runs,
        "n_boot_ok": len(boot_theta),
        "rmse_log": float(np.sqrt(np.mean(resid**2))),
        "r2_log": 1.0 - float(np.sum(resid**2)) / ss_tot if ss_tot > 0 else float("nan"),
        "method": (
            f"lower envelope of {len(curves)} curves; sum of Huber(δ=1e-3) of log residuals, L-BFGS from "
            f"the full grid ({ms.n_grid} starts), optimum {'converged' if ms.converged else 'NOT converged'}; "
            f"95 % CI: percentile bootstrap over runs (whole curves drawn, envelope recomputed, draw counts as "
            f"weights), {len(boot_theta)}/{n_boot} resamples gave a frontier of ≥ 3 points (seed {seed}); "
            f"the envelope holds points of {front_runs} runs"
        ),
    }
    if "x_n_opt" in a1:
        s1 = {"x_n_opt": np.array(boot_x1, dtype=float), "y_samples_seen": np.array(boot_y1, dtype=float)}
        a1["ci95"] = {k: list(percentile_ci(v)) for k, v in s1.items()}
        est1 = {k: a1[k] for k in s1 if k in a1}
        a1["interval_unreliable"] = unreliable_intervals(est1, a1["ci95"], s1, n_boot, front_runs,
                                                         "runs on the envelope")
    if "x_n_opt" in a2:
        s2 = {"x_n_opt": np.array(boot_x2, dtype=float)}
        a2["ci95"] = {"x_n_opt": list(percentile_ci(s2["x_n_opt"]))}
        a2["interval_unreliable"] = unreliable_intervals({"x_n_opt": a2["x_n_opt"]}, a2["ci95"], s2, n_boot)
    out["approach1"] = a1
    out["approach2"] = a2
    return jsonable_frontier(out)


def jsonable_frontier(out: dict) -> dict:
    """The result with arrays as lists, except ``law.boot_theta`` kept as an array for bands."""
    boot = out.get("law", {}).pop("boot_theta", None)
    res = jsonable(out)
    if boot is not None:
        res["law"]["boot_theta"] = boot
    return res


def frontier_band(law: dict, flops: np.ndarray, level: float = 0.95) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(L̂, lower, upper) of the fitted L(C) at ``flops`` from its bootstrap samples."""
    logx = np.log(np.asarray(flops, dtype=float))[:, None]
    mid = np.exp(POWER.predict_log(np.asarray(law["theta"]), logx))
    boot = law.get("boot_theta")
    if boot is None or len(boot) == 0:
        return mid, mid, mid
    logp = POWER.predict_log(np.asarray(boot), logx)
    q = 100 * (1 - level) / 2
    return mid, np.exp(np.percentile(logp, q, axis=0)), np.exp(np.percentile(logp, 100 - q, axis=0))
