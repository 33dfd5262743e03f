"""Fits that say when not to trust them: unconverged optima, unidentified parameters, prediction intervals,
and bootstrap weights that are draw counts."""

import json

import numpy as np
import pytest
from scipy import stats

from engine.fit.bootstrap import average_by_group, group_runs, point_weights
from engine.fit.extrapolate import extrapolation_check
from engine.fit.fitlaw import bootstrap_thetas, fit_law
from engine.fit.frontier import Curve, fit_frontier
from engine.fit.powerlaw import fit_axis
from engine.fit.result import LAWS
from engine.fit.trust import NOT_IDENTIFIED, measurement_scatter, not_identified, prediction_interval

N = np.logspace(3, 7, 8)


def test_unconverged_optimum_is_flagged_not_silently_reported():
    y = 776.0 * N**-0.383 * np.exp(np.random.default_rng(0).normal(0, 0.02, N.size))
    fit = fit_law("power", N, y, ["n_params"], n_boot=0, maxiter=1)  # one iteration: nothing can converge
    assert not fit.converged and not fit.trusted
    assert fit.flags[0].startswith("not converged: none of 30 starts met the convergence test")
    assert "NOT converged" in fit.method
    d = json.loads(json.dumps(fit.to_dict(), allow_nan=False))
    assert d["converged"] is False and d["trusted"] is False
    axis = fit_axis(N, y, "n_params", n_boot=0, extrapolate=False, maxiter=1)
    assert any(f.startswith("not converged") for f in axis.to_dict()["flags"])
    good = fit_law("power", N, y, ["n_params"], n_boot=50)
    assert good.converged and good.flags == [] and good.trusted


def test_flat_data_exponent_is_not_identified():
    rng = np.random.default_rng(3)
    x = np.repeat(N, 2)
    flat = 2.0 * np.exp(rng.normal(0, 0.05, x.size))  # no trend: the sign of β is not pinned down
    fit = fit_law("power", x, flat, ["n_params"], n_boot=200)
    lo, hi = fit.ci95["beta"]
    assert lo < 0 < hi
    assert "beta" in fit.not_identified and "crosses zero" in fit.not_identified["beta"]
    assert any(f.startswith(f"beta {NOT_IDENTIFIED}") for f in fit.flags) and not fit.trusted


def test_floor_of_a_pure_power_law_is_not_identified():
    y = 776.0 * N**-0.383 * np.exp(np.random.default_rng(1).normal(0, 0.02, N.size))
    fit = fit_law("offset", N, y, ["n_params"], n_boot=200)
    lo, hi = fit.ci95["E"]
    assert hi / lo > 100  # E → 0 fits as well as any small floor
    assert "spans a factor" in fit.not_identified["E"]
    assert "beta" not in fit.not_identified


def test_identification_rules_by_hand():
    params = {"alpha": 5.0, "beta": 0.3, "E": 1.0, "a": 0.2, "b": 0.4, "x_n_opt": 0.6}
    ci = {"alpha": [1.0, 99.0], "beta": [-0.01, 0.5], "E": [0.01, 2.0], "a": [0.1, 0.3], "b": [0.2, 0.6],
          "x_n_opt": [0.5, 0.7]}
    out = not_identified(params, ci, n_boot_ok=100, n_boot=100)
    assert set(out) == {"beta", "E"}  # alpha spans 99× (≤ 100): identified
    ci["a"] = [-0.1, 0.3]
    assert set(not_identified(params, ci, 100, 100)) == {"beta", "E", "a", "x_n_opt"}
    assert not_identified(params, ci, 0, 0) == {}  # no bootstrap: nothing judged
    assert set(not_identified(params, ci, 0, 50)) == set(params)  # resamples drawn, none converged


def test_extrapolation_uses_a_prediction_interval_from_residuals():
    rng = np.random.default_rng(7)
    y = 776.0 * N**-0.383 * np.exp(rng.normal(0, 0.05, N.size))  # one seed per point
    ex = extrapolation_check("power", N, y, "n_params", n_boot=200, seed=0)
    # by hand: the refit on the 7 smaller sizes, its residual scatter and the curve's bootstrap variance
    fit = fit_law("power", N[:-1], y[:-1], ["n_params"], n_boot=200, seed=0)
    resid = np.log(fit.predict(N[:-1])) - np.log(y[:-1])
    sigma = np.sqrt(np.sum(resid**2) / (7 - 2))
    assert ex["scatter"] == {"sigma_log": pytest.approx(sigma), "dof": 5, "source": "residuals"}
    assert ex["pi95"][0] <= ex["ci95"][0] and ex["pi95"][1] > ex["ci95"][1]  # wider than the curve's interval
    assert ex["inside"] == (ex["pi95"][0] <= ex["observed"] <= ex["pi95"][1])
    # the curve's spread plus the scatter: about t(5)·sqrt(var_curve + σ²) either side in log space
    boot = LAWS["power"][0].predict_log(fit.boot_theta, np.log(N[-1:])[:, None])[:, 0]
    half = stats.t.ppf(0.975, 5) * np.sqrt(np.var(boot, ddof=1) + sigma**2)
    assert np.log(ex["pi95"][1] / ex["pi95"][0]) / 2 == pytest.approx(half, rel=0.15)


