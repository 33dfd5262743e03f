"""Calibration: data drawn from known laws with noise; the 95 % intervals must cover the truth.

100 seeded cases in all: 40 from L = α·N^−β, 30 from L = E + α·N^−β, 30 from the joint law
L = E + A/N^a + B/D^b (its grid pruned to the best starts and fewer resamples, to stay fast).
For every law, the true parameters must fall inside the reported intervals in ≥ 90 % of
(case, parameter) pairs, and no single parameter below 85 %.
"""

import numpy as np
import pytest

from engine.fit.fitlaw import fit_law

CASES = {"power": 40, "offset": 30, "joint": 30}
TRUE = {
    "power": {"alpha": 776.0, "beta": 0.383},
    "offset": {"alpha": 776.0, "beta": 0.383, "E": 0.5},
    "joint": {"E": 0.3, "A": 50.0, "a": 0.35, "B": 20.0, "b": 0.3},
}


def draw(law: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1000 + seed)
    if law == "joint":
        n, d = np.meshgrid(np.logspace(4, 7, 4), np.logspace(3, 6, 4))
        n, d = np.repeat(n.ravel(), 2), np.repeat(d.ravel(), 2)
        t = TRUE["joint"]
        y = t["E"] + t["A"] * n ** -t["a"] + t["B"] * d ** -t["b"]
        return np.c_[n, d], y * np.exp(rng.normal(0, 0.02, n.size))
    n = np.repeat(np.logspace(3, 7, 8), 3)  # 8 sizes × 3 seeds
    t = TRUE[law]
    y = t.get("E", 0.0) + t["alpha"] * n ** -t["beta"]
    return n, y * np.exp(rng.normal(0, 0.03, n.size))


@pytest.mark.slow
@pytest.mark.parametrize("law", list(CASES))
def test_true_parameters_inside_95_percent_intervals(law):
    hits = {k: [] for k in TRUE[law]}
    for seed in range(CASES[law]):
        x, y = draw(law, seed)
        kw = {"n_boot": 60, "top_k": 60} if law == "joint" else {"n_boot": 100}
        fit = fit_law(law, x, y, n_boot=kw["n_boot"], seed=seed, top_k=kw.get("top_k"))
        for k, v in TRUE[law].items():
            lo, hi = fit.ci95[k]
            hits[k].append(lo <= v <= hi)
    per_param = {k: float(np.mean(v)) for k, v in hits.items()}
    pooled = float(np.mean([h for v in hits.values() for h in v]))
    assert pooled >= 0.9, per_param
    assert min(per_param.values()) >= 0.85, per_param
