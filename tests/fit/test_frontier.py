"""Compute frontier and Chinchilla approaches on synthetic learning curves."""

import numpy as np
import pytest

from engine.fit.frontier import (
    Curve,
    allocation_from_joint,
    approach1,
    fit_frontier,
    isoflop_profiles,
    pareto_frontier,
)

E, A, a, B, b = 0.2, 40.0, 0.34, 60.0, 0.28  # L(N, S) = E + A/N^a + B/S^b, S = structures seen


def chinchilla_curves(c_max: float = 1e14, noise: float = 0.0, seed: int = 0) -> list[Curve]:
    rng = np.random.default_rng(seed)
    curves = []
    for n in np.geomspace(1e4, 1e7, 7):
        seen = np.geomspace(1e3, c_max / (6 * n), 30)
        loss = (E + A * n**-a + B * seen**-b) * np.exp(rng.normal(0, noise, seen.size))
        curves.append(Curve(f"n{n:.0f}", n, 1e3, 6 * n * seen, loss, epoch=seen / 1e3))
    return curves


def test_frontier_is_the_lower_envelope():
    c1 = Curve("a", 10, 100, np.array([0.0, 1.0, 2.0, 4.0]), np.array([9.0, 5.0, 4.0, 3.5]), np.arange(4.0))
    c2 = Curve("b", 100, 100, np.array([2.0, 3.0, 8.0]), np.array([4.5, 3.0, 1.0]), np.arange(1.0, 4.0))
    f = pareto_frontier([c1, c2])
    # epoch 0 (0 FLOPs) is dropped; (2, 4.5) and (4, 3.5) are beaten by cheaper points
    np.testing.assert_allclose(f["flops"], [1.0, 2.0, 3.0, 8.0])
    np.testing.assert_allclose(f["loss"], [5.0, 4.0, 3.0, 1.0])
    assert list(f["run"]) == [0, 0, 1, 1]
    assert list(f["n_params"]) == [10, 10, 100, 100]
    assert np.all(np.diff(f["loss"]) < 0)


def test_isoflop_minimum_matches_the_true_optimum():
    curves = chinchilla_curves()
    budget = 1e12
    prof = isoflop_profiles(curves, np.array([budget]))[0]
    # true optimum at fixed C = 6·N·S: minimize E + A N^-a + B (C/6N)^-b over N
    grid = np.geomspace(1e3, 1e8, 20001)
    true = grid[np.argmin(A * grid**-a + B * (budget / (6 * grid)) ** -b)]
    assert prof["n_opt"] == pytest.approx(true, rel=0.5)  # 7 sizes, a parabola: within a factor 1.5


def test_fit_frontier_reports_law_and_allocation_with_intervals():
    out = fit_frontier(chinchilla_curves(noise=0.005), n_boot=40)
    law = out["law"]
    assert law["formula"] == "L = α·C^−β" and law["n_points"] >= 10
    lo, hi = law["ci95"]["beta"]
    assert lo <= law["params"]["beta"] <= hi and 0 < law["params"]["beta"] < 1
    x_true = b / (a + b)
    a2 = out["approach2"]
    assert a2["x_n_opt"] == pytest.approx(x_true, abs=0.15)
    assert a2["ci95"]["x_n_opt"][0] <= a2["x_n_opt"] <= a2["ci95"]["x_n_opt"][1]
    a1 = out["approach1"]
    assert a1["x_n_opt"] == pytest.approx(x_true, abs=0.2)
    assert len(a1["n_opt"]) == len(a1["budgets_flops"])


def test_not_available_instead_of_numbers():
    one_size = [Curve("a", 1e4, 100, np.array([1.0, 2.0, 4.0, 8.0]), np.array([4.0, 3.0, 2.0, 1.5]))]
    out = fit_frontier(one_size, n_boot=5)
    assert "x_n_opt" not in out["approach1"]
    assert out["approach1"]["not_available"].startswith("one model size")
    assert "≥ 3 model sizes" in out["approach2"]["not_available"]
    assert allocation_from_joint(None, "needs ≥ 3 distinct values")["not_available"] == "needs ≥ 3 distinct values"
    assert "not_available" in approach1(pareto_frontier([]))
