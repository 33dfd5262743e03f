"""Several sweeps side by side (e.g. EquiformerV2 against the plain transformer): one figure per target.

``python -m engine.report --sweep A --sweep B …``: for each target (total validation loss, energy,
forces, stress) one figure whose panels are the scale variables the sweeps cover (N, D, and the
compute frontier C, drawn from compute sweeps only); in each panel every family's seed means, its chosen law
styled by its verdict, and the baselines as reference lines. A model family keeps one colour across its sweeps;
each of its sweeps has its own marker. The legend sits below the panels and names families, verdict styles and
baselines once each (about ten entries at most); the numbers are in the tables.
The comparison table gives one row per fit and sweep with its verdict (:mod:`engine.fit.verdict`): an exponent
reads as a law only for a *law*; for a trend, plateau or at-baseline fit the estimate sits in its own column.
The seed study's EquiformerV2 exponents (arXiv 2509.21811: 0.383 parameters,
0.242 data, 0.339 compute) are printed for reference, and each family's local slope over the last
decade it covers says whether it still improves or has plateaued.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter

from engine import metrics as M
from engine.fit.frontier import frontier_band
from engine.fit.verdict import AT_BASELINE, LAW, PLATEAU, TREND
from engine.report.analyze import DEFAULT_METRICS, SweepAnalysis, fmt
from engine.report.document import Block, _na, exponent_cells
from engine.report.figures import (
    COLORS,
    VARIABLE_LABELS,
    baseline_lines,
    metric_label,
    save_with_legend,
)
from engine.report.summary import family_label

SEED_EXPONENTS = {M.N_PARAMS: 0.383, M.TRAIN_SIZE: 0.242, M.FLOPS_CUM: 0.339}  # EquiformerV2, L = α·X^−β
SEED_SOURCE = "seed study, EquiformerV2 on OMat24 (arXiv 2509.21811), total validation loss"
PLATEAU_SLOPE = 0.02  # |d log L / d log X| below this over the last decade: the family has plateaued


FAMILY_COLORS = [*COLORS, "tab:pink", "tab:gray", "tab:olive", "tab:cyan"]
SWEEP_MARKERS = ["o", "s", "^", "D", "v", "P"]


def family_key(summary: dict) -> tuple[str, ...]:
    """A sweep's family: its model(s) and the letters of its size ladders (the plain transformer's t-ladder and
    the periodic transformer's p-ladder are one model class, two families); the sweep name when it has none."""
    ladders = sorted({str(t.get("preset") or "").rstrip("0123456789") for t in summary.get("trials") or []} - {""})
    return (*(summary.get("models") or [summary["sweep"]]), *ladders)


def styles(analyses: list[SweepAnalysis]) -> list[tuple[str, str]]:
    """(colour, marker) per sweep: one colour per family (:func:`family_key`), in order of first appearance, so
    a family's params, data and compute sweeps read as one family; a marker per sweep within its family."""
    colors: dict[tuple[str, ...], str] = {}
    seen: dict[tuple[str, ...], int] = {}
    out = []
    for an in analyses:
        key = family_key(an.summary)
        color = colors.setdefault(key, FAMILY_COLORS[len(colors) % len(FAMILY_COLORS)])
        out.append((color, SWEEP_MARKERS[seen.get(key, 0) % len(SWEEP_MARKERS)]))
        seen[key] = seen.get(key, 0) + 1
    return out


