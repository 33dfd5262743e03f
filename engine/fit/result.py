"""The dataclass every fit returns: parameters, 95 % intervals, method, size and goodness of fit."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from engine.fit.shape import LseLaw
from engine.fit.trust import prediction_interval


class FitUnavailable(Exception):  # noqa: N818 - reads as "fit unavailable: <why>" in reports
    """Not enough data for a fit; the message says why (reports print "not available: <why>")."""


# name → (law shape, formula, parameter names in θ order as reported)
LAWS: dict[str, tuple[LseLaw, str]] = {
    "power": (LseLaw(1, False), "L = α·X^−β"),
    "offset": (LseLaw(1, True), "L = E + α·X^−β"),
    "joint": (LseLaw(2, True), "L = E + A/N^a + B/D^b"),
}


_LOG_FLOAT_MAX = math.log(np.finfo(float).max)


def _exp(log_value: float) -> float:
    """exp on the linear scale; inf (not an OverflowError) past float range, e.g. the coefficient of a
    flat curve's fit whose exponent ran negative: the trust checks then flag it as not identified."""
    return math.exp(log_value) if log_value < _LOG_FLOAT_MAX else math.inf


def params_from_theta(law: str, theta: np.ndarray) -> dict[str, float]:
    """Reported parameters (linear scale) from log-space θ = [log coef, exponent, …, log E]."""
    t = np.asarray(theta, dtype=float)
    if law == "power":
        return {"alpha": _exp(t[0]), "beta": float(t[1])}
    if law == "offset":
        return {"alpha": _exp(t[0]), "beta": float(t[1]), "E": _exp(t[2])}
    if law == "joint":
        a, b = float(t[1]), float(t[3])
        out = {"E": _exp(t[4]), "A": _exp(t[0]), "a": a, "B": _exp(t[2]), "b": b}
        # Hoffmann et al. 2022 eq. (4): N_opt ∝ C^(b/(a+b)), D_opt ∝ C^(a/(a+b))
        s = a + b
        out["x_n_opt"] = b / s if s > 0 else float("nan")
        out["y_d_opt"] = a / s if s > 0 else float("nan")
        return out
    raise ValueError(f"unknown law {law!r}")


@dataclass
class LawFit:
    """One fitted law. ``params``/``ci95`` are on the linear scale (α, E, A, B) and as-is (exponents)."""

    law: str  # power | offset | joint
    formula: str
    variables: list[str]  # input column names, e.g. ["n_params"] or ["n_params", "train_size"]
    params: dict[str, float]
    ci95: dict[str, list[float]]
    method: str
    n_points: int  # distinct scale points fitted (seeds averaged)
    n_runs: int  # runs behind them (the bootstrap resamples these)
    rmse_log: float  # RMS of log L̂ − log L over the fitted points
    r2_log: float  # 1 − SS_res/SS_tot in log space
    objective: float  # summed Huber loss at the optimum
    n_grid: int
    n_starts: int
    n_converged: int
    n_at_optimum: int
    n_boot: int
    n_boot_ok: int
    seed: int
    theta: list[float]  # log-space parameters [log coef, exponent, …, log E]
    converged: bool = True  # the reported optimum met the convergence test
    not_identified: dict[str, str] = field(default_factory=dict)  # parameter → why the runs do not pin it
    interval_unreliable: dict[str, str] = field(default_factory=dict)  # parameter → why its interval is not quoted
    flags: list[str] = field(default_factory=list)  # one sentence per reason not to trust this fit
    scatter_log: float = float("nan")  # σ of one run's log L around the law (seeds, else residuals)
    scatter_dof: int = 0
    scatter_source: str = "residuals"  # seeds | residuals
    huber_delta: float = 1e-3  # the Huber δ of the fit (log units); refits of its data use it too
    boot_theta: np.ndarray = field(default=None, repr=False)  # (B, P), not serialized

    @property
    def trusted(self) -> bool:
        """Converged, every parameter identified by the runs, every interval reliable."""
        return not self.flags

    @property
    def shape(self) -> LseLaw:
        return LAWS[self.law][0]

    def predict(self, x: np.ndarray) -> np.ndarray:
        """L̂ at inputs x: (n,) for one variable or (n, K)."""
        logx = np.log(np.asarray(x, dtype=float)).reshape(-1, self.shape.n_terms)
        return np.exp(self.shape.predict_log(np.asarray(self.theta), logx))

    def predict_interval(self, x: np.ndarray, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
        """Pointwise bootstrap percentile interval of L̂ at x."""
        logx = np.log(np.asarray(x, dtype=float)).reshape(-1, self.shape.n_terms)
        if self.boot_theta is None or len(self.boot_theta) == 0:
            p = self.predict(x)
            return p, p
        logp = self.shape.predict_log(self.boot_theta, logx)  # (B, n)
        q = 100 * (1 - level) / 2
        return np.exp(np.percentile(logp, q, axis=0)), np.exp(np.percentile(logp, 100 - q, axis=0))

    def prediction_interval(self, x: np.ndarray, n_obs: int = 1, level: float = 0.95):
        """(lower, upper) of a new measurement (mean of ``n_obs`` runs) at x: curve plus scatter."""
        logx = np.log(np.asarray(x, dtype=float)).reshape(-1, self.shape.n_terms)
        mid = self.shape.predict_log(np.asarray(self.theta), logx)
        boot = None
        if self.boot_theta is not None and len(self.boot_theta) > 1:
            boot = self.shape.predict_log(self.boot_theta, logx)
        return prediction_interval(mid, boot, self.scatter_log, self.scatter_dof, self.scatter_source, n_obs, level)

    def to_dict(self) -> dict:
        out = {k: v for k, v in self.__dict__.items() if k != "boot_theta"}
        out["trusted"] = self.trusted
        return _jsonable(out)


def _jsonable(v):
    """Plain JSON types (NaN/inf → None)."""
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, np.ndarray):
        return _jsonable(v.tolist())
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        f = float(v)
        return f if math.isfinite(f) else None
    return v


jsonable = _jsonable
