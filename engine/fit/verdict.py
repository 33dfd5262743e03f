"""Graded verdicts: one label per fit instead of a list of flags.

A report reader decides from the first screen; a wall of "flagged, not a law" cells, beside plateaus that pass
as laws, does not let them. Each fit gets exactly one of four labels (:data:`DEFINITIONS`, printed once in
the report and stored in fits.json), tried in this order:

1. *at baseline*: the best measured seed mean is within noise of the sweep's best naive baseline (a model
   that does not beat predicting zero or the mean has no scaling law to report);
2. *plateau*: the slope of log L on log X over the last decade of X is indistinguishable from zero;
3. *law*: identified (converged, every parameter identified with a reliable interval), at least 5 points or
   2 seeds at every point, at least one decade of X, log-R² ≥ 0.9, and an extrapolation check with ≥ 2
   residual degrees of freedom that passes (:mod:`engine.fit.extrapolate`);
4. *trend*: otherwise; the verdict lists what is missing for a law.

Only a *law* prints its exponent as a law; the others carry the estimate for a secondary column. Pure
functions of the runs and of the fits' JSON form (``LawFit.to_dict()``, the frontier's ``law``), so they are
tested on constructed fits.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

from engine.fit.bootstrap import group_runs
from engine.fit.extrapolate import MIN_RESIDUAL_DOF, NOT_A_TEST
from engine.fit.trust import seed_scatter

LAW, TREND, PLATEAU, AT_BASELINE = "law", "trend", "plateau", "at baseline"
MIN_POINTS = 5
MIN_SEEDS = 2
MIN_DECADES = 1.0
MIN_R2_LOG = 0.9
PLATEAU_SLOPE = 0.02  # |d log L / d log X| below this is flat in practice: 10× the scale buys < 5 %
MIN_SLOPE_DOF = 2  # residual degrees of freedom a last-decade slope interval needs (as an extrapolation check)
BASELINE_NOISE = 0.02  # least distance (log units, ≈ 2 %) below the best baseline that counts as beating it
BASELINE_SIGMAS = 2.0  # … or this many σ of one run's log L, whichever is larger

DEFINITIONS = {
    LAW: (f"identified (optimum converged, every parameter identified with a reliable 95 % interval), at least "
          f"{MIN_POINTS} points or {MIN_SEEDS} seeds at every point, at least {MIN_DECADES:g} decade of the scale "
          f"variable, log-R² ≥ {MIN_R2_LOG}, and an extrapolation check (refit without the largest scale) with ≥ "
          f"{MIN_RESIDUAL_DOF} residual degrees of freedom that passes; only a law's exponent is printed as a law"),
    TREND: "the direction is resolved but the law is not identified; the verdict says what is missing",
    PLATEAU: (f"the slope of log L on log X over the last decade of X is indistinguishable from zero: its 95 % "
              f"interval (from ≥ {MIN_SLOPE_DOF} residual degrees of freedom) holds zero, or |slope| < {PLATEAU_SLOPE} "
              "(10× the scale buys < 5 %)"),
    AT_BASELINE: (f"the best measured seed mean is not below the best naive baseline of the sweep by more than the "
                  f"noise (max({BASELINE_SIGMAS:g}σ, {BASELINE_NOISE:g}) in log L, σ the scatter of one run)"),
}
ORDER = (AT_BASELINE, PLATEAU, LAW, TREND)


def last_decade_slope(x: np.ndarray, y: np.ndarray, n_seeds: np.ndarray | None = None) -> dict:
    """Least-squares slope of log y on log x over the runs with x ≥ max(x)/10, with its 95 % t interval.

    Fewer than 2 distinct x there: the last two distinct x are used. The interval needs ≥ 2 residual degrees of
    freedom (rows − 2; with 1, t(0.975) = 12.7 makes every slope "indistinguishable from zero"); without them
    ``ci95`` is None. With ``n_seeds`` the rows are seed means; ``n_runs``
    counts the runs behind them.
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    ux = np.unique(x)
    if len(ux) < 2:
        return {"slope": None, "ci95": None, "from_x": None, "n_runs": len(x)}
    lo = ux.max() / 10.0
    if (ux >= lo).sum() < 2:
        lo = ux[-2]
    keep = x >= lo
    lx, ly = np.log(x[keep]), np.log(y[keep])
    slope, intercept = np.polyfit(lx, ly, 1)
    w = np.ones(keep.sum()) if n_seeds is None else np.asarray(n_seeds, dtype=float)[keep]
    n_runs = round(float(w.sum()))
    dof = len(lx) - 2
    sxx = float(np.sum((lx - lx.mean()) ** 2))
    ci = None
    if dof >= MIN_SLOPE_DOF and sxx > 0:
        s = math.sqrt(float(np.sum((ly - (slope * lx + intercept)) ** 2)) / dof)
        half = float(stats.t.ppf(0.975, dof)) * s / math.sqrt(sxx)
        ci = [float(slope - half), float(slope + half)]
    return {"slope": float(slope), "ci95": ci, "from_x": float(lo), "n_runs": n_runs}


