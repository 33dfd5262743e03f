"""Graded verdicts on constructed fits: law, trend (with what is missing), plateau, at baseline."""

import numpy as np
import pytest

from engine.fit.extrapolate import check_verdict, extrapolation_check, frontier_extrapolation_check
from engine.fit.verdict import (
    AT_BASELINE,
    DEFINITIONS,
    LAW,
    ORDER,
    PLATEAU,
    TREND,
    grade,
    grade_joint,
    last_decade_slope,
)

X = np.repeat(np.geomspace(1e3, 1e6, 6), 2)  # 6 sizes over 3 decades, 2 seeds


def clean_fit(beta: float = 0.3, r2: float = 0.99, **extra) -> dict:
    return {"params": {"alpha": 40.0, "beta": beta},
            "ci95": {"alpha": [30.0, 50.0], "beta": [beta - 0.05, beta + 0.05]},
            "r2_log": r2, "rmse_log": 0.02, "converged": True, "not_identified": {}, "interval_unreliable": {},
            "flags": [], **extra}


PASSED = {"verdict": "passed", "residual_dof": 3, "inside": True, "fit_flags": []}


def power_runs(beta: float = 0.3, sd: float = 0.02, seed: int = 0, x: np.ndarray = X) -> np.ndarray:
    return 40.0 * x**-beta * np.exp(np.random.default_rng(seed).normal(0, sd, x.size))


def test_every_label_is_defined_once():
    assert set(DEFINITIONS) == set(ORDER) == {LAW, TREND, PLATEAU, AT_BASELINE}
    assert "log-R² ≥ 0.9" in DEFINITIONS[LAW] and "≥ 2 residual degrees of freedom" in DEFINITIONS[LAW]


def test_a_clean_law_with_a_passing_check_is_a_law():
    v = grade(X, power_runs(), clean_fit(), PASSED, {"predict zero": 100.0}, variable="N")
    assert v["label"] == LAW and v["reasons"] == []
    assert v["estimate"]["beta"]["value"] == pytest.approx(0.3) and v["n_points"] == 6 and v["min_seeds"] == 2
    assert v["decades"] == pytest.approx(3.0) and v["check"] == "passed"


@pytest.mark.parametrize(("change", "missing"), [
    ({"r2": 0.78}, "log-R² 0.78 (needs ≥ 0.9)"),
    ({"not_identified": {"alpha": "95 % interval spans a factor 300"}}, "alpha not identified"),
    ({"interval_unreliable": {"beta": "one-sided"}}, "the interval of beta is not reliable"),
    ({"converged": False}, "the optimum did not converge"),
])
def test_a_fit_short_of_a_law_is_a_trend_that_says_what_is_missing(change, missing):
    r2 = change.pop("r2", 0.99)
    v = grade(X, power_runs(), clean_fit(r2=r2, **change), PASSED)
    assert v["label"] == TREND and any(m.startswith(missing) for m in v["reasons"]), v["reasons"]


def test_support_and_extrapolation_requirements():
    # 4 points, one seed each: neither 5 points nor 2 seeds per point
    x4 = np.geomspace(1e3, 1e6, 4)
    v = grade(x4, power_runs(x=x4), clean_fit(), PASSED)
    assert v["label"] == TREND and "4 points with 1 seed at some point" in v["reasons"][0]
    # 4 points with 2 seeds each is enough support
    x42 = np.repeat(x4, 2)
    assert grade(x42, power_runs(x=x42), clean_fit(), PASSED)["label"] == LAW
    # less than a decade
    xs = np.repeat(np.geomspace(1e3, 5e3, 6), 2)
    v = grade(xs, power_runs(x=xs), clean_fit(), PASSED)
    assert v["label"] == TREND and any("spans 0.7 decades" in r for r in v["reasons"])
    # checks that do not make a law
    for check, words in [({"verdict": "not a test", "residual_dof": 1}, "not a test (1 residual degree of freedom"),
                         ({"verdict": "missed", "residual_dof": 3}, "missed"),
                         ({"verdict": "refit flagged", "residual_dof": 3, "fit_flags": ["beta not identified"]},
                          "refit is flagged (beta not identified)"),
                         ({"not_available": "without the largest N: too few points"}, "no extrapolation check"),
                         (None, "no extrapolation check")]:
        v = grade(X, power_runs(), clean_fit(), check)
        assert v["label"] == TREND and any(words in r for r in v["reasons"]), (check, v["reasons"])


