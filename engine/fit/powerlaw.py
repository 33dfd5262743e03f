"""Per-axis scaling laws L = α·X^−β and L = E + α·X^−β, the form chosen by leave-one-out error.

The seed study (arXiv 2509.21811) fits L = α·N^−β; the floor E is the irreducible loss of
Hoffmann et al. 2022 (arXiv 2203.15556, eq. 2). Each form is fitted by :func:`engine.fit.fitlaw.fit_law`;
the chosen one is checked by extrapolation (:mod:`engine.fit.extrapolate`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from engine.fit.extrapolate import extrapolation_check
from engine.fit.fitlaw import DEFAULT_N_BOOT, fit_law
from engine.fit.result import FitUnavailable, LawFit, jsonable
from engine.fit.select import choose_form

__all__ = ["DEFAULT_N_BOOT", "AxisFit", "fit_axis", "fit_law"]


@dataclass
class AxisFit:
    """Both per-axis forms for one metric against one scale variable, and which one is chosen."""

    variable: str
    metric: str
    fits: dict[str, LawFit]
    unavailable: dict[str, str]  # form → why it could not be fitted
    loo_rmse_log: dict[str, float | None]
    chosen: str | None
    choice: str  # one sentence: which form and why
    extrapolation: dict | None = None
    extra: dict = field(default_factory=dict)

    @property
    def best(self) -> LawFit | None:
        return self.fits.get(self.chosen) if self.chosen else None

    @property
    def flags(self) -> list[str]:
        """Reasons not to trust the chosen law: its own flags, a missed extrapolation, then the flags of the
        extrapolation's refit (without the largest scale), which pass through."""
        out = list(self.best.flags) if self.best else []
        ex = self.extrapolation or {}
        if ex.get("inside") is False:
            out.append("extrapolation check missed: the held-out largest scale lies outside the 95 % prediction "
                       "interval of the refit")
        out += [f"extrapolation refit without the largest {self.variable}: {f}" for f in ex.get("fit_flags") or []]
        return out

    def to_dict(self) -> dict:
        return jsonable(
            {
                "variable": self.variable,
                "metric": self.metric,
                "fits": {k: f.to_dict() for k, f in self.fits.items()},
                "unavailable": self.unavailable,
                "loo_rmse_log": self.loo_rmse_log,
                "chosen": self.chosen,
                "choice": self.choice,
                "extrapolation": self.extrapolation,
                "flags": self.flags,
                "trusted": not self.flags if self.best else False,
                **self.extra,
            }
        )


def fit_axis(
    x: np.ndarray,
    y: np.ndarray,
    variable: str = "N",
    metric: str = "loss",
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
    top_k: int | None = None,
    extrapolate: bool = True,
    maxiter: int = 500,
) -> AxisFit:
    """Fit L = α·X^−β and L = E + α·X^−β, choose by leave-one-out error, check extrapolation."""
    fits: dict[str, LawFit] = {}
    unavailable: dict[str, str] = {}
    for form in ("power", "offset"):
        try:
            fits[form] = fit_law(form, x, y, [variable], n_boot=n_boot, seed=seed, top_k=top_k, maxiter=maxiter)
        except FitUnavailable as exc:
            unavailable[form] = str(exc)
    loo, chosen, choice = choose_form(fits, np.asarray(x, dtype=float), np.asarray(y, dtype=float))
    out = AxisFit(variable, metric, fits, unavailable, loo, chosen, choice)
    if extrapolate and chosen:
        out.extrapolation = extrapolation_check(chosen, x, y, variable, n_boot=n_boot, seed=seed, top_k=top_k)
    return out
