"""The fit's objective: the SUM of Huber(δ) losses of log residuals, with analytic gradients.

Besiroglu et al. 2024 (arXiv 2404.10102): summed, not averaged, or L-BFGS stops after a couple of
iterations. ``weights`` multiply each point's loss; a bootstrap passes draw counts (a run drawn twice
counts twice). ``delta`` is the Huber threshold in log units (:func:`engine.fit.huber.scale_delta`).
"""

from __future__ import annotations

import numpy as np
from scipy.special import logsumexp, softmax

from engine.fit.huber import HUBER_DELTA, huber, huber_grad
from engine.fit.shape import LseLaw


def objective(
    law: LseLaw, theta: np.ndarray, logx: np.ndarray, logy: np.ndarray, weights: np.ndarray | None = None,
    delta: float = HUBER_DELTA,
) -> np.ndarray:
    """Σ_i w_i · Huber(log L̂_i − log L_i) for one θ (P,) or a batch of θ (S, P)."""
    r = law.predict_log(theta, logx) - logy
    h = huber(r, delta)
    if weights is not None:
        h = h * weights
    return h.sum(axis=-1)


def objective_and_grad(
    theta: np.ndarray, law: LseLaw, logx: np.ndarray, logy: np.ndarray, weights: np.ndarray | None,
    delta: float = HUBER_DELTA,
) -> tuple[float, np.ndarray]:
    """Objective and its analytic gradient for one θ (the function scipy's L-BFGS calls)."""
    t = law.terms(theta, logx)  # (n, K[+1])
    pred = logsumexp(t, axis=-1)
    r = pred - logy
    dh = huber_grad(r, delta)
    h = huber(r, delta)
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
    law: LseLaw, theta: np.ndarray, logx: np.ndarray, logy: np.ndarray, weights: np.ndarray | None,
    delta: float = HUBER_DELTA,
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
    dh = huber_grad(r, delta)
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