def test_a_flat_curve_is_a_plateau_whatever_its_fit_says():
    # the plain transformer's force error in the seed study: a fit "passes" on a flat curve
    n = np.array([2026.0, 5706.0, 30762.0, 112714.0, 357706.0])
    forces = np.array([777.454147, 776.769095, 776.661343, 776.521631, 776.845068])
    v = grade(n, forces, clean_fit(beta=0.00044, r2=0.62), PASSED, variable="N")
    assert v["label"] == PLATEAU
    # two sizes in the last decade, no residual dof: the |slope| < 0.02 rule
    assert v["last_decade"]["ci95"] is None and "|slope| < 0.02" in v["reasons"][0]
    # with seeds, a slope whose interval holds zero is a plateau however steep its estimate
    x = np.repeat(np.geomspace(1e3, 1e6, 7), 2)
    y = np.where(x < 1e5, 40 * x**-0.3, 40 * 1e5**-0.3) * np.exp(np.random.default_rng(3).normal(0, 0.05, x.size))
    v = grade(x, y, clean_fit(), PASSED, variable="N")
    ld = v["last_decade"]
    assert abs(ld["slope"]) >= 0.02 and ld["ci95"][0] <= 0 <= ld["ci95"][1]
    assert v["label"] == PLATEAU and "holds zero" in v["reasons"][0]
    # … and at the predict-zero baseline, which comes first
    assert grade(n, forces, clean_fit(), PASSED, {"predict zero": 777.0, "predict mean": 900.0})["label"] == AT_BASELINE


def test_at_baseline_is_within_noise_not_merely_above():
    y = power_runs()
    best = np.exp(np.log(y[-2:]).mean())
    v = grade(X, y, clean_fit(), PASSED, {"predict zero": best * 1.01})  # 1 % better than predicting zero
    assert v["label"] == AT_BASELINE and v["baseline"]["name"] == "predict zero"
    assert grade(X, y, clean_fit(), PASSED, {"predict zero": best * 1.5})["label"] == LAW
    assert grade(X, y, clean_fit(), PASSED, {"bad": None, "nan": float("nan")})["label"] == LAW


def test_last_decade_slope_interval_and_fallback():
    x = np.repeat(np.geomspace(1e3, 1e6, 7), 3)
    ld = last_decade_slope(x, power_runs(0.3, 0.01, x=x))
    assert ld["from_x"] == pytest.approx(1e5) and ld["ci95"][1] < 0 and ld["slope"] == pytest.approx(-0.3, abs=0.05)
    two = last_decade_slope(np.array([1e3, 1e6]), np.array([2.0, 1.99]))  # no residual dof: |slope| rule
    assert two["ci95"] is None and abs(two["slope"]) < 0.02
    assert grade(np.array([1e3, 1e6]), np.array([2.0, 1.99]), None)["label"] == PLATEAU
    assert grade(np.array([1e3, 1e6]), np.array([2.0, 1.0]), None)["label"] == TREND


def test_joint_verdict():
    n, d = np.meshgrid(np.geomspace(1e4, 1e7, 4), np.geomspace(1e3, 1e6, 4))
    x = np.c_[n.ravel(), d.ravel()]
    y = 0.3 + 50 * x[:, 0] ** -0.35 + 20 * x[:, 1] ** -0.3
    fit = {"params": {"E": 0.3, "A": 50, "a": 0.35, "B": 20, "b": 0.3}, "ci95": {"a": [0.3, 0.4], "b": [0.25, 0.35]},
           "r2_log": 0.99, "rmse_log": 0.01, "converged": True, "not_identified": {}, "interval_unreliable": {}}
    assert grade_joint(x, y, fit, PASSED)["label"] == LAW
    v = grade_joint(x, y, fit, {"not_available": "≥ 3 distinct values"})
    assert v["label"] == TREND and set(v["estimate"]) == {"a", "b"}
    assert grade_joint(x, y, fit, PASSED, {"predict zero": float(y.min()) * 1.01})["label"] == AT_BASELINE


