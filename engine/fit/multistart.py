"""Multi-start fit: every start of the grid through batched L-BFGS, the best few polished, the best kept.

Keeps the best converged optimum; when no start converges the best unconverged one is returned with
``converged=False``, and every caller must say so (fits.json ``converged``, the report's flags).
``top_k`` optionally prunes the grid to the k starts with the lowest initial objective (one
vectorized pass); ``top_k=None`` refines every start. :func:`refit_many` refits many data sets
(bootstrap resamples, leave-one-out) warm-started from the full fit's optima, with the full fit's δ.
:func:`fit_scaled_huber` first fits least squares, sets the Huber δ from its residuals
(:func:`engine.fit.huber.scale_delta`), then runs the multi-start fit with that δ.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.fit.huber import HUBER_DELTA, LEAST_SQUARES_DELTA, scale_delta
from engine.fit.lbfgs import batched_lbfgs, polish
from engine.fit.objective import objective
from engine.fit.shape import LseLaw, center, uncenter


@dataclass
class MultiStartResult:
    """Best of a multi-start fit, with what the other starts did."""

    theta: np.ndarray
    objective: float
    converged: bool
    n_starts: int  # starts refined with L-BFGS
    n_grid: int  # starts in the grid (before pruning)
    n_converged: int
    n_at_optimum: int  # refined starts ending within 1e-4·|f*| of the best objective
    top_thetas: np.ndarray  # best few distinct converged optima, (m, P): warm starts for refits
    delta: float = HUBER_DELTA  # the Huber δ the fit used (log units)
    scale_log: float = float("nan")  # σ̂ of the least-squares residuals δ was set from (NaN: δ given)


def fit_multistart(
    law: LseLaw,
    logx: np.ndarray,
    logy: np.ndarray,
    weights: np.ndarray | None = None,
    starts: np.ndarray | None = None,
    top_k: int | None = None,
    n_polish: int = 3,
    maxiter: int = 500,
    delta: float = HUBER_DELTA,
) -> MultiStartResult:
    """Minimize the summed Huber objective from every start; keep the best converged run.

    All starts (default: the full grid) run together in :func:`batched_lbfgs`; ``top_k`` first
    keeps only the k starts with the lowest initial objective (one vectorized pass). The
    ``n_polish`` best distinct optima are then finished with scipy's L-BFGS-B. ``maxiter`` bounds the
    batched iterations (the polish gets 4× as many); a low value is how tests make a fit stop unconverged.
    """
    logy = np.asarray(logy, dtype=float)
    logx = np.asarray(logx, dtype=float).reshape(len(logy), law.n_terms)
    grid = law.start_grid() if starts is None else np.atleast_2d(np.asarray(starts, dtype=float))
    n_grid = len(grid)
    if top_k is not None and top_k < n_grid:
        f0 = objective(law, grid, logx, logy, weights, delta)
        grid = grid[np.argsort(np.where(np.isfinite(f0), f0, np.inf), kind="stable")[:top_k]]
    shift = logx.mean(axis=0)
    xc, f, _g, conv = batched_lbfgs(law, center(law, grid, shift), logx - shift, logy, weights, maxiter=maxiter,
                                    delta=delta)
    x = uncenter(law, xc, shift)
    finite = np.isfinite(f) & np.all(np.isfinite(x), axis=1)
    if not finite.any():
        raise FloatingPointError("every start diverged")
    order = [i for i in np.argsort(np.where(finite, f, np.inf), kind="stable") if finite[i]]
    candidates: list[np.ndarray] = []
    for i in order:
        if all(np.max(np.abs(x[i] - c)) > 1e-3 for c in candidates):
            candidates.append(x[i])
        if len(candidates) >= max(1, n_polish):
            break
    polished = [polish(law, c, logx, logy, weights, maxiter=4 * maxiter, delta=delta) for c in candidates]
    pool = [p for p in polished if p[2]] or polished
    theta, fbest, ok = min(pool, key=lambda p: p[1])
    at_opt = int(np.sum(f[finite] <= fbest + 1e-4 * abs(fbest) + 1e-12))
    top = [theta] + [p[0] for p in sorted(polished, key=lambda p: p[1]) if np.max(np.abs(p[0] - theta)) > 1e-3]
    return MultiStartResult(
        theta=theta,
        objective=fbest,
        converged=ok,
        n_starts=len(grid),
        n_grid=n_grid,
        n_converged=int(conv.sum()),
        n_at_optimum=max(at_opt, 1),
        top_thetas=np.array(top[:3]),
        delta=delta,
    )


PRE_FIT_STARTS = 300  # starts of the least-squares pre-fit (best by initial loss): it only sets a scale


def fit_scaled_huber(
    law: LseLaw,
    logx: np.ndarray,
    logy: np.ndarray,
    weights: np.ndarray | None = None,
    top_k: int | None = None,
    maxiter: int = 500,
) -> MultiStartResult:
    """Multi-start fit whose Huber δ is set relative to the residuals' scale.

    A least-squares fit (Huber with δ beyond every residual, from the :data:`PRE_FIT_STARTS` best starts by
    initial loss) gives residuals r; δ = 1.345·σ̂ with σ̂ their normalized median absolute value corrected
    for the parameters (:func:`engine.fit.huber.scale_delta`); then :func:`fit_multistart` with that δ.
    """
    logy = np.asarray(logy, dtype=float)
    logx = np.asarray(logx, dtype=float).reshape(len(logy), law.n_terms)
    pre_k = PRE_FIT_STARTS if top_k is None else min(top_k, PRE_FIT_STARTS)
    pre = fit_multistart(law, logx, logy, weights, top_k=pre_k, n_polish=1, maxiter=maxiter,
                         delta=LEAST_SQUARES_DELTA)
    delta, sigma = scale_delta(law.predict_log(pre.theta, logx) - logy, law.n_params)
    ms = fit_multistart(law, logx, logy, weights, top_k=top_k, maxiter=maxiter, delta=delta)
    ms.scale_log = sigma
    return ms


def refit_many(
    law: LseLaw,
    logx: np.ndarray,
    logy: np.ndarray,
    weights: np.ndarray,
    starts: np.ndarray,
    maxiter: int = 150,
    delta: float = HUBER_DELTA,
) -> tuple[np.ndarray, np.ndarray]:
    """Refit B data sets (logy, weights: (B, n)) from the same few starts (m, P), all in one batch.

    Used for bootstrap resamples and leave-one-out refits, warm-started from the full fit's best
    optima (warm starts converge in tens of iterations, hence the lower ``maxiter``).
    ``logx`` is (n, K) shared or (B, n, K), one set of inputs per data set.
    Returns (θ (B, P) best per data set, ok (B,) whether that best converged).
    """
    logy = np.atleast_2d(logy)
    weights = np.atleast_2d(weights)
    starts = np.atleast_2d(starts)
    B, m = len(logy), len(starts)
    logx = np.asarray(logx, dtype=float)
    shift = logx.reshape(-1, law.n_terms).mean(axis=0)
    theta0 = center(law, np.tile(starts, (B, 1)), shift)
    w = np.repeat(weights, m, axis=0)
    lx = np.repeat(logx, m, axis=0) if logx.ndim == 3 else logx
    xc, f, _g, conv = batched_lbfgs(law, theta0, lx - shift, np.repeat(logy, m, axis=0), w, maxiter=maxiter,
                                    delta=delta)
    x = uncenter(law, xc, shift)
    f = np.where(np.isfinite(f) & np.all(np.isfinite(x), axis=1), f, np.inf).reshape(B, m)
    best = np.argmin(f, axis=1)
    pick = np.arange(B) * m + best
    return x[pick], conv[pick] & np.isfinite(f[np.arange(B), best])
