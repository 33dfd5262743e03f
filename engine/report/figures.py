"""PNG plots of a report: log-log data with fitted law and 95 % band, the frontier, IsoFLOP profiles.

Axes carry units, scales are logarithmic, every plot has a legend, below its panels and never over their data
(:func:`save_with_legend` checks and records where it sits). Matplotlib's Agg backend only.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import FuncFormatter, NullFormatter
from matplotlib.transforms import Bbox

from engine import metrics as M
from engine.fit.frontier import Curve, frontier_band
from engine.fit.powerlaw import AxisFit
from engine.fit.verdict import LAW

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


def _finish(fig, ax, path: Path, title: str, y_focus: list[float] | None = None) -> list[str]:
    """Log axes, legible ticks, legend below the axes, save; returns the legend's labels (fits.json records them).

    ``y_focus``: values the y-range must show (data, fitted line); a 95 % band wider than that is clipped
    rather than allowed to squash the data into a sliver."""
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
    x_lo, x_hi = ax.get_xlim()  # x minor labels at 2 and 5 only, and only over < 2 decades: 3×10⁴ and 4×10⁴ collide
    ax.xaxis.set_minor_formatter(FuncFormatter(_minor_2_5) if x_hi / x_lo < 100 else NullFormatter())
    ax.set_title(title, fontsize=11)
    ax.grid(True, which="both", alpha=0.25)
    handles, labels = ax.get_legend_handles_labels()
    return save_with_legend(fig, path, handles, labels)


def _minor_2_5(v: float, _pos=None) -> str:
    """A log axis' minor tick label at 2·10^k and 5·10^k, none elsewhere."""
    if not (np.isfinite(v) and v > 0):
        return ""
    e = int(np.floor(np.log10(v) + 1e-9))
    m = round(v / 10.0**e)
    return f"${m}\\times10^{{{e}}}$" if m in (2, 5) else ""


# file name → where its legend sits (legend_layout), filled by save_with_legend; build.make_figures moves
# each entry into fits.json's "legend_layout"
LEGEND_LAYOUTS: dict[str, dict] = {}


def legend_layout(fig, legend) -> dict:
    """Where a drawn legend sits, in display coordinates: ``overlaps_data`` when its box meets the data area
    (the axes rectangle) of any visible axes, ``inside_figure`` when it lies within the figure."""
    renderer = fig.canvas.get_renderer()
    box = legend.get_window_extent(renderer)
    hits = []
    for i, ax in enumerate(fig.axes):
        inter = Bbox.intersection(box, ax.get_window_extent(renderer)) if ax.get_visible() else None
        if inter is not None and inter.width > 0 and inter.height > 0:
            hits.append(i)
    fb, tol = fig.bbox, 0.5  # half a pixel of rounding
    inside = (box.x0 >= fb.x0 - tol and box.y0 >= fb.y0 - tol and box.x1 <= fb.x1 + tol and box.y1 <= fb.y1 + tol)
    return {"entries": len(legend.get_texts()), "overlaps_data": bool(hits), "axes_overlapped": hits,
            "inside_figure": bool(inside)}


