"""The generic fit behind every law: runs in, a :class:`engine.fit.result.LawFit` with intervals and flags out.

Every fit: seeds averaged per scale point (mean of log L, each point weighted by its number of runs),
summed Huber of log residuals with δ set from the residuals' scale (1.345 × the robust σ of a least-squares
pre-fit, :func:`engine.fit.multistart.fit_scaled_huber`), L-BFGS from the full grid of starts (see
:mod:`engine.fit.multistart`), 95 % percentile intervals from a bootstrap over runs whose refits weight
each point by its draw count. The result says whether its optimum converged and which parameters the
runs do not identify (:mod:`engine.fit.trust`).
"""

from __future__ import annotations

import numpy as np

from engine.errors import UserError
from engine.fit.bootstrap import average_by_group, group_runs, percentile_ci, point_weights, resample_counts
from engine.fit.multistart import fit_scaled_huber, refit_many
from engine.fit.result import LAWS, FitUnavailable, LawFit, params_from_theta
from engine.fit.trust import fit_flags, measurement_scatter, not_identified, unreliable_intervals

DEFAULT_N_BOOT = 500
SYMBOLS = {"n_params": "N", "train_size": "D", "flops_cum": "C"}  # letters the formulas print


def _check_inputs(x: np.ndarray, y: np.ndarray, n_terms: int, what: str) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=float).reshape(len(y), n_terms) if len(y) else np.zeros((0, n_terms))
    y = np.asarray(y, dtype=float)
    if not (np.all(np.isfinite(x)) and np.all(x > 0)):
        raise UserError(f"{what}: scale values must be positive and finite; drop runs without them")
    if not (np.all(np.isfinite(y)) and np.all(y > 0)):
        raise UserError(f"{what}: losses must be positive and finite to fit in log space; drop diverged runs")
    return x, y


def bootstrap_thetas(
    shape, logx: np.ndarray, logy_runs: np.ndarray, inverse: np.ndarray, counts: np.ndarray, starts: np.ndarray,
    delta: float,
) -> np.ndarray:
    """Refit each resample given by draw ``counts`` (B, n_runs); returns θ of the converged refits (b, P).

    A point's objective weight is the number of draws of its runs; a resample that leaves fewer points
    than parameters cannot pin them down and is skipped. Every refit uses the full fit's Huber ``delta``.
    """
    G = len(logx)
    means, draws = average_by_group(logy_runs, inverse, G, counts)
    usable = (draws > 0).sum(axis=1) >= shape.n_params
    if not usable.any():
        return np.zeros((0, starts.shape[1]))
    th, ok = refit_many(shape, logx, means[usable], point_weights(draws[usable]), starts, delta=delta)
    return th[ok]


def fit_law(
    law: str,
    x: np.ndarray,
    y: np.ndarray,
    variables: list[str] | None = None,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
    top_k: int | None = None,
    maxiter: int = 500,
) -> LawFit:
    """Fit ``law`` ('power', 'offset', 'joint') to runs: inputs x (n_runs,) or (n_runs, K), losses y.

    Runs at the same scale point are averaged (mean of log L). ``top_k`` prunes the grid to the k
    best starts by initial objective (None = the full grid). The bootstrap resamples runs
    ``n_boot`` times (seeded by ``seed``) and refits each from the full fit's best optima.
    ``maxiter`` bounds the optimizer (tests lower it to produce an unconverged fit).
    Raises :class:`FitUnavailable` when there are too few distinct scale points.
    """
    shape, formula = LAWS[law]
    variables = variables or [f"x{k}" for k in range(shape.n_terms)]
    if shape.n_terms == 1:
        formula = formula.replace("X", SYMBOLS.get(variables[0], "X"))
    x, y = _check_inputs(x, y, shape.n_terms, f"{law} fit of {', '.join(variables)}")
    points, inverse = group_runs(x)
    G = len(points)
    need = shape.n_params + 1
    if shape.n_terms == 2 and (len(np.unique(points[:, 0])) < 3 or len(np.unique(points[:, 1])) < 3):
        counts = ", ".join(f"{len(np.unique(points[:, k]))} {v}" for k, v in enumerate(variables))
        raise FitUnavailable(f"{formula} needs ≥ 3 distinct values of each of {', '.join(variables)}; got {counts}")
    if need > G:
        raise FitUnavailable(f"{formula} needs ≥ {need} distinct scale points, got {G}")
    logx = np.log(points)
    logy_runs = np.log(y)
    means, draws = average_by_group(logy_runs, inverse, G, np.ones((1, len(y))))
    logy, weights = means[0], point_weights(draws)[0]
    ms = fit_scaled_huber(shape, logx, logy, weights, top_k=top_k, maxiter=maxiter)
    resid = shape.predict_log(ms.theta, logx) - logy
    ss_tot = float(np.sum((logy - logy.mean()) ** 2))
    r2 = 1.0 - float(np.sum(resid**2)) / ss_tot if ss_tot > 0 else float("nan")

    boot = np.zeros((0, shape.n_params))
    if n_boot > 0:
        counts = resample_counts(len(y), n_boot, np.random.default_rng(seed))
        boot = bootstrap_thetas(shape, logx, logy_runs, inverse, counts, ms.top_thetas, ms.delta)
    params = params_from_theta(law, ms.theta)
    samples = [params_from_theta(law, t) for t in boot]
    arrays = {k: np.array([s[k] for s in samples], dtype=float) for k in params}
    ci = {k: list(percentile_ci(v)) for k, v in arrays.items()}
    unident = not_identified(params, ci, len(boot), n_boot)
    unreliable = {k: why for k, why in unreliable_intervals(params, ci, arrays, n_boot, len(y)).items()
                  if k not in unident}
    sigma, dof, source = measurement_scatter(logy_runs, inverse, resid, shape.n_params)
    pruned = top_k is not None and top_k < ms.n_grid
    grid_desc = f"best {ms.n_starts} of the grid by initial loss" if pruned else "full grid"
    method = (
        f"sum of Huber(δ={ms.delta:.3g}) of log residuals (δ = 1.345 × σ̂ = {ms.scale_log:.3g}, the robust scale "
        f"of a least-squares fit's residuals), log-sum-exp form, L-BFGS from {ms.n_starts} starts "
        f"({grid_desc} of {ms.n_grid}), optimum {'converged' if ms.converged else 'NOT converged'}; seeds averaged "
        f"per point, points weighted by runs; 95 % CI: percentile bootstrap over {len(y)} runs (draw counts as "
        f"weights), {len(boot)}/{n_boot} resamples converged (seed {seed})"
    )
    return LawFit(
        law=law,
        formula=formula,
        variables=list(variables),
        params=params,
        ci95=ci,
        method=method,
        n_points=G,
        n_runs=len(y),
        rmse_log=float(np.sqrt(np.mean(resid**2))),
        r2_log=r2,
        objective=ms.objective,
        n_grid=ms.n_grid,
        n_starts=ms.n_starts,
        n_converged=ms.n_converged,
        n_at_optimum=ms.n_at_optimum,
        n_boot=n_boot,
        n_boot_ok=len(boot),
        seed=seed,
        theta=[float(v) for v in ms.theta],
        converged=ms.converged,
        not_identified=unident,
        interval_unreliable=unreliable,
        flags=fit_flags(ms.converged, ms.n_starts, unident, unreliable),
        scatter_log=sigma,
        scatter_dof=dof,
        scatter_source=source,
        boot_theta=boot,
        huber_delta=ms.delta,
    )
