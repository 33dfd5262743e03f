"""Several sweeps side by side (e.g. EquiformerV2 against the plain transformer): one figure per target.

``python -m engine.report --sweep A --sweep B …``: for each target (total validation loss, energy,
forces, stress) one figure whose panels are the scale variables the sweeps cover (N, D, and the
compute frontier C); in each panel every family's seed means, its chosen law, and the baselines as
reference lines. A model family keeps one colour across its sweeps; each of its sweeps has its own marker.
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
from matplotlib.ticker import FuncFormatter

from engine import metrics as M
from engine.fit.frontier import frontier_band
from engine.report.analyze import DEFAULT_METRICS, SweepAnalysis, fmt
from engine.report.document import Block, _na, exponent_cells
from engine.report.figures import (
    COLORS,
    VARIABLE_LABELS,
    baseline_lines,
    beta_label,
    frontier_beta_label,
    metric_label,
)

SEED_EXPONENTS = {M.N_PARAMS: 0.383, M.TRAIN_SIZE: 0.242, M.FLOPS_CUM: 0.339}  # EquiformerV2, L = α·X^−β
SEED_SOURCE = "seed study, EquiformerV2 on OMat24 (arXiv 2509.21811), total validation loss"
PLATEAU_SLOPE = 0.02  # |d log L / d log X| below this over the last decade: the family has plateaued


def family(an: SweepAnalysis) -> str:
    """Legend name of a sweep: its name and model family."""
    models = an.summary.get("models") or []
    return f"{an.summary['sweep']} ({', '.join(models)})" if models else an.summary["sweep"]


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


def panels_for(analyses: list[SweepAnalysis], metric: str) -> list[str]:
    out = [v for v in (M.N_PARAMS, M.TRAIN_SIZE)
           if any(len(an.run_points.get(metric, {}).get(v, ([],))[0]) for an in analyses)]
    if any(metric in an.frontiers for an in analyses):
        out.append(M.FLOPS_CUM)
    return out


def plot_target(analyses: list[SweepAnalysis], metric: str, path: Path) -> list[str]:
    """One figure for ``metric``: a panel per scale variable, every family overlaid, baselines as lines."""
    panels = panels_for(analyses, metric)
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels) + 0.6, 4.4), squeeze=False)
    handles: dict[str, object] = {}
    style = styles(analyses)
    for ax, var in zip(axes[0], panels):
        y_focus: list[float] = []
        for an, (c, marker) in zip(analyses, style):
            tag = family(an)
            if var == M.FLOPS_CUM:
                fr = an.frontiers.get(metric)
                if not fr:
                    continue
                front = fr["frontier"]
                y_focus.extend(float(v) for v in front["loss"])
                h = ax.scatter(front["flops"], front["loss"], s=14, color=c, marker=marker)
                handles.setdefault(f"{tag}: data", h)
                law = fr.get("law", {})
                if "theta" in law:
                    grid = np.geomspace(min(front["flops"]) / 1.5, max(front["flops"]) * 3, 100)
                    mid, _, _ = frontier_band(law, grid)
                    (h,) = ax.plot(grid, mid, color=c, lw=1.8)
                    handles.setdefault(f"{tag}: L(C), {frontier_beta_label(law)}", h)
                continue
            x, y = an.run_points.get(metric, {}).get(var, (np.zeros(0), np.zeros(0)))
            if len(x) == 0:
                continue
            ux, uy = geo_means(np.asarray(x, dtype=float), np.asarray(y, dtype=float))
            y_focus.extend(uy.tolist())
            h = ax.scatter(ux, uy, s=30, color=c, marker=marker, edgecolor="k", zorder=3)
            handles.setdefault(f"{tag}: data", h)
            fit = an.axis_fits.get(metric, {}).get(var)
            if fit is not None and fit.best is not None:
                grid = np.geomspace(ux.min() / 1.5, ux.max() * 3, 100)
                (h,) = ax.plot(grid, fit.best.predict(grid), color=c, lw=1.8)
                handles.setdefault(f"{tag}: {fit.best.formula}, {beta_label(fit.best)}", h)
        drawn = set()
        for an in analyses:
            for name, value in sorted(baseline_lines(an.summary["baselines"], metric).items()):
                if (name, round(value, 12)) in drawn or not (np.isfinite(value) and value > 0):
                    continue
                drawn.add((name, round(value, 12)))
                label = f"baseline: {name}" + (f" ({an.summary['sweep']})" if len(analyses) > 1 else "")
                h = ax.axhline(value, color="0.35", ls=(0, (1, 1 + len(drawn))), lw=1.2)
                handles.setdefault(label, h)
                y_focus.append(value)
        ref = SEED_EXPONENTS.get(var)
        if ref is not None:
            ax.text(0.02, 0.03, f"seed study EquiformerV2: β = {ref}", transform=ax.transAxes, fontsize=7,
                    color="0.3")
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
    labels = list(handles)
    rows = -(-len(labels) // 2)  # the legend goes below the panels, two columns
    fig.set_figheight(4.4 + 0.22 * rows)
    bottom = (0.22 * rows + 0.15) / fig.get_figheight()
    fig.legend([handles[k] for k in labels], labels, fontsize=7.5, loc="lower center", ncol=2, frameon=False)
    fig.tight_layout(rect=(0, bottom, 1, 0.95))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return labels


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
    """Verdicts side by side (exponents printed as laws only for *law*), the seed study's exponents, plateaus, and
    one figure per target."""
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
    blocks = [Block("h2", "Comparison"),
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
    for key, path in figures.items():
        if key.startswith("compare:"):
            blocks.append(Block("img", path, header=[key.split(":", 1)[1]]))
    return blocks
