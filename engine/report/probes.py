"""Physical probes beside the validation-loss law: did a lower loss mean better physics?

Trials trained with ``probes: {enabled: true}`` log ``probe_*`` metrics in their last report
(:mod:`engine.loop.probes`: NVE energy drift per atom and the fraction of stable runs, the reference
calculator's max force at the model's relaxed structure and the energy error there). The report draws
each of them against the sweep's axis variable (N on the params axis) in one figure whose first panel
is the validation-loss law, and tabulates them per axis value with the rank correlation between final
validation loss and each probe across runs. A sweep without probe metrics says "probes off".
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.ticker import FuncFormatter, NullFormatter

from engine import metrics as M
from engine.loop.probes import NVE_DRIFT, NVE_STABLE, RELAX_ENERGY_ERROR, RELAX_MAX_FORCE
from engine.report.analyze import AXIS_VARIABLES, fmt, is_diverged
from engine.report.document import Block

PROBES = (NVE_DRIFT, NVE_STABLE, RELAX_MAX_FORCE, RELAX_ENERGY_ERROR)
LABELS = {
    NVE_DRIFT: "NVE energy drift (eV/atom, stable runs)",
    NVE_STABLE: "NVE runs that stayed stable (fraction)",
    RELAX_MAX_FORCE: "reference max force at model minimum (eV/Å)",
    RELAX_ENERGY_ERROR: "relaxed energy error vs reference (meV/atom)",
}
OFF = "probes off: no trial logged probe_* metrics (enable them with `probes: {enabled: true}` in the space's fixed)"
MIN_RUNS_FOR_CORRELATION = 3


def probe_variable(axis: str | None) -> str:
    """What the probes are drawn against: the axis's variable (N on the params axis, D on the data axis), else N."""
    return (AXIS_VARIABLES.get(axis or "") or [M.N_PARAMS])[0]


def _finals(frame: pd.DataFrame, metric: str, variable: str) -> pd.DataFrame:
    """Each non-diverged run's last logged value of ``metric`` (probes are logged once, in the last report)."""
    cols = ["run_id", variable, metric]
    if metric not in frame:
        return pd.DataFrame(columns=cols)
    rows = frame[~is_diverged(frame)].dropna(subset=[metric]).sort_values([M.EPOCH, "report_index"])
    return rows.groupby("run_id", sort=True).tail(1)[cols].reset_index(drop=True)


def probe_summary(frame: pd.DataFrame, axis: str | None) -> dict:
    """Points, per-axis-value means and rank correlations with the final validation loss (JSON-ready);
    ``{"not_available": "probes off: ..."}`` when no run logged a probe metric."""
    variable = probe_variable(axis)
    finals = {m: _finals(frame, m, variable) for m in (*PROBES, M.VAL_LOSS)}
    present = [m for m in PROBES if not finals[m].empty]
    if not present:
        return {"not_available": OFF}
    out: dict = {"variable": variable, "metrics": {}, "correlation_with_val_loss": {}}
    loss = finals[M.VAL_LOSS]
    for m in present:
        df = finals[m][["run_id", variable, m]].dropna()
        out["metrics"][m] = {"x": df[variable].astype(float).tolist(), "y": df[m].astype(float).tolist(),
                             "mean_by_x": {fmt(x): float(g[m].mean()) for x, g in df.groupby(variable)}}
        both = df.merge(loss[["run_id", M.VAL_LOSS]], on="run_id").dropna()
        if len(both) >= MIN_RUNS_FOR_CORRELATION and both[m].nunique() > 1 and both[M.VAL_LOSS].nunique() > 1:
            rho = both[M.VAL_LOSS].rank().corr(both[m].rank())  # Spearman: ranks, then Pearson
            out["correlation_with_val_loss"][m] = {"spearman": float(rho), "n_runs": len(both)}
        else:
            out["correlation_with_val_loss"][m] = {"not_available": f"{len(both)} runs with both values; needs "
                                                   f"≥ {MIN_RUNS_FOR_CORRELATION} whose values differ"}
    return out