def geo_means(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ux = np.unique(x)
    return ux, np.array([np.exp(np.mean(np.log(y[x == u]))) for u in ux])


def last_decade_slope(x: np.ndarray, y: np.ndarray) -> float | None:
    """Least-squares slope of log L on log X over the seed means within the last decade of X (≥ 2 points)."""
    if len(x) == 0:
        return None
    ux, uy = geo_means(np.asarray(x, dtype=float), np.asarray(y, dtype=float))
    keep = ux >= ux.max() / 10
    if keep.sum() < 2:
        keep = np.arange(len(ux)) >= len(ux) - 2
    if keep.sum() < 2:
        return None
    return float(np.polyfit(np.log(ux[keep]), np.log(uy[keep]), 1)[0])


# a fitted line's style says its verdict (engine.fit.verdict); the legend explains each style once
VERDICT_STYLES = {LAW: ("-", 2.0), TREND: ("--", 1.5), PLATEAU: ((0, (5, 2, 1, 2)), 1.4),
                  AT_BASELINE: ((0, (1, 1.5)), 1.6)}
BASELINE_STYLES = [(0, (1, 2)), (0, (1, 5)), (0, (2, 2, 1, 2)), (0, (1, 1, 1, 4))]  # grey, dotted


def _verdict_of(fit: dict | None) -> str | None:
    return ((fit or {}).get("verdict") or {}).get("label")


def panels_for(analyses: list[SweepAnalysis], metric: str) -> list[str]:
    """The panels of ``metric``'s figure: N and D where a sweep has final points on them, C where a compute sweep
    has a frontier (a params or data sweep's final points are one budget per size, not a frontier)."""
    out = [v for v in (M.N_PARAMS, M.TRAIN_SIZE)
           if any(len(an.run_points.get(metric, {}).get(v, ([],))[0]) for an in analyses)]
    if any(metric in an.frontiers and an.summary.get("axis") == "compute" for an in analyses):
        out.append(M.FLOPS_CUM)
    return out


def plot_target(analyses: list[SweepAnalysis], metric: str, path: Path) -> list[str]:
    """One figure for ``metric``, one row of panels (N, D, C), every family overlaid in its colour (each sweep its
    marker), each fit's line styled by its verdict, baselines as grey dotted lines. The legend, below the panels,
    names each family once, each verdict style once and each baseline once (details are in the tables)."""
    panels = panels_for(analyses, metric)
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels) + 0.4, 4.0), squeeze=False)
    families: dict[str, object] = {}
    verdicts: set[str] = set()
    baseline_style: dict[str, object] = {}
    style = styles(analyses)
    for ax, var in zip(axes[0], panels, strict=True):
        y_focus: list[float] = []
        for an, (c, marker) in zip(analyses, style, strict=True):
            fam = family_label(an.summary)
            if var == M.FLOPS_CUM:
                fr = an.frontiers.get(metric)
                if not fr or an.summary.get("axis") != "compute":
                    continue
                front = fr["frontier"]
                y_focus.extend(float(v) for v in front["loss"])
                ax.scatter(front["flops"], front["loss"], s=16, color=c, marker=marker, zorder=3)
                families.setdefault(fam, Line2D([], [], color=c, marker="o", ls="-"))
                law = fr.get("law", {})
                verdict = _verdict_of(an.summary["frontier"].get(metric))
                if "theta" in law:
                    grid = np.geomspace(min(front["flops"]) / 1.5, max(front["flops"]) * 3, 100)
                    mid, _, _ = frontier_band(law, grid)
                    ls, lw = VERDICT_STYLES.get(verdict, VERDICT_STYLES[TREND])
                    ax.plot(grid, mid, color=c, ls=ls, lw=lw)
                    verdicts.add(verdict or TREND)
                continue
            x, y = an.run_points.get(metric, {}).get(var, (np.zeros(0), np.zeros(0)))
            if len(x) == 0:
                continue
            ux, uy = geo_means(np.asarray(x, dtype=float), np.asarray(y, dtype=float))
            y_focus.extend(uy.tolist())
            ax.scatter(ux, uy, s=30, color=c, marker=marker, edgecolor="k", zorder=3)
            families.setdefault(fam, Line2D([], [], color=c, marker="o", ls="-", markeredgecolor="k"))
            fit = an.axis_fits.get(metric, {}).get(var)
            if fit is not None and fit.best is not None:
                verdict = _verdict_of(an.summary["axis_fits"].get(metric, {}).get(var))
                ls, lw = VERDICT_STYLES.get(verdict, VERDICT_STYLES[TREND])
                grid = np.geomspace(ux.min() / 1.5, ux.max() * 3, 100)
                ax.plot(grid, fit.best.predict(grid), color=c, ls=ls, lw=lw)
                verdicts.add(verdict or TREND)
        drawn = set()
        for an in analyses:
            for name, value in sorted(baseline_lines(an.summary["baselines"], metric).items()):
                if (name, round(value, 12)) in drawn or not (np.isfinite(value) and value > 0):
                    continue
                drawn.add((name, round(value, 12)))
                ls = baseline_style.setdefault(name, BASELINE_STYLES[len(baseline_style) % len(BASELINE_STYLES)])
                ax.axhline(value, color="0.45", ls=ls, lw=1.1)
                y_focus.append(value)
        ref = SEED_EXPONENTS.get(var) if metric == M.VAL_LOSS else None  # the seed's exponents are for the total loss
        if ref is not None:
            ax.set_title(f"seed study EquiformerV2: β = {ref}", fontsize=8, color="0.3")
        ax.set_xscale("log")
        ax.set_yscale("log")
        if y_focus:
            ys = np.asarray([v for v in y_focus if np.isfinite(v) and v > 0])
            ax.set_ylim(ys.min() / 1.6, ys.max() * 1.6)
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
        ax.set_xlabel(VARIABLE_LABELS.get(var, var), fontsize=9)
        ax.set_ylabel(metric_label(metric), fontsize=9)
        ax.grid(True, which="both", alpha=0.25)
    fig.suptitle(f"{metric_label(metric)}: families side by side", fontsize=11)
    handles = list(families.values())
    labels = list(families)
    for v in (LAW, TREND, PLATEAU, AT_BASELINE):
        if v in verdicts:
            ls, lw = VERDICT_STYLES[v]
            handles.append(Line2D([], [], color="0.2", ls=ls, lw=lw))
            labels.append(f"fit, {v}" + ("" if v == LAW else " (not a law)"))
    for name, ls in baseline_style.items():
        handles.append(Line2D([], [], color="0.45", ls=ls, lw=1.1))
        labels.append(f"baseline: {name}")
    return save_with_legend(fig, path, handles, labels, ncol=min(5, max(1, len(labels))))


