"""Fit every axis and metric a sweep holds: the numbers a report prints, as one JSON-ready dict.

- params axis → final metric vs n_params; data axis → vs train_size (per-axis forms, LOO choice,
  extrapolation check); every sweep with FLOPs → the compute frontier, L(C) and Chinchilla
  approaches 1–2; every sweep with ≥ 3 sizes × ≥ 3 data sizes → the joint law and approach 3.
- Seeds at one scale are averaged; intervals come from a bootstrap over runs.
- Diverged runs (tag ``engine.status = diverged``, metric ``diverged_epoch``) enter no fit and are
  listed with the epoch they diverged at; every trial is tabulated with its peak LR, batch size, epochs
  run, and the final validation and test value of each metric; the sweep's budget rule is stated.
- Frontiers use annealed points only: when trials report FLOP rungs (``rung``, :mod:`engine.loop.cooldown`)
  those reports, whose ``val_*`` are cooldown-branch losses; otherwise (params and data sweeps, cosine runs)
  the final report of each run that trained to its end, never intermediate or early-stopped points.
- An hpo sweep (``engine.tune``) gets no laws and no frontier: a table of its trials and the best value
  per size, with a warning when that value sits at the edge of the searched range (:mod:`engine.report.hpo`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from engine import metrics as M
from engine.fit.extrapolate import extrapolation_check, frontier_extrapolation_check
from engine.fit.frontier import Curve, allocation_from_joint, fit_frontier
from engine.fit.joint import fit_joint
from engine.fit.powerlaw import AxisFit, fit_axis
from engine.fit.result import FitUnavailable, LawFit, jsonable
from engine.fit.verdict import AT_BASELINE, PLATEAU, grade, grade_joint
from engine.report.collect import SweepData
from engine.report.figures import baseline_lines

DEFAULT_METRICS = [
    M.VAL_LOSS,
    f"val_{M.ENERGY_MAE}",
    f"val_{M.FORCES_MAE}",
    f"val_{M.STRESS_MAE}",
]
AXIS_VARIABLES = {"params": [M.N_PARAMS], "data": [M.TRAIN_SIZE], "compute": [], "hpo": []}

# Seed study (arXiv 2509.21811), EquiformerV2, L = α·N^−β on total validation loss
SEED_PAPER = {
    "source": "arXiv 2509.21811 (EquiformerV2 on OMat24, L = α·X^−β, total validation loss)",
    "fits": {
        M.N_PARAMS: {"alpha": 7.76e2, "beta": 0.383},
        M.FLOPS_CUM: {"alpha": 4.99e5, "beta": 0.339},
        M.TRAIN_SIZE: {"alpha": 64.7, "beta": 0.242},
    },
    "naive_val_loss": {"predict zero": 17.56, "predict the mean": 6.48, "1-nearest neighbour": 5.70},
    "note": "their data set and loss weights differ: compare exponents, not loss levels",
}


@dataclass
class SweepAnalysis:
    """JSON summary plus the fit objects (with bootstrap samples) that the figures draw."""

    summary: dict
    axis_fits: dict[str, dict[str, AxisFit]] = field(default_factory=dict)  # metric → variable → fit
    run_points: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = field(default_factory=dict)
    curves: dict[str, list[Curve]] = field(default_factory=dict)  # metric → curves
    frontiers: dict[str, dict] = field(default_factory=dict)
    joints: dict[str, LawFit] = field(default_factory=dict)


def is_diverged(frame: pd.DataFrame) -> pd.Series:
    """Rows of runs that diverged (tag engine.status = diverged, or a logged diverged_epoch)."""
    div = frame["engine_status"].fillna("") == M.STATUS_DIVERGED
    if M.DIVERGED_EPOCH in frame:
        div |= frame.groupby("run_id")[M.DIVERGED_EPOCH].transform(lambda v: v.notna().any()).astype(bool)
    return div


def final_values(frame: pd.DataFrame, metric: str) -> pd.DataFrame:
    """One row per run trained to its end: its last logged value of ``metric`` with n_params, train_size, seed.

    Runs that ASHA stopped early (MLflow FINISHED, tag engine.status=stopped) are left out here; their
    curves still count for the compute frontier. Diverged runs are left out of everything.
    """
    done = frame[(frame["status"] == "FINISHED") & (frame["engine_status"].fillna("completed") != "stopped")
                 & ~is_diverged(frame)]
    rows = []
    for run_id, g in done.groupby("run_id", sort=True):
        vals = g.dropna(subset=[metric]) if metric in g else g.iloc[0:0]
        if vals.empty:
            continue
        last = vals.sort_values(M.EPOCH).iloc[-1]
        rows.append({"run_id": run_id, M.N_PARAMS: last[M.N_PARAMS], M.TRAIN_SIZE: last[M.TRAIN_SIZE],
                     "seed": last["seed"], M.EPOCH: last[M.EPOCH], metric: last[metric]})
    return pd.DataFrame(rows, columns=["run_id", M.N_PARAMS, M.TRAIN_SIZE, "seed", M.EPOCH, metric])


def _trained_to_end(g: pd.DataFrame) -> bool:
    """Whether a run's rows say it trained to the end of its schedule (FINISHED, not stopped by a scheduler)."""
    first = g.iloc[0]
    engine_status = first["engine_status"] if isinstance(first["engine_status"], str) else "completed"
    return first["status"] == "FINISHED" and engine_status != "stopped"


