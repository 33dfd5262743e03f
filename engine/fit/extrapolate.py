"""Extrapolation check: refit without the largest scale and predict it.

The question users ask of a scaling law is what happens one step further; holding out the largest
scale and comparing the prediction with what was measured is the honest test of that (cf. Hoffmann
et al. 2022, arXiv 2203.15556, who validate by extrapolation). The verdict uses a 95 % PREDICTION
interval (the refit curve's bootstrap uncertainty plus the scatter of a measurement: seeds at a point,
or the residuals with one seed per point, see :mod:`engine.fit.trust`); the curve's own interval is
reported beside it but would call single-seed measurements misses far too often.

A refit with fewer than 2 residual degrees of freedom (points − parameters) has a prediction interval so
wide that it cannot fail (3 points for a 2-parameter law: [0.10, 11.05] around an observed 1.34): its
``verdict`` is "not a test". Otherwise the check has "passed" (observed inside the prediction interval and the
refit unflagged), "missed", or "refit flagged" (the refit's own flags, in ``fit_flags``, say not to trust it).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

from engine.fit.fitlaw import DEFAULT_N_BOOT, fit_law
from engine.fit.multistart import fit_scaled_huber
from engine.fit.result import LAWS, FitUnavailable, jsonable
from engine.fit.trust import fit_flags

MIN_RESIDUAL_DOF = 2  # points − parameters of the refit, below which the check cannot fail
NOT_A_TEST = "not a test"


def check_verdict(residual_dof: int, inside: bool, refit_flags: list[str]) -> str:
    """"not a test" (< 2 residual degrees of freedom), "missed", "refit flagged" or "passed"."""
    if residual_dof < MIN_RESIDUAL_DOF:
        return NOT_A_TEST
    if not inside:
        return "missed"
    return "refit flagged" if refit_flags else "passed"


def extrapolation_check(
    law: str,
    x: np.ndarray,
    y: np.ndarray,
    variable: str = "N",
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
    top_k: int | None = None,
    hold_out_column: int = 0,
    variables: list[str] | None = None,
) -> dict:
    """Refit ``law`` on runs below the largest value of input column ``hold_out_column``; predict it.

    For the joint law pass x (n_runs, 2) and ``variables``: all runs at the largest N are held out and
    the prediction is compared at the largest (N, D) among them.
    Returns {law, variable, held_out, n_runs_held_out, observed, predicted, ci95 (curve), pi95 (prediction),
    inside (observed within pi95), inside_ci95, scatter, rel_error, residual_dof, verdict, fit_flags, …} or
    {"not_available": why}.
    ``observed`` is the geometric mean over the runs (seeds) at that point.
    """
    y = np.asarray(y, dtype=float)
    x = np.asarray(x, dtype=float).reshape(len(y), -1)
    col = x[:, hold_out_column]
    top = col.max() if len(col) else math.nan
    held = col == top
    names = [variable] if x.shape[1] == 1 else variables or [f"x{k}" for k in range(x.shape[1])]
    try:
        fit = fit_law(law, x[~held], y[~held], names, n_boot=n_boot, seed=seed, top_k=top_k)
    except FitUnavailable as exc:
        return {"not_available": f"without the largest {variable}: {exc}"}
    # the largest scale point: largest held-out value, then (joint law) the largest other inputs
    x_new = x[held][np.lexsort(x[held].T[::-1])][-1:]
    at = np.all(x == x_new, axis=1)
    pred = float(fit.predict(x_new)[0])
    lo, hi = fit.predict_interval(x_new)
    n_obs = int(at.sum())
    plo, phi = fit.prediction_interval(x_new, n_obs=n_obs)
    observed = float(np.exp(np.mean(np.log(y[at]))))
    inside = bool(plo[0] <= observed <= phi[0])
    dof = fit.n_points - LAWS[law][0].n_params
    return jsonable(
        {
            "law": law,
            "variable": variable,
            "held_out": x_new[0].tolist() if x.shape[1] > 1 else float(top),
            "n_runs_held_out": int(held.sum()),
            "n_runs_observed": int(at.sum()),
            "n_points_fitted": fit.n_points,
            "observed": observed,
            "predicted": pred,
            "ci95": [float(lo[0]), float(hi[0])],
            "pi95": [float(plo[0]), float(phi[0])],
            "inside": inside,
            "inside_ci95": bool(lo[0] <= observed <= hi[0]),
            "scatter": {"sigma_log": fit.scatter_log, "dof": fit.scatter_dof, "source": fit.scatter_source},
            "fit_flags": fit.flags,
            "residual_dof": dof,
            "verdict": check_verdict(dof, inside, fit.flags),
            "rel_error": pred / observed - 1.0,
            "params": fit.params,
        }
    )


def frontier_extrapolation_check(flops: np.ndarray, loss: np.ndarray, size: np.ndarray) -> dict:
    """The same check for the compute frontier's L(C) = α·C^−β: refit without the envelope points of the size
    that holds the largest budget, predict the budget at which that size joins the envelope.

    That budget is one step further along the frontier. Past it the envelope is bounded by the ladder (no larger
    size can take over, so the largest size's curve bends away from any power law in C): a miss there would
    say where the ladder ends, not whether the law extrapolates.

    The envelope's points are seed means, one per (size, key), so the prediction interval is the refit's
    least-squares-style interval in log space: t(dof)·σ·√(1 + h), σ the residual scatter of the refit, h the
    leverage of the held-out log C (e.g. Weisberg 2005, *Applied Linear Regression*, §3.5).
    Returns {held_out, n_points_held_out, n_points_fitted, observed, predicted, pi95, inside, residual_dof,
    verdict, fit_flags, rel_error} or {"not_available": why}.
    """
    flops, loss, size = (np.asarray(v) for v in (flops, loss, size))
    if len(flops) == 0:
        return {"not_available": "the frontier has no point"}
    held = size == size[int(np.argmax(flops))]
    last = int(np.flatnonzero(held)[np.argmin(flops[held])])  # where the largest size joins the envelope
    law = LAWS["power"][0]
    if (~held).sum() < law.n_params + 1:
        return {"not_available": f"without the largest size on the frontier {int((~held).sum())} frontier points "
                                 f"remain; L(C) needs ≥ {law.n_params + 1}"}
    logx, logy = np.log(flops[~held].astype(float))[:, None], np.log(loss[~held].astype(float))
    ms = fit_scaled_huber(law, logx, logy)
    resid = law.predict_log(ms.theta, logx) - logy
    dof = len(logy) - law.n_params
    x0 = math.log(float(flops[last]))
    pred = float(law.predict_log(ms.theta, np.array([[x0]]))[0])
    if dof > 0:
        sigma = math.sqrt(float(np.sum(resid**2)) / dof)
        sxx = float(np.sum((logx[:, 0] - logx[:, 0].mean()) ** 2))
        lev = 1.0 / len(logy) + ((x0 - logx[:, 0].mean()) ** 2 / sxx if sxx > 0 else math.inf)
        half = float(stats.t.ppf(0.975, dof)) * sigma * math.sqrt(1.0 + lev)
    else:
        half = math.inf
    observed = float(loss[last])
    inside = bool(abs(math.log(observed) - pred) <= half)
    flags = fit_flags(ms.converged, ms.n_starts, {})
    return jsonable({
        "law": "power",
        "variable": "flops_cum",
        "held_out": float(flops[last]),
        "n_points_held_out": int(held.sum()),
        "n_points_fitted": len(logy),
        "observed": observed,
        "predicted": math.exp(pred),
        "pi95": [math.exp(pred - half), math.exp(pred + half)],
        "inside": inside,
        "residual_dof": dof,
        "verdict": check_verdict(dof, inside, flags),
        "fit_flags": flags,
        "rel_error": math.exp(pred) / observed - 1.0,
    })
