"""The joint law L(N, D) = E + A/N^a + B/D^b (Hoffmann et al. 2022, arXiv 2203.15556, eq. 2).

Fitted like every law here (summed Huber of log residuals, log-sum-exp form, L-BFGS from the full
4,500-start grid, bootstrap over runs); the result also carries the compute-optimal allocation
exponents N_opt ∝ C^(b/(a+b)), D_opt ∝ C^(a/(a+b)) (eq. 4) with their bootstrap intervals.
"""

from __future__ import annotations

import numpy as np

from engine.fit.fitlaw import DEFAULT_N_BOOT, fit_law
from engine.fit.result import LawFit


def fit_joint(
    n_params: np.ndarray,
    train_size: np.ndarray,
    loss: np.ndarray,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
    top_k: int | None = None,
) -> LawFit:
    """Fit L(N, D) to runs (N = parameters, D = training structures); seeds at one (N, D) averaged.

    Raises :class:`engine.fit.result.FitUnavailable` unless there are ≥ 3 distinct N and ≥ 3 distinct D.
    """
    x = np.column_stack([np.asarray(n_params, dtype=float), np.asarray(train_size, dtype=float)])
    return fit_law("joint", x, loss, ["n_params", "train_size"], n_boot=n_boot, seed=seed, top_k=top_k)