def plot_probes(summary: dict, loss_points: tuple[np.ndarray, np.ndarray] | None, loss_fit, path: Path,
                verdict: str | None = None) -> list[str]:
    """The validation-loss law (first panel, labelled with its ``verdict``) and each probe metric against the same
    axis variable."""
    from engine.report.figures import (  # Agg backend set there
        VARIABLE_LABELS,
        beta_label,
        metric_label,
        plt,
        save_with_legend,
    )

    var = summary["variable"]
    metrics = list(summary["metrics"])
    ncols = min(3, 1 + len(metrics))
    nrows = -(-(1 + len(metrics)) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.4 * nrows), squeeze=False)
    flat = list(axes.ravel())
    for ax in flat[1 + len(metrics):]:
        ax.set_visible(False)
    handles: list = []
    labels: list[str] = []
    ax = flat[0]
    if loss_points is not None and len(loss_points[0]):
        x, y = loss_points
        ax.scatter(x, y, s=18, color="tab:blue", label="runs")
        if loss_fit is not None and loss_fit.best is not None:
            grid = np.geomspace(x.min() / 1.5, x.max() * 1.5, 100)
            ax.plot(grid, loss_fit.best.predict(grid), color="tab:blue", lw=2, label=beta_label(loss_fit.best, verdict))
        _y_scale(ax, y)
    ax.set_title("validation loss", fontsize=10)
    ax.set_ylabel(metric_label(M.VAL_LOSS), fontsize=8)
    for k, m in enumerate(metrics, start=1):
        ax = flat[k]
        pts = summary["metrics"][m]
        x, y = np.asarray(pts["x"], float), np.asarray(pts["y"], float)
        ax.scatter(x, y, s=18, color="tab:red", label="runs (probes)")
        ux = np.unique(x)
        ax.plot(ux, [y[x == u].mean() for u in ux], color="tab:red", lw=1, marker="o", ms=4, label="mean per value")
        if m == NVE_STABLE:
            ax.set_ylim(-0.05, 1.05)
        else:
            _y_scale(ax, y)
        ax.set_title(m.removeprefix("probe_"), fontsize=10)
        ax.set_ylabel(LABELS.get(m, m), fontsize=8)
    xs = np.unique([x for m in metrics for x in summary["metrics"][m]["x"]])
    for k, ax in enumerate(flat[: 1 + len(metrics)]):
        ax.set_xscale("log")
        ax.set_xticks(xs)  # one tick per axis value: log minor labels collide on narrow panels
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:.3g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(VARIABLE_LABELS.get(var, var), fontsize=8)
        ax.grid(True, which="both", alpha=0.25)
        ax.tick_params(labelsize=7)
        if k < 2:  # the loss panel and the first probe explain the marks, in one legend below the panels
            for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
                if lab not in labels:
                    handles.append(h)
                    labels.append(lab)
    fig.suptitle(f"physical probes vs {var}, beside the validation-loss law", fontsize=11)
    return save_with_legend(fig, path, handles, labels, ncol=4, fontsize=7)


def _y_scale(ax, y: np.ndarray) -> None:
    """Log y when the positive values span more than a decade; a narrower range reads better linear."""
    y = np.asarray(y, float)
    y = y[np.isfinite(y)]
    if y.size and np.all(y > 0) and y.max() / y.min() > 10:
        ax.set_yscale("log")


def probe_blocks(summary: dict, figures: dict[str, str]) -> list[Block]:
    """Report blocks: "probes off", or a per-axis-value table, the correlations and the figure."""
    pr = summary.get("probes") or {"not_available": OFF}
    blocks = [Block("h2", "Physical probes")]
    if "not_available" in pr:
        return [*blocks, Block("p", pr["not_available"] + ".")]
    var, metrics = pr["variable"], list(pr["metrics"])
    xs = sorted({x for m in metrics for x in pr["metrics"][m]["mean_by_x"]}, key=float)
    rows = [[x, *[fmt(pr["metrics"][m]["mean_by_x"].get(x)) for m in metrics]] for x in xs]
    blocks.append(Block("p", "After training, each trial ran a short NVE simulation and a relaxation on a few "
                             "validation structures with its final weights (engine.loop.probes); means over "
                             f"runs per {var}:"))
    blocks.append(Block("table", header=[var, *metrics], rows=rows))
    corr = []
    for m, c in pr["correlation_with_val_loss"].items():
        corr.append(f"{m}: ρ = {fmt(c['spearman'], 3)} over {c['n_runs']} runs" if "spearman" in c
                    else f"{m}: not available ({c['not_available']})")
    blocks.append(Block("p", "Rank correlation (Spearman) of final validation loss with each probe across runs "
                             "(positive: lower loss went with a lower probe value): " + "; ".join(corr) + "."))
    key = f"probes:{var}"
    if key in figures:
        blocks.append(Block("img", figures[key], header=[f"physical probes vs {var} beside the validation-loss law"]))
    return blocks