def save_with_legend(fig, path: Path, handles: list, labels: list[str], ncol: int = 2,
                     fontsize: float = 8) -> list[str]:
    """Put the legend below every panel, outside the data areas (constrained layout makes the room), with as
    many columns as fit the figure's width; save at 110 dpi, record :func:`legend_layout`; returns the labels."""
    fig.set_layout_engine("constrained")
    leg = None
    if labels:
        ncol = max(1, min(ncol, len(labels)))
        fig.set_figheight(fig.get_figheight() + 0.19 * -(-len(labels) // ncol))
        for cols in range(ncol, 0, -1):  # fewer columns until the legend fits the figure's width
            leg = fig.legend(handles, labels, loc="outside lower center", ncol=cols, fontsize=fontsize,
                             frameon=False)
            fig.canvas.draw()
            if leg.get_window_extent().width <= fig.bbox.width:
                break
            if cols == 1:  # one column still too wide: widen the figure to hold it
                fig.set_figwidth(leg.get_window_extent().width / fig.dpi + 0.3)
                fig.canvas.draw()
                break
            leg.remove()
        LEGEND_LAYOUTS[path.name] = legend_layout(fig, leg)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [t.get_text() for t in leg.get_texts()] if leg is not None else []


def _geo_means(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ux = np.unique(x)
    return ux, np.array([np.exp(np.mean(np.log(y[x == u]))) for u in ux])


def plot_axis(
    series: list[tuple[str, AxisFit | None, np.ndarray, np.ndarray]],
    metric: str,
    variable: str,
    path: Path,
    baselines: dict[str, float] | None = None,
    verdict: str | None = None,
) -> list[str]:
    """Runs, seed means, the chosen law with its 95 % band (and the other form dashed), per sweep; the law's
    legend entry carries the fit's ``verdict`` label (engine.fit.verdict)."""
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
        y_focus.extend(np.asarray(best.predict(grid), dtype=float).tolist())
        ax.plot(grid, best.predict(grid), color=c, lw=2, label=f"{tag}{best.formula}, {beta_label(best, verdict)}")
        for form, other in fit.fits.items():
            if form != fit.chosen:
                ax.plot(grid, other.predict(grid), color=c, lw=1, ls="--", label=f"{tag}{other.formula} (not chosen)")
        ex = fit.extrapolation or {}
        if "predicted" in ex:
            lo_e, hi_e = ex.get("pi95") or ex["ci95"]
            y_focus.append(float(ex["predicted"]))
            ax.errorbar([ex["held_out"]], [ex["predicted"]], yerr=[[ex["predicted"] - lo_e], [hi_e - ex["predicted"]]],
                        fmt="D", color="k", ms=5, capsize=3, zorder=4,
                        label=f"{tag}extrapolated without largest (95 % prediction interval)")
    y_focus.extend(draw_baselines(ax, baselines))
    ax.set_xlabel(VARIABLE_LABELS.get(variable, variable))
    ax.set_ylabel(metric_label(metric))
    return _finish(fig, ax, path, f"{metric} vs {variable}", y_focus=y_focus)


def _exponent_label(beta: float, not_identified: bool, flagged: bool, verdict: str | None,
                    converged: bool = True) -> str:
    if verdict:  # the fit's graded verdict: "law: β=0.43", "plateau: β≈0.001"
        if not_identified:
            return f"{verdict}: β not identified by these runs"
        return f"{verdict}: β={beta:.3g}" if verdict == LAW else f"{verdict}: β≈{beta:.3g}"
    if not_identified:
        return "β not identified by these runs"
    return f"β={beta:.3g}" + (" (not converged)" if not converged else " (flagged, not a law)" if flagged else "")


def beta_label(fit, verdict: str | None = None) -> str:
    """The exponent as the legend states it, led by the fit's ``verdict`` label; only a *law* prints "β=",
    the others "β≈" (a legend must not print as a law what the text refuses). Without a verdict: the value,
    marked when the fit is not converged or flagged, or that the runs do not identify it."""
    return _exponent_label(fit.params["beta"], "beta" in (fit.not_identified or {}), bool(fit.flags), verdict,
                           fit.converged)


def frontier_beta_label(law: dict, verdict: str | None = None) -> str:
    """:func:`beta_label` for a frontier law as fits.json holds it (a dict)."""
    return _exponent_label(law["params"]["beta"], "beta" in (law.get("not_identified") or {}), bool(law.get("flags")),
                           verdict)


def baseline_lines(baselines: dict[str, float] | None, metric: str) -> dict[str, float]:
    """Reference lines of ``metric``: parent-run metrics ``baseline_<name>_<metric>`` → {"<name>": value}."""
    out = {}
    for key, value in (baselines or {}).items():
        if key.startswith("baseline_") and key.endswith("_" + metric):
            out[key[len("baseline_"):-len(metric) - 1].replace("_", " ")] = float(value)
    return out


def draw_baselines(ax, lines: dict[str, float] | None) -> list[float]:
    """Dotted horizontal reference lines labelled "baseline: <name>"; returns their values (kept in view)."""
    vals = []
    for j, (name, value) in enumerate(sorted((lines or {}).items())):
        if np.isfinite(value) and value > 0:
            ax.axhline(value, color="0.4", ls=(0, (1, 1 + j)), lw=1.2, label=f"baseline: {name}")
            vals.append(value)
    return vals


def plot_frontier(series: list[tuple[str, list[Curve], dict]], metric: str, path: Path,
                  baselines: dict[str, float] | None = None, verdict: str | None = None) -> list[str]:
    """Every run's curve (thin), the lower envelope (points) and L(C) = α·C^−β with its 95 % band, its legend
    entry led by the frontier's ``verdict`` label."""
    fig, ax = plt.subplots(figsize=(6.4, 4.6) if len(series) == 1 else (10.0, 4.8))
    y_focus: list[float] = []
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
        y_focus.extend(float(v) for v in front["loss"])
        ax.scatter(front["flops"], front["loss"], s=16, color="k" if len(series) == 1 else c, zorder=3,
                   label=f"{tag}frontier (lower envelope)")
        law = fr.get("law", {})
        if "theta" in law:
            grid = np.geomspace(min(front["flops"]) / 1.5, max(front["flops"]) * 3, 200)
            mid, lo, hi = frontier_band(law, grid)
            if not law.get("interval_unreliable"):  # no band where the interval is flagged unreliable
                ax.fill_between(grid, lo, hi, color="tab:red" if len(series) == 1 else c, alpha=0.18,
                                label=f"{tag}95 % band")
            ax.plot(grid, mid, color="tab:red" if len(series) == 1 else c, lw=2,
                    label=f"{tag}L = α·C^−β, {frontier_beta_label(law, verdict)}")
            y_focus.extend(float(v) for v in mid)
    y_focus.extend(draw_baselines(ax, baselines))
    ax.set_xlabel(VARIABLE_LABELS[M.FLOPS_CUM])
    ax.set_ylabel(metric_label(metric))
    return _finish(fig, ax, path, f"compute frontier: {metric}", y_focus=y_focus)


def plot_hpo(trials: list[dict], rng: dict, best: dict[str, dict], path: Path) -> list[str]:
    """Final validation loss against peak LR, one colour per size, one marker per batch size; the searched
    range as vertical lines and each size's best trial as a star."""
    fig, ax = plt.subplots(figsize=(6.8, 4.6))
    presets = list(dict.fromkeys(str(t["preset"]) for t in trials))
    batches = sorted({t["batch_size"] for t in trials if np.isfinite(t["batch_size"])})
    markers = ["o", "s", "^", "v", "P", "X"]
    y_focus: list[float] = []
    for i, p in enumerate(presets):
        c = COLORS[i % len(COLORS)]
        mine = [t for t in trials if str(t["preset"]) == p and np.isfinite(t[M.VAL_LOSS])]
        for j, b in enumerate(batches):
            pts = [t for t in mine if t["batch_size"] == b]
            if pts:
                ax.scatter([t["peak_lr"] for t in pts], [t[M.VAL_LOSS] for t in pts], color=c,
                           marker=markers[j % len(markers)], s=30, label=f"{p}, batch {int(b)}")
                y_focus.extend(t[M.VAL_LOSS] for t in pts)
        bb = best.get(p, {})
        if "peak_lr" in bb:
            ax.scatter([bb["peak_lr"]], [bb[M.VAL_LOSS]], marker="*", s=200, color=c, edgecolor="k", zorder=4,
                       label=f"{p}: best")
    for v in (rng.get("lr_min"), rng.get("lr_max")):
        if v and np.isfinite(v):
            ax.axvline(v, color="0.5", ls="--", lw=1)
    ax.plot([], [], color="0.5", ls="--", lw=1, label="searched LR range")
    ax.set_xlabel("peak learning rate")
    ax.set_ylabel(metric_label(M.VAL_LOSS))
    return _finish(fig, ax, path, "tuning: validation loss vs learning rate", y_focus=y_focus)


def plot_isoflop(profiles: list[dict], metric: str, path: Path) -> list[str]:
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