def curves_of(frame: pd.DataFrame, metric: str) -> list[Curve]:
    """Every run's annealed (flops_cum, metric) points, for the compute frontier; diverged runs give none.

    Only points whose learning rate was annealed enter a frontier (Hoffmann et al. 2022, §3.1: an un-annealed
    cosine point overstates the loss at that budget). A run that reported FLOP rungs contributes those reports
    (cooldown-branch scores, keyed by rung so that its seeds align rung by rung); any other run contributes its
    final report only, and only when it trained to the end of its schedule (a cosine run's last point; runs a
    scheduler stopped early and intermediate reports are left out), keyed 0 so that a size's seeds align.
    Samples seen come from ``epochs_run`` (fractional passes) where logged, else from the epoch.
    """
    out = []
    for run_id, g in frame[~is_diverged(frame)].groupby("run_id", sort=True):
        if metric not in g:
            continue
        rungs = M.RUNG in g and g[M.RUNG].notna().any()
        if rungs:
            g = g[g[M.RUNG].notna()]
        g = g.dropna(subset=[metric, M.FLOPS_CUM]).sort_values([M.RUNG] if rungs else [M.EPOCH], kind="stable")
        if not rungs:
            if g.empty or not _trained_to_end(g):
                continue
            g = g.iloc[-1:]
        if g.empty:
            continue
        epoch = g[M.EPOCH].to_numpy(float)
        seed = g["seed"].iloc[0] if "seed" in g else None
        out.append(Curve(str(run_id), float(g[M.N_PARAMS].iloc[0]), float(g[M.TRAIN_SIZE].iloc[0]),
                         g[M.FLOPS_CUM].to_numpy(float), g[metric].to_numpy(float), epoch,
                         epochs_run=g[M.EPOCHS_RUN].to_numpy(float) if M.EPOCHS_RUN in g else epoch,
                         key=g[M.RUNG].to_numpy(float) if rungs else np.zeros(1),
                         seed=float(seed) if seed is not None and pd.notna(seed) else None))
    return out


def _usable(df: pd.DataFrame, cols: list[str]) -> pd.DataFrame:
    ok = np.ones(len(df), dtype=bool)
    for c in cols:
        v = pd.to_numeric(df[c], errors="coerce").to_numpy(float)
        ok &= np.isfinite(v) & (v > 0)
    return df[ok]


