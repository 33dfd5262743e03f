"""Power laws in log-sum-exp form and their multi-start L-BFGS fit.

A law with K power terms and an optional floor,

    L = E + Σ_k A_k · X_k^(−a_k),

is written in log space as log L̂ = LSE(log A_k − a_k log X_k, …, log E) (Hoffmann et al. 2022,
arXiv 2203.15556, App. D.2), which keeps every coefficient positive and the fit well conditioned.
The parameter vector is θ = [log A_1, a_1, …, log A_K, a_K, (log E)].

The objective is the SUM of Huber(δ=1e-3) losses of log residuals (Besiroglu et al. 2024,
arXiv 2404.10102), minimized with L-BFGS and an analytic gradient from a full grid of starts:
exponents 0–2 step 0.5, log-coefficients 0–25 step 5, log E −1..1 step 0.5 (30, 150 or 4,500
starts). Speed: every start runs at once in :func:`batched_lbfgs` (numpy L-BFGS with per-start
history and line search, inputs centered so log-coefficients and exponents decorrelate); the few
best distinct optima are then polished with ``scipy.optimize.minimize(method="L-BFGS-B")`` and the
best converged one is kept. ``top_k`` optionally prunes the grid to the k starts with the lowest
initial objective (all evaluated in one vectorized pass); ``top_k=None`` refines every start.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize
from scipy.special import logsumexp, softmax

from engine.fit.huber import HUBER_DELTA, huber, huber_grad

EXPONENT_GRID = (0.0, 0.5, 1.0, 1.5, 2.0)
LOG_COEF_GRID = (0.0, 5.0, 10.0, 15.0, 20.0, 25.0)
LOG_FLOOR_GRID = (-1.0, -0.5, 0.0, 0.5, 1.0)
STALL_WINDOW = 25  # iterations between value-convergence checks in batched_lbfgs


@dataclass(frozen=True)
class LseLaw:
    """Shape of a law: ``n_terms`` power terms (one per input variable) and an optional floor E."""

    n_terms: int
    floor: bool

    @property
    def n_params(self) -> int:
        return 2 * self.n_terms + int(self.floor)

    def terms(self, theta: np.ndarray, logx: np.ndarray) -> np.ndarray:
        """Log-terms for parameters ``theta`` (..., P) at inputs ``logx`` (n, K) → (..., n, K[+1])."""
        theta = np.asarray(theta, dtype=float)
        logc = theta[..., 0 : 2 * self.n_terms : 2]
        expo = theta[..., 1 : 2 * self.n_terms : 2]
        t = logc[..., None, :] - expo[..., None, :] * logx
        if self.floor:
            loge = np.broadcast_to(theta[..., -1][..., None, None], (*t.shape[:-1], 1))
            t = np.concatenate([t, loge], axis=-1)
        return t

    def predict_log(self, theta: np.ndarray, logx: np.ndarray) -> np.ndarray:
        """log L̂ at ``logx`` (n, K); ``theta`` may carry leading batch axes."""
        return logsumexp(self.terms(theta, logx), axis=-1)

    def start_grid(self) -> np.ndarray:
        """The full grid of starts, (S, P): 30 for one term, 150 with a floor, 4,500 for two terms + floor."""
        axes = []
        for _ in range(self.n_terms):
            axes += [LOG_COEF_GRID, EXPONENT_GRID]
        if self.floor:
            axes.append(LOG_FLOOR_GRID)
        return np.array(list(itertools.product(*axes)), dtype=float)


def center(law: LseLaw, theta: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """θ for inputs log X − shift: log A_k − a_k·shift_k. Centering the inputs decorrelates each
    log-coefficient from its exponent, which L-BFGS needs on the nearly piecewise-linear Huber loss."""
    out = np.array(theta, dtype=float)
    out[..., 0 : 2 * law.n_terms : 2] -= out[..., 1 : 2 * law.n_terms : 2] * shift
    return out


def uncenter(law: LseLaw, theta: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """Inverse of :func:`center`."""
    out = np.array(theta, dtype=float)
    out[..., 0 : 2 * law.n_terms : 2] += out[..., 1 : 2 * law.n_terms : 2] * shift
    return out


def objective(
    law: LseLaw, theta: np.ndarray, logx: np.ndarray, logy: np.ndarray, weights: np.ndarray | None = None
) -> np.ndarray:
    """Σ_i w_i · Huber(log L̂_i − log L_i) for one θ (P,) or a batch of θ (S, P)."""
    r = law.predict_log(theta, logx) - logy
    h = huber(r, HUBER_DELTA)
    if weights is not None:
        h = h * weights
    return h.sum(axis=-1)


def objective_and_grad(
    theta: np.ndarray, law: LseLaw, logx: np.ndarray, logy: np.ndarray, weights: np.ndarray | None
) -> tuple[float, np.ndarray]:
    """Objective and its analytic gradient for one θ (the function scipy's L-BFGS calls)."""
    t = law.terms(theta, logx)  # (n, K[+1])
    pred = logsumexp(t, axis=-1)
    r = pred - logy
    dh = huber_grad(r, HUBER_DELTA)
    h = huber(r, HUBER_DELTA)
    if weights is not None:
        dh = dh * weights
        h = h * weights
    s = softmax(t, axis=-1) * dh[:, None]  # ∂obj/∂t_k = softmax_k · h'(r)
    g = np.empty(law.n_params)
    k = law.n_terms
    g[0 : 2 * k : 2] = s[:, :k].sum(axis=0)
    g[1 : 2 * k : 2] = -(s[:, :k] * logx).sum(axis=0)
    if law.floor:
        g[-1] = s[:, -1].sum()
    return float(h.sum()), g


def batch_objective_and_grad(
    law: LseLaw, theta: np.ndarray, logx: np.ndarray, logy: np.ndarray, weights: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Objective (S,) and gradient (S, P) for S parameter vectors at once.

    ``logx`` is (n, K) or (S, n, K); ``logy`` and ``weights`` are (n,) shared by all problems or
    (S, n), one data set per problem (bootstrap resamples fitted together).
    """
    k = law.n_terms
    # one (S, n) array per term: reductions over a short last axis are slow in numpy
    xs = [logx[..., c] for c in range(k)]
    terms = [theta[:, 2 * c, None] - theta[:, 2 * c + 1, None] * xs[c] for c in range(k)]
    if law.floor:
        terms.append(np.broadcast_to(theta[:, -1, None], terms[0].shape))
    tmax = terms[0]
    for t in terms[1:]:
        tmax = np.maximum(tmax, t)
    exps = [np.exp(t - tmax) for t in terms]
    z = exps[0]
    for e in exps[1:]:
        z = z + e
    r = tmax + np.log(z) - logy
    dh = huber_grad(r, HUBER_DELTA)
    h = dh * (r - 0.5 * dh)  # = huber(r): r²/2 inside ±δ, δ(|r| − δ/2) outside
    if weights is not None:
        dh = dh * weights
        h = h * weights
    dz = dh / z  # ∂obj/∂t_k = softmax_k · h'(r)
    g = np.empty(theta.shape)
    for c in range(k):
        sc = exps[c] * dz
        g[:, 2 * c] = sc.sum(axis=-1)
        g[:, 2 * c + 1] = -(sc * xs[c]).sum(axis=-1)
    if law.floor:
        g[:, -1] = (exps[-1] * dz).sum(axis=-1)
    return h.sum(axis=-1), g


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

    f, g = batch_objective_and_grad(law, x, *data(slice(None)))
    # gradient tolerance relative to the largest gradient one point can give, δ per point
    gabs = gtol * HUBER_DELTA * logy.shape[-1]
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
            ft, gt = batch_objective_and_grad(law, xt, *data(idx[p]))
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


def polish(
    law: LseLaw, theta0: np.ndarray, logx: np.ndarray, logy: np.ndarray, weights: np.ndarray | None = None
) -> tuple[np.ndarray, float, bool]:
    """Finish one start with scipy's L-BFGS-B (analytic gradient); returns (θ, objective, converged)."""
    shift = logx.mean(axis=0)
    res = minimize(
        objective_and_grad,
        center(law, theta0, shift),
        args=(law, logx - shift, logy, weights),
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": 2000, "ftol": 1e-13, "gtol": 1e-10},
    )
    # The Huber objective with δ=1e-3 is nearly piecewise linear: L-BFGS-B often ends on a
    # line-search failure at a true minimum, so a small gradient also counts as converged.
    ok = bool(res.success) or float(np.max(np.abs(res.jac))) < 1e-4 * max(1.0, len(logy))
    return uncenter(law, res.x, shift), float(res.fun), ok


def fit_multistart(
    law: LseLaw,
    logx: np.ndarray,
    logy: np.ndarray,
    weights: np.ndarray | None = None,
    starts: np.ndarray | None = None,
    top_k: int | None = None,
    n_polish: int = 3,
) -> MultiStartResult:
    """Minimize the summed Huber objective from every start; keep the best converged run.

    All starts (default: the full grid) run together in :func:`batched_lbfgs`; ``top_k`` first
    keeps only the k starts with the lowest initial objective (one vectorized pass). The
    ``n_polish`` best distinct optima are then finished with scipy's L-BFGS-B.
    """
    logy = np.asarray(logy, dtype=float)
    logx = np.asarray(logx, dtype=float).reshape(len(logy), law.n_terms)
    grid = law.start_grid() if starts is None else np.atleast_2d(np.asarray(starts, dtype=float))
    n_grid = len(grid)
    if top_k is not None and top_k < n_grid:
        f0 = objective(law, grid, logx, logy, weights)
        grid = grid[np.argsort(np.where(np.isfinite(f0), f0, np.inf), kind="stable")[:top_k]]
    shift = logx.mean(axis=0)
    xc, f, _g, conv = batched_lbfgs(law, center(law, grid, shift), logx - shift, logy, weights)
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
    polished = [polish(law, c, logx, logy, weights) for c in candidates]
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
    )


def refit_many(
    law: LseLaw,
    logx: np.ndarray,
    logy: np.ndarray,
    weights: np.ndarray,
    starts: np.ndarray,
    maxiter: int = 150,
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
    xc, f, _g, conv = batched_lbfgs(law, theta0, lx - shift, np.repeat(logy, m, axis=0), w, maxiter=maxiter)
    x = uncenter(law, xc, shift)
    f = np.where(np.isfinite(f) & np.all(np.isfinite(x), axis=1), f, np.inf).reshape(B, m)
    best = np.argmin(f, axis=1)
    pick = np.arange(B) * m + best
    return x[pick], conv[pick] & np.isfinite(f[np.arange(B), best])
