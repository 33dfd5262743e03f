"""When not to believe a fit: unidentified parameters, unconverged optima, prediction intervals.

- A parameter is *not identified by these runs* when its 95 % bootstrap interval crosses zero (an
  exponent: the runs cannot tell growth from decay) or spans more than a factor of 100 (a coefficient:
  any value in that range fits). Such a parameter is flagged, never quoted as a law.
- An optimum that no start reached with the convergence test is flagged as unconverged.
- A percentile interval is *not reliable* when the bootstrap cannot have measured the spread: more than
  the interval's tail share (5 %) of resamples gave no estimate (the interval is then conditioned on the
  resamples that did: for a frontier, those that kept its runs), fewer than :data:`MIN_UNITS` resampled
  units (runs) carry the estimate, the resamples took few distinct values, or an end of the interval
  sits on the estimate (a one-sided interval: the estimate is an extreme of its own bootstrap
  distribution, as for statistics of a minimum such as a lower envelope; Efron & Tibshirani 1993, §7.4
  and Bickel & Freedman 1981 on the bootstrap of extremes). Such an interval is flagged, never quoted.
- A held-out measurement is compared with a PREDICTION interval: the curve's bootstrap uncertainty
  plus the scatter of one measurement around it (seeds at a point, or the law's residuals when there
  is one seed per point). The interval of the mean curve alone is too narrow for single measurements
  and over-reports misses (e.g. Gelman & Hill 2007, §3.5: predictive vs. confidence intervals).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

EXPONENTS = ("beta", "a", "b")  # identified only if the interval excludes zero
COEFFICIENTS = ("alpha", "E", "A", "B")  # identified only if the interval spans ≤ MAX_COEF_SPAN
DERIVED = {"x_n_opt": ("a", "b"), "y_d_opt": ("a", "b")}  # ratios of exponents inherit their flags
MAX_COEF_SPAN = 100.0
NOT_IDENTIFIED = "not identified by these runs"
UNRELIABLE = "interval not reliable"
MAX_FAILED_SHARE = 0.05  # resamples without an estimate beyond this share: the 95 % interval is conditional
MIN_UNITS = 3  # resampled units (runs) that must carry an estimate for a bootstrap over them to vary it
MIN_DISTINCT = 10  # distinct bootstrap values below this: the percentile interval is a few atoms


def not_identified(params: dict[str, float], ci95: dict, n_boot_ok: int, n_boot: int) -> dict[str, str]:
    """Parameter → why the runs do not identify it (identified parameters are absent).

    Without a bootstrap (``n_boot`` 0) nothing is judged; when resamples were drawn but none converged,
    every parameter is unidentified.
    """
    if n_boot <= 0:
        return {}
    if n_boot_ok == 0:
        return {k: "no bootstrap resample converged" for k in params}
    out: dict[str, str] = {}
    for k in params:
        lo, hi = [*(ci95.get(k) or []), math.nan, math.nan][:2]
        if lo is None or hi is None or not (math.isfinite(lo) and math.isfinite(hi)):
            if k in EXPONENTS or k in COEFFICIENTS:
                out[k] = "no finite 95 % interval"
            continue
        if k in EXPONENTS and lo <= 0.0 <= hi:
            out[k] = f"95 % interval [{lo:.3g}, {hi:.3g}] crosses zero"
        elif k in COEFFICIENTS and (lo <= 0 or hi / lo > MAX_COEF_SPAN):
            span = hi / lo if lo > 0 else math.inf
            out[k] = f"95 % interval [{lo:.3g}, {hi:.3g}] spans a factor {span:.3g} (> {MAX_COEF_SPAN:g})"
    for k, deps in DERIVED.items():
        bad = [d for d in deps if d in out]
        if k in params and bad:
            out[k] = f"depends on {', '.join(bad)}, not identified"
    return out


ONE_SIDED = 0.05  # an end within this share of the interval's width from the estimate counts as on it


def _on_end(est: float, lo: float, hi: float) -> bool:
    """Whether an end of [lo, hi] sits on the estimate (within 5 % of the width, or float noise)."""
    tol = max(ONE_SIDED * (hi - lo), 1e-9 * max(abs(est), 1e-12))
    return min(abs(est - lo), abs(hi - est)) <= tol


def unreliable_intervals(
    params: dict[str, float],
    ci95: dict,
    samples: dict[str, np.ndarray],
    n_boot: int,
    n_units: int | None = None,
    unit: str = "runs carry the estimate",
) -> dict[str, str]:
    """Parameter → why its 95 % percentile interval cannot be trusted (reliable intervals are absent).

    ``samples`` holds each parameter's bootstrap values, one per resample drawn (NaN where a resample gave
    no estimate); ``n_boot`` is the number of resamples drawn; ``n_units`` the number of distinct resampled
    units that carry the estimate, named by ``unit`` (e.g. 2 "runs on the envelope"). Without a bootstrap
    nothing is judged.
    """
    if n_boot <= 0:
        return {}
    common = []
    if n_units is not None and n_units < MIN_UNITS:
        common.append(f"only {n_units} {unit} (a bootstrap over runs needs ≥ {MIN_UNITS})")
    out: dict[str, str] = {}
    for k, est in params.items():
        s = np.asarray(samples.get(k, []), dtype=float)
        ok = s[np.isfinite(s)]
        why = list(common)
        failed = n_boot - ok.size
        if failed > MAX_FAILED_SHARE * n_boot:
            why.append(f"{failed} of {n_boot} resamples gave no estimate, so the interval is conditioned on "
                       "those that did")
        if ok.size:
            distinct = np.unique(np.round(ok, 9)).size
            if distinct < MIN_DISTINCT:
                why.append(f"the resamples took only {distinct} distinct values")
        lo, hi = [*(ci95.get(k) or []), math.nan, math.nan][:2]
        if lo is not None and hi is not None and math.isfinite(lo) and math.isfinite(hi) and math.isfinite(est):
            if _on_end(est, lo, hi):
                why.append(f"an end of [{lo:.4g}, {hi:.4g}] sits on the estimate {est:.4g} (one-sided)")
            elif not lo <= est <= hi:
                why.append(f"the estimate {est:.4g} lies outside [{lo:.4g}, {hi:.4g}]")
        if why:
            out[k] = "; ".join(why)
    return out


def fit_flags(
    converged: bool, n_starts: int, unidentified: dict[str, str], unreliable: dict[str, str] | None = None
) -> list[str]:
    """One sentence per reason not to trust a fit (empty when there is none)."""
    flags = []
    if not converged:
        flags.append(f"not converged: none of {n_starts} starts met the convergence test; the best unconverged "
                     "optimum is shown")
    for k, why in unidentified.items():
        flags.append(f"{k} {NOT_IDENTIFIED} ({why})")
    for k, why in (unreliable or {}).items():
        flags.append(f"{UNRELIABLE} for {k}: {why}")
    return flags


def seed_scatter(logy_runs: np.ndarray, inverse: np.ndarray) -> tuple[float, int]:
    """Pooled within-point standard deviation of log L over points with ≥ 2 runs, and its degrees of freedom."""
    logy_runs = np.asarray(logy_runs, dtype=float)
    ss, dof = 0.0, 0
    for g in np.unique(inverse):
        v = logy_runs[inverse == g]
        if len(v) > 1:
            ss += float(np.sum((v - v.mean()) ** 2))
            dof += len(v) - 1
    return (math.sqrt(ss / dof), dof) if dof else (math.nan, 0)


def measurement_scatter(
    logy_runs: np.ndarray, inverse: np.ndarray, resid_points: np.ndarray, n_params: int
) -> tuple[float, int, str]:
    """(σ of one run's log L around the law, degrees of freedom, source 'seeds' | 'residuals').

    Seeds at a point measure the scatter directly; with one run per point the law's residuals do, with
    G − P degrees of freedom (G points, P parameters).
    """
    sigma, dof = seed_scatter(logy_runs, inverse)
    if dof > 0:
        return sigma, dof, "seeds"
    resid_points = np.asarray(resid_points, dtype=float)
    dof = len(resid_points) - n_params
    if dof <= 0:
        return math.nan, 0, "residuals"
    return math.sqrt(float(np.sum(resid_points**2)) / dof), dof, "residuals"


def prediction_interval(
    log_pred: np.ndarray,
    boot_log_pred: np.ndarray | None,
    sigma: float,
    dof: int,
    source: str,
    n_obs: int = 1,
    level: float = 0.95,
    n_quantiles: int = 1000,
) -> tuple[np.ndarray, np.ndarray]:
    """(lower, upper) of the prediction interval for the mean of ``n_obs`` new runs, in linear units.

    The distribution of a new measurement in log space is the bootstrap distribution of the curve at that
    point convolved with the measurement scatter: σ/√n_obs (seed scatter: the observed mean averages n_obs
    seeds) or σ (residual scatter already describes a point mean), Student-t with ``dof`` degrees of
    freedom. The convolution is taken deterministically (each bootstrap value plus ``n_quantiles`` evenly
    spaced t quantiles) and its percentiles returned, so with σ = 0 this is the curve's percentile interval;
    it is never narrower than that interval (smoothing can pull a sparse bootstrap tail inwards).
    """
    log_pred = np.atleast_1d(np.asarray(log_pred, dtype=float))
    curve = log_pred[None, :]
    if boot_log_pred is not None and len(boot_log_pred) > 1:
        curve = np.asarray(boot_log_pred, dtype=float).reshape(-1, log_pred.size)
    s = 0.0 if not math.isfinite(sigma) else sigma / (math.sqrt(max(n_obs, 1)) if source == "seeds" else 1.0)
    u = (np.arange(n_quantiles) + 0.5) / n_quantiles
    noise = (stats.t.ppf(u, dof) if dof > 0 else stats.norm.ppf(u)) * s
    mix = (curve[:, None, :] + noise[None, :, None]).reshape(-1, log_pred.size)
    q = 100 * (1 - level) / 2
    lo = np.minimum(np.percentile(mix, q, axis=0), np.percentile(curve, q, axis=0))
    hi = np.maximum(np.percentile(mix, 100 - q, axis=0), np.percentile(curve, 100 - q, axis=0))
    return np.exp(lo), np.exp(hi)