def _is_flat(ld: dict) -> bool:
    if ld["slope"] is None:
        return False
    if abs(ld["slope"]) < PLATEAU_SLOPE:
        return True
    return ld["ci95"] is not None and ld["ci95"][0] <= 0.0 <= ld["ci95"][1]


def _point_stats(x: np.ndarray, y: np.ndarray, n_seeds: np.ndarray | None) -> tuple[int, int, float, float]:
    """(points, fewest seeds at a point, seed-mean y at each point's best, σ of one run's log L or NaN)."""
    points, inverse = group_runs(np.asarray(x, dtype=float).reshape(len(y), -1))
    logy = np.log(np.asarray(y, dtype=float))
    if n_seeds is not None:
        seeds = np.asarray(n_seeds, dtype=int)
        return len(points), int(seeds.min()) if len(seeds) else 0, float(np.exp(logy.min())), math.nan
    counts = np.bincount(inverse, minlength=len(points))
    means = np.bincount(inverse, weights=logy, minlength=len(points)) / np.maximum(counts, 1)
    sigma, _dof = seed_scatter(logy, inverse)
    return len(points), int(counts.min()), float(np.exp(means.min())), sigma


def _baseline(best_measured: float, sigma: float, baselines: dict[str, float] | None) -> dict | None:
    """The best (lowest) baseline and whether the best measurement sits within noise of it or above it."""
    vals = {k: float(v) for k, v in (baselines or {}).items()
            if v is not None and math.isfinite(float(v)) and float(v) > 0}
    if not vals:
        return None
    name = min(vals, key=vals.get)
    tol = max(BASELINE_SIGMAS * sigma if math.isfinite(sigma) else 0.0, BASELINE_NOISE)
    gap = math.log(best_measured) - math.log(vals[name])  # < 0: better than the baseline
    return {"name": name, "value": vals[name], "best_measured": best_measured, "log_gap": gap, "tolerance": tol,
            "within": gap > -tol}


def _identification(fit: dict) -> list[str]:
    """What keeps the fit itself from being identified (empty when it is)."""
    out = []
    if not fit.get("converged", True):
        out.append("the optimum did not converge")
    for k, why in (fit.get("not_identified") or {}).items():
        out.append(f"{k} not identified ({why})")
    for k in fit.get("interval_unreliable") or {}:
        out.append(f"the interval of {k} is not reliable")
    return out


def _check_missing(check: dict | None) -> list[str]:
    if not check:
        return ["no extrapolation check"]
    if "not_available" in check:
        return [f"no extrapolation check ({check['not_available']})"]
    verdict = check.get("verdict")
    dof = check.get("residual_dof")
    if verdict == NOT_A_TEST:
        return [f"the extrapolation check is {NOT_A_TEST} ({dof} residual degree{'s' if dof != 1 else ''} of "
                f"freedom; needs ≥ {MIN_RESIDUAL_DOF}: one more scale point)"]
    if verdict == "missed":
        return ["the extrapolation check missed (the held-out largest scale lies outside the refit's 95 % "
                "prediction interval)"]
    if verdict == "refit flagged":
        return ["the extrapolation check's refit is flagged (" + "; ".join(check.get("fit_flags") or []) + ")"]
    return []


def _support_missing(n_points: int, min_seeds: int, decades: list[tuple[str, float]], r2: float | None) -> list[str]:
    out = []
    if n_points < MIN_POINTS and min_seeds < MIN_SEEDS:
        out.append(f"{n_points} points with {min_seeds} seed{'s' if min_seeds != 1 else ''} at some point (needs ≥ "
                   f"{MIN_POINTS} points or {MIN_SEEDS} seeds at every point)")
    for name, dec in decades:
        if dec < MIN_DECADES:
            out.append(f"{name} spans {dec:.2g} decades (needs ≥ {MIN_DECADES:g})")
    if r2 is None or not math.isfinite(r2) or r2 < MIN_R2_LOG:
        out.append(f"log-R² {'—' if r2 is None else f'{r2:.3g}'} (needs ≥ {MIN_R2_LOG})")
    return out


