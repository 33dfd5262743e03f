"""Extrapolation check: refit without the largest scale and predict it.

The question users ask of a scaling law is what happens one step further; holding out the largest
scale and comparing the prediction with what was measured is the honest test of that (cf. Hoffmann
et al. 2022, arXiv 2203.15556, who validate by extrapolation). The verdict uses a 95 % PREDICTION
interval (the refit curve's bootstrap uncertainty plus the scatter of a measurement: seeds at a point,
or the residuals with one seed per point, see :mod:`engine.fit.trust`); the curve's own interval is
reported beside it but would call single-seed measurements misses far too often.
"""

from __future__ import annotations

import math

import numpy as np

from engine.fit.fitlaw import DEFAULT_N_BOOT, fit_law
from engine.fit.result import FitUnavailable, jsonable


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
    inside (observed within pi95), inside_ci95, scatter, rel_error, …} or {"not_available": why}.
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
            "inside": bool(plo[0] <= observed <= phi[0]),
            "inside_ci95": bool(lo[0] <= observed <= hi[0]),
            "scatter": {"sigma_log": fit.scatter_log, "dof": fit.scatter_dof, "source": fit.scatter_source},
            "fit_flags": fit.flags,
            "rel_error": pred / observed - 1.0,
            "params": fit.params,
        }
    )