def test_extrapolation_check_with_one_residual_dof_is_not_a_test():
    assert check_verdict(1, True, []) == "not a test" and check_verdict(0, False, []) == "not a test"
    assert check_verdict(2, False, []) == "missed" and check_verdict(2, True, ["x"]) == "refit flagged"
    assert check_verdict(2, True, []) == "passed"
    # 4 sizes: the power-law refit on 3 points has 1 residual dof
    x = np.repeat(np.geomspace(1e3, 1e6, 4), 2)
    ex = extrapolation_check("power", x, power_runs(x=x), "n_params", n_boot=20)
    assert ex["residual_dof"] == 1 and ex["verdict"] == "not a test"
    x = np.repeat(np.geomspace(1e3, 1e6, 6), 2)
    ex = extrapolation_check("power", x, power_runs(x=x), "n_params", n_boot=50)
    assert ex["residual_dof"] == 3 and ex["verdict"] in ("passed", "refit flagged")


def test_refit_flags_pass_through_to_the_axis_fit():
    from engine.fit.powerlaw import AxisFit

    ex = {"inside": True, "verdict": "refit flagged", "residual_dof": 3,
          "fit_flags": ["beta not identified by these runs"]}
    ax = AxisFit("n_params", "val_loss", {}, {}, {}, None, "", extrapolation=ex)
    assert ax.flags == ["extrapolation refit without the largest n_params: beta not identified by these runs"]


def test_frontier_extrapolation_check():
    c = np.geomspace(1e9, 1e13, 9)
    loss = 50 * c**-0.1 * np.exp(np.random.default_rng(0).normal(0, 0.005, c.size))
    size = np.array([0, 0, 1, 1, 2, 2, 3, 3, 3])
    ex = frontier_extrapolation_check(c, loss, size)
    assert ex["n_points_held_out"] == 3 and ex["n_points_fitted"] == 6 and ex["residual_dof"] == 4
    assert ex["verdict"] == "passed" and ex["pi95"][0] < ex["observed"] < ex["pi95"][1]
    bent = loss.copy()
    bent[-3:] *= 1.5  # the largest size falls off the law
    assert frontier_extrapolation_check(c, bent, size)["verdict"] == "missed"
    assert "not_available" in frontier_extrapolation_check(c[:4], loss[:4], np.array([0, 0, 1, 1]))


def test_a_well_sampled_compute_frontier_reads_law():
    from engine.fit.frontier import Curve, fit_frontier

    # L(N, S) = 200·N^−0.6 + 300·S^−0.9, C = 6·N·S: 12 sizes over 3 decades × 2 seeds, full learning curves
    rng = np.random.default_rng(0)
    curves = []
    for n in np.geomspace(1e3, 1e6, 12):
        for s in range(2):
            seen = np.geomspace(10, 1e6, 15)
            loss = (200 * n**-0.6 + 300 * seen**-0.9) * np.exp(rng.normal(0, 0.03) + rng.normal(0, 0.01, seen.size))
            curves.append(Curve(f"n{n:.0f}s{s}", n, 1e3, 6 * n * seen, loss, epoch=seen / 1e3))
    fr = fit_frontier(curves, n_boot=100)
    front = fr["frontier"]
    ex = frontier_extrapolation_check(front["flops"], front["loss"], np.asarray(front["size"]))
    assert ex["verdict"] == "passed" and ex["residual_dof"] >= 2
    v = grade(front["flops"], front["loss"], fr["law"], ex, {"predict zero": 1e3}, n_seeds=front["n_seeds"],
              variable="C")
    assert v["label"] == LAW, v["reasons"]
    assert v["estimate"]["beta"]["value"] == pytest.approx(0.36, abs=0.03)