def _estimate(fit: dict | None, names: tuple[str, ...]) -> dict:
    params = (fit or {}).get("params") or {}
    ci = (fit or {}).get("ci95") or {}
    return {k: {"value": params.get(k), "ci95": ci.get(k)} for k in names if k in params}


def grade(
    x: np.ndarray,
    y: np.ndarray,
    fit: dict | None,
    check: dict | None = None,
    baselines: dict[str, float] | None = None,
    exponent: str = "beta",
    n_seeds: np.ndarray | None = None,
    variable: str = "X",
) -> dict:
    """The verdict on a one-variable fit of runs (x, y): ``label`` (:data:`ORDER`), ``reasons`` (why that label;
    for a trend, what is missing for a law), the exponent's ``estimate`` and the numbers behind the label.

    ``fit`` is the fit's JSON form (params, ci95, r2_log, converged, not_identified, interval_unreliable), or
    None when no law could be fitted; ``check`` the extrapolation check; ``baselines`` name → value of the
    sweep's naive baselines for this metric. With ``n_seeds`` the rows are seed means (a frontier's points).
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    n_points, min_seeds, best, sigma = _point_stats(x, y, n_seeds)
    if not math.isfinite(sigma) and fit and fit.get("rmse_log") is not None:
        sigma = float(fit["rmse_log"])
    ld = last_decade_slope(x, y, n_seeds)
    decades = math.log10(x.max() / x.min()) if len(x) else 0.0
    out = {"variable": variable, "exponent": exponent, "estimate": _estimate(fit, (exponent,)),
           "n_points": n_points, "min_seeds": min_seeds, "decades": decades,
           "r2_log": (fit or {}).get("r2_log"), "last_decade": ld,
           "check": (check or {}).get("verdict") or ("not available" if check else None)}
    base = _baseline(best, sigma, baselines)
    out["baseline"] = base
    if base is not None and base["within"]:
        rel = math.exp(base["log_gap"]) - 1.0
        return {**out, "label": AT_BASELINE, "reasons": [
            f"best seed mean {best:.4g} vs baseline {base['name']} {base['value']:.4g} ({rel:+.1%}; noise "
            f"±{base['tolerance']:.2g} in log L)"]}
    if _is_flat(ld):
        ci = ld["ci95"]
        why = (f"|slope| < {PLATEAU_SLOPE}" if abs(ld["slope"]) < PLATEAU_SLOPE
               else f"95 % interval [{ci[0]:.2g}, {ci[1]:.2g}] holds zero")
        return {**out, "label": PLATEAU, "reasons": [
            f"slope of log L on log {variable} over the last decade (from {ld['from_x']:.3g}) {ld['slope']:.2g}: "
            f"{why}"]}
    if fit is None:
        return {**out, "label": TREND, "reasons": ["no law could be fitted"]}
    missing = (_identification(fit) + _support_missing(n_points, min_seeds, [(variable, decades)], fit.get("r2_log"))
               + _check_missing(check))
    if not missing:
        return {**out, "label": LAW, "reasons": []}
    return {**out, "label": TREND, "reasons": missing}


def grade_joint(
    x: np.ndarray,
    y: np.ndarray,
    fit: dict,
    check: dict | None = None,
    baselines: dict[str, float] | None = None,
    variables: tuple[str, str] = ("N", "D"),
) -> dict:
    """The verdict on a joint law L(N, D) of runs x (n_runs, 2), y: *at baseline*, *law* or *trend* (a plateau is
    a statement about one variable; the exponents' identification stands for it here)."""
    x, y = np.asarray(x, dtype=float).reshape(len(y), 2), np.asarray(y, dtype=float)
    n_points, min_seeds, best, sigma = _point_stats(x, y, None)
    if not math.isfinite(sigma) and fit.get("rmse_log") is not None:
        sigma = float(fit["rmse_log"])
    decades = [(v, math.log10(x[:, k].max() / x[:, k].min())) for k, v in enumerate(variables)]
    out = {"variable": "+".join(variables), "exponent": "a, b", "estimate": _estimate(fit, ("a", "b")),
           "n_points": n_points, "min_seeds": min_seeds, "decades": dict(decades), "r2_log": fit.get("r2_log"),
           "check": (check or {}).get("verdict") or ("not available" if check else None)}
    base = _baseline(best, sigma, baselines)
    out["baseline"] = base
    if base is not None and base["within"]:
        return {**out, "label": AT_BASELINE, "reasons": [
            f"best seed mean {best:.4g} vs baseline {base['name']} {base['value']:.4g}"]}
    missing = (_identification(fit) + _support_missing(n_points, min_seeds, decades, fit.get("r2_log"))
               + _check_missing(check))
    return {**out, "label": TREND if missing else LAW, "reasons": missing}
