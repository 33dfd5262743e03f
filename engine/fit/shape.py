"""The shape of a scaling law in log-sum-exp form, and the grid of starts its fit begins from.

A law with K power terms and an optional floor,

    L = E + Σ_k A_k · X_k^(−a_k),

is written in log space as log L̂ = LSE(log A_k − a_k log X_k, …, log E) (Hoffmann et al. 2022,
arXiv 2203.15556, App. D.2), which keeps every coefficient positive and the fit well conditioned.
The parameter vector is θ = [log A_1, a_1, …, log A_K, a_K, (log E)]. The start grid is the
published one: exponents 0–2 step 0.5, log-coefficients 0–25 step 5, log E −1..1 step 0.5
(30, 150 or 4,500 starts).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from scipy.special import logsumexp

EXPONENT_GRID = (0.0, 0.5, 1.0, 1.5, 2.0)
LOG_COEF_GRID = (0.0, 5.0, 10.0, 15.0, 20.0, 25.0)
LOG_FLOOR_GRID = (-1.0, -0.5, 0.0, 0.5, 1.0)


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

