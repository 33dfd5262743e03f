"""PNG plots of a report: log-log data with fitted law and 95 % band, the frontier, IsoFLOP profiles.

Axes carry units, scales are logarithmic, every plot has a legend. Matplotlib's Agg backend only.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import FuncFormatter, NullFormatter

from engine import metrics as M
from engine.fit.frontier import Curve, frontier_band
from engine.fit.powerlaw import AxisFit

METRIC_LABELS = {
    M.VAL_LOSS: "validation loss (weighted total, dimensionless)",
    f"val_{M.ENERGY_MAE}": "validation energy MAE (meV/atom)",
    f"val_{M.FORCES_MAE}": "validation force MAE (meV/Å)",
    f"val_{M.FORCES_L2MAE}": "validation force L2-MAE (meV/Å)",
    f"val_{M.STRESS_MAE}": "validation stress MAE (meV/Å³)",
}
VARIABLE_LABELS = {
    M.N_PARAMS: "model size N (trainable parameters)",
    M.TRAIN_SIZE: "training-set size D (structures)",
    M.FLOPS_CUM: "training compute C (FLOPs counted by the engine)",
}
COLORS = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown"]


def metric_label(metric: str) -> str:
    return METRIC_LABELS.get(metric, metric)


def _finish(fig, ax, path: Path, title: str, outside: bool = False, y_focus: list[float] | None = None) -> Path:
    """Log axes, legible ticks, legend, save. ``y_focus``: values the y-range must show (data, fitted line);
    a 95 % band wider than that is clipped rather than allowed to squash the data into a sliver."""
    ax.set_xscale("log")
    ax.set_yscale("log")
    if y_focus:
        ys = np.asarray([v for v in y_focus if np.isfinite(v) and v > 0])
        if ys.size:
            ax.set_ylim(ys.min() / 1.6, ys.max() * 1.6)
    plain = FuncFormatter(lambda v, _pos: f"{v:g}")  # losses span < 2 decades: 3, 4, 6 read better than 3×10⁰
    ax.yaxis.set_major_formatter(plain)
    lo, hi = ax.get_ylim()
    # minor labels only while they cannot collide (a short range); otherwise decades alone
    ax.yaxis.set_minor_formatter(plain if hi / lo < 30 else NullFormatter())
    ax.set_title(title, fontsize=11)
    ax.grid(True, which="both", alpha=0.25)
    if outside:  # several sweeps: the legend is long, keep it off the data
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
    else:
        ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _geo_means(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ux = np.unique(x)
    return ux, np.array([np.exp(np.mean(np.log(y[x == u]))) for u in ux])


def plot_axis(
    series: list[tuple[str, AxisFit | None, np.ndarray, np.ndarray]],
    metric: str,
    variable: str,
    path: Path,
    baselines: dict[str, float] | None = None,
) -> Path:
    """Runs, seed means, the chosen law with its 95 % band (and the other form dashed), per sweep."""
    fig, ax = plt.subplots(figsize=(6.4, 4.6) if len(series) == 1 else (10.0, 4.8))
    y_focus: list[float] = []
    for i, (name, fit, x, y) in enumerate(series):
        c = COLORS[i % len(COLORS)]
        tag = f"{name}: " if len(series) > 1 else ""
        y_focus.extend(np.asarray(y, dtype=float).tolist())
        ax.scatter(x, y, s=12, color=c, alpha=0.35, label=f"{tag}runs")
        ux, uy = _geo_means(x, y)
        ax.scatter(ux, uy, s=36, color=c, edgecolor="k", zorder=3, label=f"{tag}mean over seeds")
        if fit is None or fit.best is None:
            continue
        grid = np.geomspace(x.min() / 1.5, x.max() * 3, 200)
        best = fit.best
        lo, hi = best.predict_interval(grid)
        ax.fill_between(grid, lo, hi, color=c, alpha=0.18, label=f"{tag}95 % band")
        p = best.params
        y_focus.extend(np.asarray(best.predict(grid), dtype=float).tolist())
        ax.plot(grid, best.predict(grid), color=c, lw=2,
                label=f"{tag}{best.formula}, β={p['beta']:.3g}")
        for form, other in fit.fits.items():
            if form != fit.chosen:
                ax.plot(grid, other.predict(grid), color=c, lw=1, ls="--", label=f"{tag}{other.formula} (not chosen)")
        ex = fit.extrapolation or {}
        if "predicted" in ex:
            lo_e, hi_e = ex["ci95"]
            y_focus.append(float(ex["predicted"]))
            ax.errorbar([ex["held_out"]], [ex["predicted"]], yerr=[[ex["predicted"] - lo_e], [hi_e - ex["predicted"]]],
                        fmt="D", color="k", ms=5, capsize=3, zorder=4,
                        label=f"{tag}extrapolated without largest (95 % CI)")
    for j, (name, value) in enumerate(sorted((baselines or {}).items())):
        ax.axhline(value, color="0.4", ls=":", lw=1 + 0.3 * j, label=name)
    ax.set_xlabel(VARIABLE_LABELS.get(variable, variable))
    ax.set_ylabel(metric_label(metric))
    y_focus.extend(baselines.values() if baselines else [])
    return _finish(fig, ax, path, f"{metric} vs {variable}", outside=len(series) > 1, y_focus=y_focus)


def plot_frontier(series: list[tuple[str, list[Curve], dict]], metric: str, path: Path) -> Path:
    """Every run's curve (thin), the lower envelope (points) and L(C) = α·C^−β with its 95 % band."""
    fig, ax = plt.subplots(figsize=(6.4, 4.6) if len(series) == 1 else (10.0, 4.8))
    for i, (name, curves, fr) in enumerate(series):
        c = COLORS[i % len(COLORS)]
        tag = f"{name}: " if len(series) > 1 else ""
        sizes = sorted({cv.n_params for cv in curves})
        cmap = plt.get_cmap("viridis")
        for k, cv in enumerate(curves):
            f, y, _ = cv.points()
            shade = cmap(sizes.index(cv.n_params) / max(1, len(sizes) - 1)) if len(series) == 1 else c
            ax.plot(f, y, color=shade, lw=0.8, alpha=0.6,
                    label=(f"{tag}run curves" + ("" if tag else f" (colour: N {min(sizes):.3g}→{max(sizes):.3g})"))
                    if k == 0 else None)
        front = fr["frontier"]
        ax.scatter(front["flops"], front["loss"], s=16, color="k" if len(series) == 1 else c, zorder=3,
                   label=f"{tag}frontier (lower envelope)")
        law = fr.get("law", {})
        if "theta" in law:
            grid = np.geomspace(min(front["flops"]) / 1.5, max(front["flops"]) * 3, 200)
            mid, lo, hi = frontier_band(law, grid)
            ax.fill_between(grid, lo, hi, color="tab:red" if len(series) == 1 else c, alpha=0.18,
                            label=f"{tag}95 % band")
            ax.plot(grid, mid, color="tab:red" if len(series) == 1 else c, lw=2,
                    label=f"{tag}L = α·C^−β, β={law['params']['beta']:.3g}")
    ax.set_xlabel(VARIABLE_LABELS[M.FLOPS_CUM])
    ax.set_ylabel(metric_label(metric))
    return _finish(fig, ax, path, f"compute frontier: {metric}", outside=len(series) > 1)


