"""The log-sum-exp law, its analytic gradient and the batched optimizer."""

import numpy as np
from scipy.optimize import approx_fprime

from engine.fit.huber import huber, huber_grad
from engine.fit.lbfgs import batched_lbfgs
from engine.fit.multistart import fit_multistart
from engine.fit.objective import batch_objective_and_grad, objective, objective_and_grad
from engine.fit.shape import LseLaw, center, uncenter


def test_grid_sizes_match_the_published_grid():
    assert len(LseLaw(1, False).start_grid()) == 30
    assert len(LseLaw(1, True).start_grid()) == 150
    grid = LseLaw(2, True).start_grid()
    assert grid.shape == (4500, 5)
    assert set(grid[:, 1]) == {0.0, 0.5, 1.0, 1.5, 2.0}
    assert set(grid[:, 0]) == {0.0, 5.0, 10.0, 15.0, 20.0, 25.0}
    assert set(grid[:, 4]) == {-1.0, -0.5, 0.0, 0.5, 1.0}


def test_huber_is_quadratic_inside_and_linear_outside():
    r = np.array([-0.01, -5e-4, 0.0, 5e-4, 0.01])
    np.testing.assert_allclose(huber(r), [1e-3 * (0.01 - 5e-4), 1.25e-7, 0.0, 1.25e-7, 1e-3 * (0.01 - 5e-4)])
    np.testing.assert_allclose(huber_grad(r), [-1e-3, -5e-4, 0.0, 5e-4, 1e-3])


def test_prediction_is_the_law_in_linear_space():
    law = LseLaw(2, True)
    theta = np.array([np.log(400.0), 0.34, np.log(410.0), 0.28, np.log(1.7)])
    n, d = np.array([1e6, 1e8]), np.array([1e9, 1e10])
    want = 1.7 + 400.0 / n**0.34 + 410.0 / d**0.28
    got = np.exp(law.predict_log(theta, np.log(np.c_[n, d])))
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_analytic_gradient_matches_finite_differences():
    rng = np.random.default_rng(0)
    law = LseLaw(2, True)
    logx = rng.normal(2.0, 1.0, (40, 2))
    logy = rng.normal(0.0, 0.5, 40)
    w = rng.uniform(0.5, 2.0, 40)
    thetas = rng.normal(0.5, 0.5, (5, 5))
    f_b, g_b = batch_objective_and_grad(law, thetas, logx, logy, w)
    for th, fb, gb in zip(thetas, f_b, g_b):
        f, g = objective_and_grad(th, law, logx, logy, w)
        num = approx_fprime(th, lambda t: objective_and_grad(t, law, logx, logy, w)[0], 1e-7)
        np.testing.assert_allclose(g, num, rtol=1e-4, atol=1e-9)
        np.testing.assert_allclose([fb, *gb], [f, *g], rtol=1e-10, atol=1e-15)
    np.testing.assert_allclose(objective(law, thetas, logx, logy, w), f_b, rtol=1e-12)


def test_centering_round_trips_and_keeps_predictions():
    law = LseLaw(2, True)
    theta = np.array([[3.0, 0.4, 5.0, 0.3, -0.2]])
    shift = np.array([10.0, 12.0])
    logx = np.array([[9.0, 11.0], [12.0, 14.0]])
    np.testing.assert_allclose(uncenter(law, center(law, theta, shift), shift), theta)
    np.testing.assert_allclose(law.predict_log(center(law, theta, shift), logx - shift), law.predict_log(theta, logx))


def test_batched_lbfgs_matches_scipy_on_every_start():
    rng = np.random.default_rng(1)
    law = LseLaw(1, True)
    x = np.logspace(3, 7, 10)
    logy = np.log(0.5 + 700 * x**-0.4) + rng.normal(0, 0.01, 10)
    logx = np.log(x)[:, None] - np.log(x).mean()
    _theta, f, _, conv = batched_lbfgs(law, center(law, law.start_grid(), np.log(x).mean()), logx, logy)
    best = fit_multistart(law, np.log(x)[:, None], logy)
    assert conv.mean() > 0.9
    assert f.min() <= best.objective * (1 + 1e-3)  # the batch finds what the polished fit finds
    assert best.converged and best.n_at_optimum >= 10
