"""Per-axis and joint fits: recovery, form choice, intervals, serialization, the value of the grid."""

import json

import numpy as np
import pytest

from engine.errors import UserError
from engine.fit.extrapolate import extrapolation_check
from engine.fit.fitlaw import fit_law
from engine.fit.joint import fit_joint
from engine.fit.lbfgs import polish
from engine.fit.multistart import fit_multistart
from engine.fit.powerlaw import fit_axis
from engine.fit.result import FitUnavailable
from engine.fit.shape import LseLaw

N = np.repeat(np.logspace(3, 7, 8), 2)


def test_power_law_recovered_from_noiseless_data():
    fit = fit_law("power", N, 776.0 * N**-0.383, ["n_params"], n_boot=20)
    assert fit.params["beta"] == pytest.approx(0.383, rel=1e-5)
    assert fit.params["alpha"] == pytest.approx(776.0, rel=1e-4)
    assert fit.formula == "L = α·N^−β"
    assert fit.r2_log == pytest.approx(1.0) and fit.rmse_log < 1e-5
    assert fit.n_points == 8 and fit.n_runs == 16 and fit.n_grid == 30


def test_offset_form_chosen_when_there_is_a_floor_and_power_when_not():
    rng = np.random.default_rng(0)
    noise = np.exp(rng.normal(0, 0.01, len(N)))
    with_floor = fit_axis(N, (0.8 + 776.0 * N**-0.383) * noise, "n_params", n_boot=30, extrapolate=False)
    assert with_floor.chosen == "offset"
    assert with_floor.best.params["E"] == pytest.approx(0.8, rel=0.1)
    assert "leave-one-out" in with_floor.choice
    assert with_floor.loo_rmse_log["offset"] < with_floor.loo_rmse_log["power"]
    pure = fit_axis(N, 776.0 * N**-0.383 * noise, "n_params", n_boot=30, extrapolate=False)
    assert pure.chosen == "power"


def test_fit_serializes_to_json_with_intervals_around_estimates():
    rng = np.random.default_rng(1)
    y = 50.0 * N**-0.25 * np.exp(rng.normal(0, 0.02, len(N)))
    fit = fit_axis(N, y, "train_size", n_boot=40)
    d = json.loads(json.dumps(fit.to_dict(), allow_nan=False))
    p = d["fits"]["power"]
    lo, hi = p["ci95"]["beta"]
    assert lo <= p["params"]["beta"] <= hi
    assert p["n_boot"] == 40 and p["n_boot_ok"] >= 35
    assert "Huber" in p["method"] and "bootstrap" in p["method"]
    ex = d["extrapolation"]
    assert ex["held_out"] == pytest.approx(1e7) and ex["ci95"][0] <= ex["predicted"] <= ex["ci95"][1]
    assert ex["observed"] == pytest.approx(np.exp(np.log(y[N == 1e7]).mean()))


def test_too_few_points_and_bad_losses_are_reported():
    with pytest.raises(FitUnavailable, match="needs ≥ 4 distinct scale points"):
        fit_law("offset", [1e3, 1e4, 1e5], [3.0, 2.0, 1.0])
    with pytest.raises(UserError, match="positive and finite"):
        fit_law("power", [1e3, 1e4, 1e5], [3.0, -2.0, 1.0])
    ex = extrapolation_check("offset", [1e3, 1e4, 1e5, 1e6], [4.0, 3.0, 2.0, 1.5], n_boot=5)
    assert ex["not_available"].startswith("without the largest")
    only_two = fit_axis([1e3, 1e4], [2.0, 1.0], n_boot=5)
    assert only_two.chosen is None and set(only_two.unavailable) == {"power", "offset"}


def test_joint_law_recovers_allocation_exponents():
    rng = np.random.default_rng(2)
    n, d = np.meshgrid(np.logspace(4, 7, 4), np.logspace(3, 6, 4))
    n, d = n.ravel(), d.ravel()
    y = (0.3 + 50 * n**-0.35 + 20 * d**-0.3) * np.exp(rng.normal(0, 0.003, n.size))
    fit = fit_joint(n, d, y, n_boot=20, top_k=100)
    assert fit.params["a"] == pytest.approx(0.35, abs=0.05)
    assert fit.params["b"] == pytest.approx(0.3, abs=0.05)
    assert fit.params["x_n_opt"] == pytest.approx(0.3 / 0.65, abs=0.05)
    assert fit.params["x_n_opt"] + fit.params["y_d_opt"] == pytest.approx(1.0)
    ex = extrapolation_check("joint", np.c_[n, d], y, "n_params", n_boot=10, top_k=100,
                             variables=["n_params", "train_size"])
    assert ex["held_out"] == [1e7, 1e6] and ex["n_runs_held_out"] == 4 and ex["n_runs_observed"] == 1
    assert abs(ex["rel_error"]) < 0.05
    with pytest.raises(FitUnavailable, match="≥ 3 distinct values"):
        two = d <= 1e4  # 4 sizes × 2 data sizes: 8 points, but D is not resolved
        fit_joint(n[two], d[two], y[two], n_boot=0)


def test_single_start_fails_where_the_grid_succeeds():
    # Hoffmann-like joint law (Besiroglu et al. 2024 refit) on 60 points: from one start of the grid
    # L-BFGS converges to a wrong local optimum; the grid finds the true exponents.
    rng = np.random.default_rng(0)
    n = np.exp(rng.uniform(np.log(1e6), np.log(1e10), 60))
    d = np.exp(rng.uniform(np.log(1e8), np.log(1e12), 60))
    y = (1.69 + 406.4 / n**0.34 + 410.7 / d**0.28) * np.exp(rng.normal(0, 0.01, 60))
    law, logx, logy = LseLaw(2, True), np.log(np.c_[n, d]), np.log(y)
    single, f_single, ok = polish(law, np.array([25.0, 2.0, 25.0, 2.0, 1.0]), logx, logy)
    assert ok  # it "converged" …
    assert abs(single[3] - 0.28) > 1.0  # … to a data exponent near 2 instead of 0.28
    grid = fit_multistart(law, logx, logy, top_k=100)  # the 100 best grid starts by initial loss
    assert grid.objective < 0.2 * f_single
    assert grid.theta[1] == pytest.approx(0.34, abs=0.03) and grid.theta[3] == pytest.approx(0.28, abs=0.03)
