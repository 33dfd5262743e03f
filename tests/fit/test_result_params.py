"""Reported parameters from log-space θ: a coefficient past float range is inf, not an OverflowError."""

import math

import numpy as np

from engine.fit.result import params_from_theta


def test_flat_curve_coefficient_past_float_range_is_inf_not_a_crash():
    # a frontier fit on a flat curve (the plain transformer's) can drive log α past 709
    params = params_from_theta("power", np.array([1.0e3, -0.4]))
    assert params["alpha"] == math.inf and params["beta"] == -0.4
    assert params_from_theta("power", np.array([math.log(2.0), 0.3]))["alpha"] == 2.0
