"""Choosing between L = α·X^−β and L = E + α·X^−β by leave-one-out prediction error.

Each scale point is left out in turn, the form is refit on the rest (warm-started from the full
fit's optima) and predicts the left-out point; the score is the RMS of log L̂ − log L. Unlike the
in-sample fit, this does not reward the extra parameter E for free.
"""

from __future__ import annotations

import numpy as np

from engine.fit.bootstrap import average_by_group, group_runs, point_weights
from engine.fit.multistart import refit_many
from engine.fit.result import LawFit

TIE_RTOL = 1e-3  # the floor E must lower the leave-one-out error by more than this fraction


def loo_rmse_log(fit: LawFit, x: np.ndarray, y: np.ndarray) -> float | None:
    """Leave-one-point-out RMS log error of ``fit``'s form; None when too few points remain."""
    shape = fit.shape
    points, inverse = group_runs(np.asarray(x, dtype=float).reshape(len(y), shape.n_terms))
    G = len(points)
    if shape.n_params + 1 > G - 1:
        return None
    logx = np.log(points)
    logy, draws = average_by_group(np.log(y), inverse, G, np.ones((1, len(y))))
    logy = np.repeat(logy, G, axis=0)  # (G, G): one data set per left-out point
    weights = (1.0 - np.eye(G)) * point_weights(draws)  # points weighted by runs, as in the full fit
    # every left-out point counts: scoring only the refits that met the convergence test would let a form
    # whose hard cases fail look better than it predicts (G refits are cheap, so allow more iterations)
    theta, _ok = refit_many(shape, logx, logy, weights, np.array([fit.theta]), maxiter=1000, delta=fit.huber_delta)
    pred = shape.predict_log(theta, logx)  # (G, G)
    err = np.diag(pred) - logy[0]
    return float(np.sqrt(np.mean(err**2))) if np.all(np.isfinite(err)) else None


def choose_form(fits: dict[str, LawFit], x: np.ndarray, y: np.ndarray) -> tuple[dict, str | None, str]:
    """(LOO RMSE per form, chosen form, one sentence stating the choice and why)."""
    loo = {form: loo_rmse_log(fit, x, y) for form, fit in fits.items()}
    scored = {f: v for f, v in loo.items() if v is not None}
    if not fits:
        return loo, None, "no form could be fitted"
    if not scored:
        form = "power" if "power" in fits else next(iter(fits))
        return loo, form, f"{fits[form].formula} chosen by default: too few points for leave-one-out"
    form = min(scored, key=scored.get)
    if form != "power" and "power" in scored and scored[form] >= scored["power"] * (1 - TIE_RTOL):
        form = "power"  # a tie (E → 0 makes the forms equal): keep the simpler, seed-paper form
    others = [f"{v:.4g} for {fits[f].formula}" for f, v in scored.items() if f != form]
    missing = [fits[f].formula for f in fits if f not in scored]
    why = f"leave-one-out RMSE of log L {scored[form]:.4g}"
    tie = len(scored) > 1 and max(scored.values()) <= min(scored.values()) * (1 + TIE_RTOL)
    if others:
        why += " vs " + ", ".join(others)
    if missing:
        why += f" ({', '.join(missing)}: too few points for leave-one-out)"
    if tie:
        why += " (a tie: the simpler form is kept)"
    return loo, form, f"{fits[form].formula} chosen: {why}"
