"""Bootstrap over runs: resample runs with replacement, average seeds per scale point, refit.

Efron & Tibshirani 1993 (percentile intervals). Each resample draws n runs from the n runs with
replacement; runs at the same scale (seeds) are averaged as the mean of log L, each run weighted by
how often it was drawn. A point's weight in the refit is the number of draws of its runs (a run drawn
twice counts twice), so a point whose runs were all left out is absent from that resample (weight 0).
The full fit weights each point by its number of runs, the expectation of the resampled weights.
"""

from __future__ import annotations

import numpy as np


def group_runs(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct scale points of run inputs x (n_runs, K) → (points (G, K), run → point index)."""
    ux, inverse = np.unique(np.asarray(x, dtype=float), axis=0, return_inverse=True)
    return ux, inverse.reshape(-1)


def average_by_group(values: np.ndarray, inverse: np.ndarray, n_groups: int, counts: np.ndarray):
    """Count-weighted mean of ``values`` per group for each resample.

    ``counts`` (B, n_runs) holds how often each run was drawn. Returns (means (B, G), draws (B, G)):
    ``draws`` is how many draws fell on each group's runs (0: the point is absent from that resample).
    """
    counts = np.atleast_2d(counts).astype(float)
    onehot = np.zeros((len(inverse), n_groups))
    onehot[np.arange(len(inverse)), inverse] = 1.0
    tot = counts @ onehot  # (B, G)
    sums = (counts * values) @ onehot
    present = tot > 0
    means = np.where(present, sums / np.where(present, tot, 1.0), 0.0)
    return means, tot


def point_weights(draws: np.ndarray) -> np.ndarray:
    """Objective weights from draw counts per point (B, G), scaled to mean 1 per resample.

    A uniform scale leaves the optimum unchanged; mean 1 keeps the optimizer's tolerances, which are set
    per point, meaning the same as for an unweighted fit.
    """
    draws = np.atleast_2d(np.asarray(draws, dtype=float))
    return draws * draws.shape[1] / np.maximum(draws.sum(axis=1, keepdims=True), 1e-300)


def resample_counts(n_runs: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot, n_runs) draw counts of a nonparametric bootstrap over runs."""
    return rng.multinomial(n_runs, np.full(n_runs, 1.0 / n_runs), size=n_boot)


def percentile_ci(samples: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of finite bootstrap samples (NaNs when there are none)."""
    s = np.asarray(samples, dtype=float)
    s = s[np.isfinite(s)]
    if s.size == 0:
        return float("nan"), float("nan")
    q = 100 * (1 - level) / 2
    return float(np.percentile(s, q)), float(np.percentile(s, 100 - q))
