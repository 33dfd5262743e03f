"""Optimizers for the log-sum-exp objective: many L-BFGS problems in one numpy pass, and scipy's polish.

:func:`batched_lbfgs` runs every start at once (per-start history and line search, inputs centered
so log-coefficients and exponents decorrelate); :func:`polish` finishes one start with
``scipy.optimize.minimize(method="L-BFGS-B")``. Both say whether they converged.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize

from engine.fit.huber import HUBER_DELTA
from engine.fit.objective import batch_objective_and_grad, objective_and_grad
from engine.fit.shape import LseLaw, center, uncenter

STALL_WINDOW = 25  # iterations between value-convergence checks in batched_lbfgs


def batched_lbfgs(
    law: LseLaw,
    theta0: np.ndarray,
    logx: np.ndarray,
    logy: np.ndarray,
    weights: np.ndarray | None = None,
    maxiter: int = 500,
    memory: int = 10,
    ftol: float = 1e-10,
    gtol: float = 1e-4,
    ftol_window: float = 1e-6,
    delta: float = HUBER_DELTA,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """L-BFGS (Nocedal & Wright 2006, Alg. 7.4/7.5) on many independent problems in one numpy pass.

    Each problem keeps its own curvature history and backtracking Armijo line search; finished
    problems drop out of the active set. Returns (θ (S, P), objective (S,), gradient (S, P),
    converged (S,) bool).
    """
    x = np.array(theta0, dtype=float)
    S, P = x.shape
    memory = min(memory, 2 * P)  # ≤ 5 parameters: a longer history adds Python overhead, not curvature
    logx = np.asarray(logx, dtype=float)
    logy = np.asarray(logy, dtype=float)
    per_problem = logy.ndim == 2

    def data(idx):
        lx = logx[idx] if logx.ndim == 3 else logx
        ly = logy[idx] if per_problem else logy
        w = None if weights is None else (weights[idx] if np.ndim(weights) == 2 else weights)
        return lx, ly, w

    f, g = batch_objective_and_grad(law, x, *data(slice(None)), delta)
    # gradient tolerance relative to the largest gradient one point can give, δ per point
    gabs = gtol * delta * logy.shape[-1]
    s_hist = np.zeros((memory, S, P))
    y_hist = np.zeros((memory, S, P))
    rho = np.zeros((memory, S))
    n_hist = np.zeros(S, dtype=int)  # entries used, newest at index (head-1) % memory
    head = np.zeros(S, dtype=int)
    active = np.ones(S, dtype=bool)
    converged = np.zeros(S, dtype=bool)
    f_window = f.copy()
    for it in range(maxiter):
        if it and it % STALL_WINDOW == 0:
            # value convergence over a window: problems drifting along a flat valley (E → 0, a
            # coefficient → ∞) improve by less than ftol_window·|f| and would run to maxiter
            stalled = active & (f_window - f <= ftol_window * np.maximum(np.abs(f), 1e-12))
            active[stalled] = False
            converged[stalled] = True
            f_window = f.copy()
        idx = np.flatnonzero(active)
        if idx.size == 0:
            break
        gi = g[idx]
        # two-loop recursion over each problem's own history
        q = gi.copy()
        alphas = np.zeros((memory, idx.size))
        for j in range(memory):
            slot = (head[idx] - 1 - j) % memory
            use = j < n_hist[idx]
            sj = s_hist[slot, idx]
            yj = y_hist[slot, idx]
            a = np.where(use, rho[slot, idx] * np.einsum("sp,sp->s", sj, q), 0.0)
            alphas[j] = a
            q -= a[:, None] * yj
        newest = (head[idx] - 1) % memory
        sn, yn = s_hist[newest, idx], y_hist[newest, idx]
        yy = np.einsum("sp,sp->s", yn, yn)
        gamma = np.where(n_hist[idx] > 0, np.einsum("sp,sp->s", sn, yn) / np.maximum(yy, 1e-300), 1.0)
        gnorm = np.sqrt(np.einsum("sp,sp->s", gi, gi))
        # first step: a unit-length move along −g (the scale of θ is O(1) in log space)
        gamma = np.where(n_hist[idx] > 0, gamma, 1.0 / np.maximum(gnorm, 1e-300))
        r = gamma[:, None] * q
        for j in reversed(range(memory)):
            slot = (head[idx] - 1 - j) % memory
            use = j < n_hist[idx]
            b = np.where(use, rho[slot, idx] * np.einsum("sp,sp->s", y_hist[slot, idx], r), 0.0)
            r += s_hist[slot, idx] * np.where(use, alphas[j] - b, 0.0)[:, None]
        d = -r
        slope = np.einsum("sp,sp->s", gi, d)
        bad = ~(slope < 0) | ~np.all(np.isfinite(d), axis=1)
        if bad.any():  # not a descent direction: reset that problem's memory, steepest descent
            d[bad] = -gi[bad] / np.maximum(gnorm[bad], 1e-300)[:, None]
            n_hist[idx[bad]] = 0
            slope = np.einsum("sp,sp->s", gi, d)
        # backtracking Armijo line search, all problems at once
        step = np.ones(idx.size)
        pending = np.ones(idx.size, dtype=bool)
        x_new = x[idx].copy()
        f_new = f[idx].copy()
        g_new = gi.copy()
        for _ls in range(40):
            p = np.flatnonzero(pending)
            if p.size == 0:
                break
            xt = x[idx[p]] + step[p, None] * d[p]
            ft, gt = batch_objective_and_grad(law, xt, *data(idx[p]), delta)
            ok = np.isfinite(ft) & (ft <= f[idx[p]] + 1e-4 * step[p] * slope[p])
            acc = p[ok]
            x_new[acc], f_new[acc], g_new[acc] = xt[ok], ft[ok], gt[ok]
            pending[acc] = False
            step[p[~ok]] *= 0.5
        moved = ~pending
        # problems whose line search failed are done: converged if their gradient is already tiny
        stuck = idx[pending]
        active[stuck] = False
        converged[stuck] = np.max(np.abs(g[stuck]), axis=1) < 100 * gabs if stuck.size else False
        m = idx[moved]
        sv = x_new[moved] - x[m]
        yv = g_new[moved] - g[m]
        df = f[m] - f_new[moved]
        x[m], f[m], g[m] = x_new[moved], f_new[moved], g_new[moved]
        sy = np.einsum("sp,sp->s", sv, yv)
        # curvature condition with margin; tiny s·y would overflow ρ = 1/(s·y)
        keep = sy > 1e-10 * np.sqrt(np.einsum("sp,sp->s", sv, sv) * np.einsum("sp,sp->s", yv, yv)) + 1e-300
        mk = m[keep]
        s_hist[head[mk], mk] = sv[keep]
        y_hist[head[mk], mk] = yv[keep]
        rho[head[mk], mk] = 1.0 / sy[keep]
        head[mk] = (head[mk] + 1) % memory
        n_hist[mk] = np.minimum(n_hist[mk] + 1, memory)
        done = (df <= ftol * np.maximum(np.abs(f[m]), 1e-12)) | (np.max(np.abs(g[m]), axis=1) < gabs)
        active[m[done]] = False
        converged[m[done]] = True
    return x, f, g, converged


def polish(
    law: LseLaw,
    theta0: np.ndarray,
    logx: np.ndarray,
    logy: np.ndarray,
    weights: np.ndarray | None = None,
    maxiter: int = 2000,
    delta: float = HUBER_DELTA,
) -> tuple[np.ndarray, float, bool]:
    """Finish one start with scipy's L-BFGS-B (analytic gradient); returns (θ, objective, converged)."""
    shift = logx.mean(axis=0)
    res = minimize(
        objective_and_grad,
        center(law, theta0, shift),
        args=(law, logx - shift, logy, weights, delta),
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": maxiter, "ftol": 1e-13, "gtol": 1e-10},
    )
    # A Huber objective with a small δ is nearly piecewise linear: L-BFGS-B often ends on a
    # line-search failure at a true minimum, so a small gradient also counts as converged.
    ok = bool(res.success) or float(np.max(np.abs(res.jac))) < 0.1 * delta * max(1.0, len(logy))
    return uncenter(law, res.x, shift), float(res.fun), ok
