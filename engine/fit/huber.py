"""Huber loss of log-space residuals, the robust objective of scaling-law fits, and its δ.

Hoffmann et al. 2022 (arXiv 2203.15556, App. D.2) fit log-space residuals with Huber δ = 1e-3;
Besiroglu et al. 2024 (arXiv 2404.10102) show the loss must be SUMMED over points, not averaged,
or L-BFGS stops after a couple of iterations. A fixed δ = 1e-3 is nearly L1 for residuals of a few
percent: a fit over 4–7 points then passes through two of them. So δ is set from the residuals' scale
(:func:`scale_delta`): δ = 1.345·σ̂, the tuning constant that keeps 95 % of least-squares efficiency under
Gaussian errors (Huber 1981, *Robust Statistics*, §4.6), with σ̂ the normalized median absolute residual
of a first least-squares fit (Rousseeuw & Croux 1993) corrected for the parameters fitted.
"""

from __future__ import annotations

import math

import numpy as np

HUBER_DELTA = 1e-3  # the published δ (Hoffmann et al. 2022); the default of the low-level functions
LEAST_SQUARES_DELTA = 10.0  # every log residual of a sane fit is inside ±10: Huber is then least squares
HUBER_K = 1.345  # δ / σ: 95 % Gaussian efficiency (Huber 1981)
MAD_TO_SIGMA = 1.4826  # σ = 1.4826·MAD for Gaussian residuals
MIN_DELTA = 1e-4  # noiseless data: residuals ~0, keep the optimizer's tolerances (set per δ) meaningful


def huber(r: np.ndarray, delta: float = HUBER_DELTA) -> np.ndarray:
    """Elementwise Huber loss: r²/2 inside |r| ≤ δ, δ(|r| − δ/2) outside."""
    a = np.abs(r)
    return np.where(a <= delta, 0.5 * r * r, delta * (a - 0.5 * delta))


def huber_grad(r: np.ndarray, delta: float = HUBER_DELTA) -> np.ndarray:
    """Derivative of :func:`huber` with respect to r: r clipped to [−δ, δ]."""
    return np.clip(r, -delta, delta)


def scale_delta(resid: np.ndarray, n_params: int) -> tuple[float, float]:
    """(δ, σ̂) from the log residuals of a least-squares fit with ``n_params`` parameters.

    σ̂ = 1.4826·median|r|·√(G/(G−P)): the robust scale of G residuals, inflated for the P parameters the
    fit spent (least-squares residuals are smaller than the errors by about √((G−P)/G)). δ = 1.345·σ̂,
    at least :data:`MIN_DELTA`.
    """
    r = np.abs(np.asarray(resid, dtype=float))
    r = r[np.isfinite(r)]
    if r.size == 0:
        return MIN_DELTA, math.nan
    g = r.size
    dof_factor = math.sqrt(g / (g - n_params)) if g > n_params else 1.0
    sigma = MAD_TO_SIGMA * float(np.median(r)) * dof_factor
    return max(HUBER_K * sigma, MIN_DELTA), sigma
