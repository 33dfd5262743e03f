"""A flat curve is not a law: the plain transformer's force error in the CPU seed study (the zero-force
baseline, 776.5–777.5 meV/Å from 2·10³ to 3.6·10⁵ parameters) made L = E + α·N^−β the chosen form with
β ≈ 1.99 and quoted intervals that sat on their estimates. Every axis fit now applies the same interval
checks as the compute frontier, so such a fit is flagged, never printed as a law."""

import numpy as np

from engine.fit.powerlaw import fit_axis

N = np.array([2026.0, 5706.0, 30762.0, 112714.0, 357706.0])
FORCES_MEV_PER_A = np.array([777.454147, 776.769095, 776.661343, 776.521631, 776.845068])


def test_plateau_at_the_baseline_is_flagged_whatever_form_is_chosen():
    ax = fit_axis(N, FORCES_MEV_PER_A, variable="n_params", metric="val_forces_mae_mev_per_a", n_boot=200)
    assert ax.best is not None
    assert ax.flags, "a flat curve must not be reported as a trusted law"
    for fit in ax.fits.values():
        assert not fit.trusted
        # a parameter whose interval is not quoted is named with the reason, in the fit's own flags
        for k, why in fit.interval_unreliable.items():
            assert f"interval not reliable for {k}: {why}" in fit.flags


def test_a_clean_power_law_keeps_its_intervals():
    rng = np.random.default_rng(0)
    x = np.repeat(np.geomspace(1e3, 1e6, 5), 2)
    y = 40.0 * x**-0.2 * np.exp(rng.normal(0.0, 0.02, x.size))
    ax = fit_axis(x, y, variable="n_params", metric="val_loss", n_boot=200)
    power = ax.fits["power"]
    assert power.interval_unreliable == {} and power.not_identified == {}
    lo, hi = power.ci95["beta"]
    assert lo < power.params["beta"] < hi and 0.15 < power.params["beta"] < 0.25