def analyze_sweep(data: SweepData, metrics: list[str] | None = None, n_boot: int = 500, seed: int = 0) -> SweepAnalysis:
    """Fit what the sweep's axis and data allow, for each requested metric that the runs logged."""
    frame = data.frame
    wanted = metrics or DEFAULT_METRICS
    present = [m for m in wanted if m in frame and frame[m].notna().any()]
    variables = AXIS_VARIABLES.get(data.axis or "", [M.N_PARAMS, M.TRAIN_SIZE])
    runs = frame.drop_duplicates("run_id")
    summary: dict = {
        "sweep": data.name,
        "axis": data.axis,
        "tracking_uri": data.tracking_uri,
        "parent_run_id": data.parent_run_id,
        "n_trials": len(runs),
        "status_counts": {str(k): int(v) for k, v in runs["status"].value_counts().items()},
        "models": sorted({str(m) for m in runs["model"].dropna()}),
        "n_params_values": sorted({float(v) for v in runs[M.N_PARAMS].dropna()}),
        "train_size_values": sorted({float(v) for v in runs[M.TRAIN_SIZE].dropna()}),
        "metrics": present,
        "metrics_missing": [m for m in wanted if m not in present],
        "n_boot": n_boot,
        "bootstrap_seed": seed,
        "axis_fits": {},
        "frontier": {},
        "joint": {},
        "allocation": {},
        "baselines": data.baselines,
        "seed_paper": SEED_PAPER,
        "budget_rule": data.parent_params.get("budget_rule"),
        # engine.scale --lr-from a per-size tuning: the space's per_size.<preset>.tuned_by params
        "lr_from": ", ".join(sorted({v for k, v in data.parent_params.items()
                                     if k.startswith("space.per_size.") and k.endswith(".tuned_by")})) or None,
        "trials": trial_table(frame, present),
        "diverged": diverged_list(frame),
        "annealed": annealed_summary(frame),
    }
    out = SweepAnalysis(summary)
    if data.axis == "hpo":
        from engine.report.hpo import hpo_summary

        summary["hpo"] = hpo_summary(frame, data.parent_params)
        out.summary = jsonable(summary)
        return out
    for metric in present:
        bases = baseline_lines(data.baselines, metric)
        finals = final_values(frame, metric)
        summary["axis_fits"][metric] = {}
        out.axis_fits[metric], out.run_points[metric] = {}, {}
        for var in variables:
            df = _usable(finals, [var, metric])
            x, y = df[var].to_numpy(float), df[metric].to_numpy(float)
            out.run_points[metric][var] = (x, y)
            if len(np.unique(x)) < 3:
                summary["axis_fits"][metric][var] = {
                    "not_available": f"{len(np.unique(x))} distinct {var} values among finished runs; needs ≥ 3"
                }
                continue
            fit = fit_axis(x, y, variable=var, metric=metric, n_boot=n_boot, seed=seed)
            out.axis_fits[metric][var] = fit
            summary["axis_fits"][metric][var] = fit.to_dict()
            summary["axis_fits"][metric][var]["verdict"] = jsonable(grade(
                x, y, fit.best.to_dict() if fit.best else None, fit.extrapolation, bases, variable=var))

        curves = curves_of(frame, metric)
        out.curves[metric] = curves
        if curves:
            fr = fit_frontier(curves, n_boot=min(n_boot, 200), seed=seed)
            _grade_frontier(fr, bases)
            out.frontiers[metric] = fr
            summary["frontier"][metric] = _frontier_summary(fr)
        else:
            summary["frontier"][metric] = {"not_available": "no run logged flops_cum with this metric"}

        df = _usable(finals, [M.N_PARAMS, M.TRAIN_SIZE, metric])
        try:
            jf = fit_joint(df[M.N_PARAMS], df[M.TRAIN_SIZE], df[metric], n_boot=min(n_boot, 200), seed=seed)
            out.joints[metric] = jf
            summary["joint"][metric] = jf.to_dict()
            x2 = df[[M.N_PARAMS, M.TRAIN_SIZE]].to_numpy(float)
            ex = extrapolation_check("joint", x2, df[metric].to_numpy(float), M.N_PARAMS, n_boot=min(n_boot, 200),
                                     seed=seed, variables=[M.N_PARAMS, M.TRAIN_SIZE])
            summary["joint"][metric]["extrapolation"] = ex
            summary["joint"][metric]["verdict"] = jsonable(grade_joint(
                x2, df[metric].to_numpy(float), jf.to_dict(), ex, bases, variables=(M.N_PARAMS, M.TRAIN_SIZE)))
        except FitUnavailable as exc:
            summary["joint"][metric] = {"not_available": str(exc)}

    primary = M.VAL_LOSS if M.VAL_LOSS in present else (present[0] if present else None)
    if primary:
        fr = summary["frontier"].get(primary, {})
        joint = out.joints.get(primary)
        summary["allocation"] = {
            "metric": primary,
            "approach1": fr.get("approach1", {"not_available": fr.get("not_available", "no frontier")}),
            "approach2": fr.get("approach2", {"not_available": fr.get("not_available", "no frontier")}),
            "approach3": allocation_from_joint(joint, summary["joint"][primary].get("not_available", "")),
        }
    out.summary = jsonable(summary)
    return out


def _last(g: pd.DataFrame, col: str) -> float:
    if col not in g:
        return math.nan
    v = g[col].dropna()
    return float(v.iloc[-1]) if len(v) else math.nan


def test_metric(metric: str) -> str:
    """The test-split name of a validation metric (val_loss → test_loss); other names unchanged."""
    return "test_" + metric[len("val_"):] if metric.startswith("val_") else metric