def comparison_summary(analyses: list[SweepAnalysis]) -> dict:
    """Per target, variable and sweep: the local slope over the last decade (plateau when near zero)."""
    out: dict = {"seed_exponents": SEED_EXPONENTS, "seed_source": SEED_SOURCE, "plateau_slope": PLATEAU_SLOPE,
                 "last_decade_slope": {}}
    for metric in DEFAULT_METRICS + sorted({m for an in analyses for m in an.run_points} - set(DEFAULT_METRICS)):
        for var in (M.N_PARAMS, M.TRAIN_SIZE):
            for an in analyses:
                x, y = an.run_points.get(metric, {}).get(var, (np.zeros(0), np.zeros(0)))
                slope = last_decade_slope(x, y)
                if slope is not None:
                    out["last_decade_slope"].setdefault(metric, {}).setdefault(var, {})[an.summary["sweep"]] = slope
    return out


def _verdict_row(fit_name: str, sweep: str, v: dict | None, na: str, seed: str) -> list[str]:
    """A comparison row: the fit's verdict; an exponent as a law only for a *law*, else the estimate beside it."""
    if not v:
        return [fit_name, sweep, "—", "—", na or "—", "—", seed]
    law, est = exponent_cells(v)
    return [fit_name, sweep, f"**{v['label']}**", law, est, "; ".join(v.get("reasons") or []) or "—", seed]


def comparison_blocks(fits: dict, figures: dict[str, str]) -> list[Block]:
    """Verdicts side by side (exponents printed as laws only for *law*), the seed study's exponents and plateaus:
    the first appendix (the figures are :func:`comparison_figure_blocks`)."""
    names = [s["sweep"] for s in fits["sweeps"]]
    rows = []
    keys = sorted({(m, v) for s in fits["sweeps"] for m, bv in s["axis_fits"].items() for v in bv})
    for metric, var in keys:
        seed = str(SEED_EXPONENTS[var]) if metric == M.VAL_LOSS and var in SEED_EXPONENTS else "—"
        for s in fits["sweeps"]:
            if var not in s["axis_fits"].get(metric, {}):
                continue  # this sweep's axis has no such fit: no row
            f = s["axis_fits"][metric][var]
            na = _na(f) if "not_available" in f else ""
            rows.append(_verdict_row(f"{metric} vs {var}", s["sweep"], f.get("verdict"), na, seed))
    for metric in sorted({m for s in fits["sweeps"] for m in s["frontier"]}):
        seed = str(SEED_EXPONENTS[M.FLOPS_CUM]) if metric == M.VAL_LOSS else "—"
        for s in fits["sweeps"]:
            if metric not in s["frontier"]:
                continue
            fr = s["frontier"][metric]
            na = _na(fr) if "not_available" in fr else _na(fr.get("law", {})) if "not_available" in fr.get(
                "law", {}) else ""
            rows.append(_verdict_row(f"{metric} vs C (frontier)", s["sweep"], fr.get("verdict"), na, seed))
    cmp = fits.get("comparison") or {}
    blocks = [Block("h2", "Appendix: every fit of every sweep, side by side"),
              Block("table", header=["fit", "sweep", "verdict", "law exponent [95 % CI]", "estimate (not a law)",
                                     "why / what is missing for a law", "seed study (EquiformerV2)"], rows=rows),
              Block("p", f"Seed study exponents for reference ({SEED_SOURCE}): "
                         + ", ".join(f"{v} vs {k}" for k, v in SEED_EXPONENTS.items())
                         + "; their data and loss weights differ: compare exponents, not loss levels.")]
    slope_rows = []
    for metric, by_var in (cmp.get("last_decade_slope") or {}).items():
        for var, by_sweep in by_var.items():
            cells = []
            for n in names:
                v = by_sweep.get(n)
                if v is None:
                    cells.append("—")
                else:
                    cells.append(f"{fmt(v, 3)}" + (" (plateau)" if abs(v) < PLATEAU_SLOPE else ""))
            slope_rows.append([f"{metric} vs {var}", *cells])
    if slope_rows:
        blocks.append(Block("p", f"Local slope d log L / d log X over the last decade each sweep covers (least squares "
                                 f"through the seed means; |slope| < {PLATEAU_SLOPE} reads as a plateau):"))
        blocks.append(Block("table", header=["metric", *names], rows=slope_rows))
    return blocks


def comparison_figure_blocks(figures: dict[str, str]) -> list[Block]:
    """The comparison figures, one per target, right after the summary table."""
    imgs = [Block("img", path, header=[f"{key.split(':', 1)[1]}: families side by side (N, D, compute frontier)"])
            for key, path in figures.items() if key.startswith("compare:")]
    if not imgs:
        return []
    return [Block("h2", "Figures: families side by side"),
            Block("p", "One figure per target: a family's colour across its sweeps, a line style per verdict (only a "
                       "solid line is a law), the naive baselines in grey; frontiers from compute sweeps only."),
            *imgs]