def test_prediction_interval_limits():
    log_pred, boot = np.array([0.0]), np.random.default_rng(0).normal(0, 0.1, (400, 1))
    lo, hi = prediction_interval(log_pred, boot, 0.0, 5, "residuals")  # no scatter: the curve's interval
    np.testing.assert_allclose(np.log([lo[0], hi[0]]), np.percentile(boot[:, 0], [2.5, 97.5]))
    lo, hi = prediction_interval(log_pred, None, 0.2, 5, "residuals")  # no curve spread: ±t·σ
    np.testing.assert_allclose(np.log(hi), stats.t.ppf(0.975, 5) * 0.2, rtol=0.01)
    _lo4, hi4 = prediction_interval(log_pred, None, 0.2, 5, "seeds", n_obs=4)  # the mean of 4 seeds: σ/2
    np.testing.assert_allclose(np.log(hi4), np.log(hi) / 2, rtol=1e-9)


def test_prediction_interval_does_not_over_report_misses():
    # 30 single-seed sweeps from a true law: the prediction interval covers the held-out size about 95 % of the
    # time; the interval of the mean curve alone calls more of them misses
    inside_pi, inside_ci = [], []
    for s in range(30):
        y = 776.0 * N**-0.383 * np.exp(np.random.default_rng(100 + s).normal(0, 0.05, N.size))
        ex = extrapolation_check("power", N, y, "n_params", n_boot=60, seed=s)
        inside_pi.append(ex["inside"])
        inside_ci.append(ex["inside_ci95"])
    assert np.mean(inside_pi) >= 0.85
    assert sum(inside_pi) > sum(inside_ci)


def test_seed_scatter_is_used_when_points_have_seeds():
    rng = np.random.default_rng(2)
    x = np.repeat(N, 3)
    logy = np.log(776.0 * x**-0.383) + rng.normal(0, 0.04, x.size)
    _, inverse = group_runs(x[:, None])
    sigma, dof, source = measurement_scatter(logy, inverse, np.zeros(8), 2)
    pooled = np.sqrt(sum(np.sum((v - v.mean()) ** 2) for v in logy.reshape(8, 3)) / 16)
    assert (source, dof) == ("seeds", 16) and sigma == pytest.approx(pooled)
    ex = extrapolation_check("power", x, np.exp(logy), "n_params", n_boot=50)
    assert ex["scatter"]["source"] == "seeds" and ex["n_runs_observed"] == 3


def test_bootstrap_weights_are_draw_counts():
    # one resample by hand: run 0 drawn twice, run 3 never
    rng = np.random.default_rng(4)
    y = 776.0 * N**-0.383 * np.exp(rng.normal(0, 0.05, N.size))
    counts = np.array([[2, 1, 1, 0, 1, 1, 1, 1]])
    _means, draws = average_by_group(np.log(y), np.arange(8), 8, counts)
    np.testing.assert_array_equal(draws, counts)
    np.testing.assert_allclose(point_weights(draws), counts * 8 / 8)
    shape = LAWS["power"][0]
    full = fit_law("power", N, y, n_boot=0)
    # the same as fitting the resample literally: run 0 twice (its point counts twice), run 3 absent (with the
    # literal fit's Huber δ: a bootstrap refit keeps the δ of the fit it resamples)
    literal = fit_law("power", np.repeat(N, counts[0]), np.repeat(y, counts[0]), n_boot=0)
    theta = bootstrap_thetas(shape, np.log(N)[:, None], np.log(y), np.arange(8), counts, np.array([full.theta]),
                             literal.huber_delta)
    assert theta.shape == (1, 2)
    np.testing.assert_allclose(theta[0], literal.theta, atol=1e-4)
    once = fit_law("power", N[counts[0] > 0], y[counts[0] > 0], n_boot=0)  # drawn twice counted once
    assert np.max(np.abs(np.asarray(once.theta) - literal.theta)) > 1e-3


def test_frontier_law_carries_convergence_and_identification():
    curves = []
    for n in (1e4, 1e5, 1e6):
        c = np.geomspace(1e9, 1e13, 12)
        curves.append(Curve(f"n{n:g}", n, 1e3, c, 50 * c**-0.1 * (1 + 1e3 / n)))
    law = fit_frontier(curves, n_boot=30)["law"]
    assert law["converged"] is True and law["not_identified"] == {}
    # the largest size's curve is the whole envelope: converged and identified, but no interval to quote
    assert law["n_frontier_runs"] == 1 and set(law["interval_unreliable"]) == {"alpha", "beta"}
    assert law["flags"] and all(f.startswith("interval not reliable") for f in law["flags"])
    assert "draw counts" in law["method"]
