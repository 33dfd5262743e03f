"""Per-axis scaling laws L = α·X^−β and L = E + α·X^−β, and the generic fit behind every law.

The seed study (arXiv 2509.21811) fits L = α·N^−β; the floor E is the irreducible loss of
Hoffmann et al. 2022 (arXiv 2203.15556, eq. 2). Every fit: seeds averaged per scale point (mean of
log L), summed Huber(δ=1e-3) of log residuals, L-BFGS from the full grid of starts (see
:mod:`engine.fit.lse`), 95 % percentile intervals from a bootstrap over runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from engine.errors import UserError
from engine.fit.bootstrap import average_by_group, group_runs, percentile_ci, resample_counts
from engine.fit.lse import fit_multistart, refit_many
from engine.fit.result import LAWS, FitUnavailable, LawFit, jsonable, params_from_theta

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


def fit_law(
    law: str,
    x: np.ndarray,
    y: np.ndarray,
    variables: list[str] | None = None,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
    top_k: int | None = None,
) -> LawFit:
    """Fit ``law`` ('power', 'offset', 'joint') to runs: inputs x (n_runs,) or (n_runs, K), losses y.

    Runs at the same scale point are averaged (mean of log L). ``top_k`` prunes the grid to the k
    best starts by initial objective (None = the full grid). The bootstrap resamples runs
    ``n_boot`` times (seeded by ``seed``) and refits each from the full fit's best optima.
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
    logy, _ = average_by_group(logy_runs, inverse, G, np.ones((1, len(y))))
    logy = logy[0]
    ms = fit_multistart(shape, logx, logy, top_k=top_k)
    resid = shape.predict_log(ms.theta, logx) - logy
    ss_tot = float(np.sum((logy - logy.mean()) ** 2))
    r2 = 1.0 - float(np.sum(resid**2)) / ss_tot if ss_tot > 0 else float("nan")

    boot = np.zeros((0, shape.n_params))
    if n_boot > 0:
        rng = np.random.default_rng(seed)
        counts = resample_counts(len(y), n_boot, rng)
        means, present = average_by_group(logy_runs, inverse, G, counts)
        usable = present.sum(axis=1) >= shape.n_params  # a resample must still pin down every parameter
        if usable.any():
            th, ok = refit_many(shape, logx, means[usable], present[usable].astype(float), ms.top_thetas)
            boot = th[ok]
    params = params_from_theta(law, ms.theta)
    samples = [params_from_theta(law, t) for t in boot]
    ci = {k: list(percentile_ci(np.array([s[k] for s in samples]))) for k in params}
    pruned = top_k is not None and top_k < ms.n_grid
    grid_desc = f"best {ms.n_starts} of the grid by initial loss" if pruned else "full grid"
    method = (
        f"sum of Huber(δ=1e-3) of log residuals, log-sum-exp form, L-BFGS from {ms.n_starts} starts "
        f"({grid_desc} of {ms.n_grid}); seeds averaged per point; 95 % CI: percentile bootstrap over "
        f"{len(y)} runs, {len(boot)}/{n_boot} resamples converged (seed {seed})"
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
        boot_theta=boot,
    )


@dataclass
class AxisFit:
    """Both per-axis forms for one metric against one scale variable, and which one is chosen."""

    variable: str
    metric: str
    fits: dict[str, LawFit]
    unavailable: dict[str, str]  # form → why it could not be fitted
    loo_rmse_log: dict[str, float | None]
    chosen: str | None
    choice: str  # one sentence: which form and why
    extrapolation: dict | None = None
    extra: dict = field(default_factory=dict)

    @property
    def best(self) -> LawFit | None:
        return self.fits.get(self.chosen) if self.chosen else None

    def to_dict(self) -> dict:
        return jsonable(
            {
                "variable": self.variable,
                "metric": self.metric,
                "fits": {k: f.to_dict() for k, f in self.fits.items()},
                "unavailable": self.unavailable,
                "loo_rmse_log": self.loo_rmse_log,
                "chosen": self.chosen,
                "choice": self.choice,
                "extrapolation": self.extrapolation,
                **self.extra,
            }
        )


def fit_axis(
    x: np.ndarray,
    y: np.ndarray,
    variable: str = "N",
    metric: str = "loss",
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
    top_k: int | None = None,
    extrapolate: bool = True,
) -> AxisFit:
    """Fit L = α·X^−β and L = E + α·X^−β, choose by leave-one-out error, check extrapolation."""
    from engine.fit.extrapolate import extrapolation_check
    from engine.fit.select import choose_form

    fits: dict[str, LawFit] = {}
    unavailable: dict[str, str] = {}
    for form in ("power", "offset"):
        try:
            fits[form] = fit_law(form, x, y, [variable], n_boot=n_boot, seed=seed, top_k=top_k)
        except FitUnavailable as exc:
            unavailable[form] = str(exc)
    loo, chosen, choice = choose_form(fits, np.asarray(x, dtype=float), np.asarray(y, dtype=float))
    out = AxisFit(variable, metric, fits, unavailable, loo, chosen, choice)
    if extrapolate and chosen:
        out.extrapolation = extrapolation_check(chosen, x, y, variable, n_boot=n_boot, seed=seed, top_k=top_k)
    return out