def plot_isoflop(profiles: list[dict], metric: str, path: Path) -> Path:
    """IsoFLOP profiles: loss vs N at fixed budgets, the parabola in log N, its minimum."""
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    cmap = plt.get_cmap("plasma")
    for i, p in enumerate(profiles):
        c = cmap(i / max(1, len(profiles) - 1) * 0.85)
        n, y = np.asarray(p["n_params"], dtype=float), np.asarray(p["loss"], dtype=float)
        if len(n) == 0:
            continue
        ax.scatter(n, y, color=c, s=20, label=f"C = {p['budget_flops']:.2e} FLOPs")
        if "parabola_log" in p:
            c2, c1, c0 = p["parabola_log"]
            u = np.linspace(np.log(n.min()), np.log(n.max()), 100)
            ax.plot(np.exp(u), np.exp(c0 + c1 * u + c2 * u**2), color=c, lw=1.2)
        if "n_opt" in p:
            ax.scatter([p["n_opt"]], [p["loss_opt"]], marker="*", s=140, color=c, edgecolor="k", zorder=4)
    ax.scatter([], [], marker="*", s=100, color="w", edgecolor="k", label="parabola minimum (N_opt)")
    ax.set_xlabel(VARIABLE_LABELS[M.N_PARAMS])
    ax.set_ylabel(metric_label(metric))
    return _finish(fig, ax, path, f"IsoFLOP profiles: {metric}")