def trial_table(frame: pd.DataFrame, metrics: list[str]) -> list[dict]:
    """One dict per trial: identity, peak LR, batch size, epochs run, status and final val/test metrics."""
    rows = []
    for run_id, g in frame.groupby("run_id", sort=False):
        g = g.sort_values([M.EPOCH, "report_index"] if "report_index" in g else [M.EPOCH])
        first = g.iloc[0]
        epochs_run = _last(g, M.EPOCHS_RUN)
        row = {
            "trial_id": str(first["trial_id"]), "run_id": str(run_id), "model": first["model"],
            "preset": first["preset"], M.N_PARAMS: first[M.N_PARAMS], M.TRAIN_SIZE: first[M.TRAIN_SIZE],
            "seed": first["seed"], "peak_lr": first.get("peak_lr", math.nan),
            "batch_size": first.get("batch_size", math.nan),
            M.EPOCHS_RUN: epochs_run if math.isfinite(epochs_run) else _last(g, M.EPOCH),
            M.BEST_EPOCH: _last(g, M.BEST_EPOCH),
            "status": tag if isinstance(tag := first["engine_status"], str) else str(first["status"]).lower(),
            "final": {m: _last(g, m) for m in metrics},
            "test": {m: _last(g, test_metric(m)) for m in metrics},
        }
        if bool(is_diverged(g).any()):
            row["status"] = M.STATUS_DIVERGED
        rows.append(row)
    return sorted(rows, key=lambda r: r["trial_id"])


def diverged_list(frame: pd.DataFrame) -> list[dict]:
    """Diverged trials with the epoch they diverged at (NaN when the run did not log it)."""
    out = []
    for run_id, g in frame[is_diverged(frame)].groupby("run_id", sort=True):
        ep = _last(g, M.DIVERGED_EPOCH)
        out.append({"trial_id": str(g["trial_id"].iloc[0]), "run_id": str(run_id), "preset": g["preset"].iloc[0],
                    M.N_PARAMS: g[M.N_PARAMS].iloc[0], M.TRAIN_SIZE: g[M.TRAIN_SIZE].iloc[0],
                    "seed": g["seed"].iloc[0], "peak_lr": g["peak_lr"].iloc[0] if "peak_lr" in g else math.nan,
                    M.DIVERGED_EPOCH: ep if math.isfinite(ep) else _last(g, M.EPOCH)})
    return sorted(out, key=lambda r: r["trial_id"])


def annealed_summary(frame: pd.DataFrame) -> dict:
    """Which points the compute frontier uses: rung reports (annealed by a cooldown branch, with their LR at the
    end of the cooldown), else the final report of each run that trained to its end (annealed by its schedule)."""
    if M.RUNG not in frame or not frame[M.RUNG].notna().any():
        live = frame[~is_diverged(frame)]
        ends = [bool(_trained_to_end(g)) for _, g in live.groupby("run_id", sort=False)]
        return {"rungs": False, "final_points_only": True, "n_runs": int(sum(ends)),
                "n_runs_left_out": len(ends) - int(sum(ends))}
    rungs = frame[frame[M.RUNG].notna()]
    out = {"rungs": True, "n_rung_reports": len(rungs), "n_runs": int(rungs["run_id"].nunique())}
    if M.LR_COOLDOWN_END in rungs and "peak_lr" in rungs:
        ratio = (rungs[M.LR_COOLDOWN_END] / rungs["peak_lr"]).dropna()
        if len(ratio):
            out["max_lr_end_over_peak"] = float(ratio.max())
    return out


def _grade_frontier(fr: dict, baselines: dict[str, float]) -> None:
    """Add L(C)'s extrapolation check (``law.extrapolation``) and its verdict (``verdict``) to a frontier result."""
    front, law = fr["frontier"], fr.get("law", {})
    flops, loss = np.asarray(front["flops"], dtype=float), np.asarray(front["loss"], dtype=float)
    if len(flops) == 0:
        return
    if "params" not in law:  # no L(C): only a verdict that needs no law (at baseline, plateau)
        v = grade(flops, loss, None, None, baselines, n_seeds=np.asarray(front["n_seeds"]), variable="C")
        if v["label"] in (AT_BASELINE, PLATEAU):
            fr["verdict"] = jsonable(v)
        return
    check = frontier_extrapolation_check(flops, loss, np.asarray(front["size"]))
    law["extrapolation"] = check
    fr["verdict"] = jsonable(grade(flops, loss, law, check, baselines, n_seeds=np.asarray(front["n_seeds"]),
                                   variable="C"))


def _frontier_summary(fr: dict) -> dict:
    """The frontier result without bootstrap arrays, trimmed to what the report prints."""
    law = {k: v for k, v in fr.get("law", {}).items() if k != "boot_theta"}
    a2 = dict(fr.get("approach2", {}))
    return jsonable(
        {
            "n_runs": fr["n_runs"],
            "n_sizes": fr.get("n_sizes"),
            "sizes": fr.get("sizes", []),
            "bootstrap": fr.get("bootstrap"),
            "frontier": fr["frontier"],
            "law": law,
            "approach1": fr.get("approach1", {}),
            "approach2": a2,
            **({"verdict": fr["verdict"]} if "verdict" in fr else {}),
        }
    )


def fmt(v, digits: int = 4) -> str:
    """The one number format shared by report.md, report.html and the tests."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "—"
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        return str(int(v))
    return f"{float(v):.{digits}g}"
