"""Huber loss of log-space residuals, the robust objective of scaling-law fits.

Hoffmann et al. 2022 (arXiv 2203.15556, App. D.2) fit log-space residuals with Huber δ = 1e-3;
Besiroglu et al. 2024 (arXiv 2404.10102) show the loss must be SUMMED over points, not averaged,
or L-BFGS stops after a couple of iterations.
"""

from __future__ import annotations

import numpy as np

HUBER_DELTA = 1e-3


def huber(r: np.ndarray, delta: float = HUBER_DELTA) -> np.ndarray:
    """Elementwise Huber loss: r²/2 inside |r| ≤ δ, δ(|r| − δ/2) outside."""
    a = np.abs(r)
    return np.where(a <= delta, 0.5 * r * r, delta * (a - 0.5 * delta))


def huber_grad(r: np.ndarray, delta: float = HUBER_DELTA) -> np.ndarray:
    """Derivative of :func:`huber` with respect to r: r clipped to [−δ, δ]."""
    return np.clip(r, -delta, delta)
