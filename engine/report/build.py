"""Build a report: MLflow → tidy frame → fits → figures → report.md, report.html, fits.json.

``build_report(["sweep"])`` writes reports/<sweep>/ (several sweeps: reports/<a>__vs__<b>/) and
logs the same files to each sweep's parent MLflow run under the artifact path ``report``.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from engine import metrics as M
from engine.paths import default_tracking_uri, reports_dir
from engine.report.analyze import SweepAnalysis, analyze_sweep
from engine.report.collect import collect_sweep
from engine.report.document import document, to_markdown
from engine.report.figures import plot_axis, plot_frontier, plot_isoflop
from engine.report.html import to_html


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def make_figures(analyses: list[SweepAnalysis], out_dir: Path) -> dict[str, str]:
    """Write every PNG; returns {key: file name} (keys "<sweep>|axis:<metric>:<var>", "compare:…")."""
    figs: dict[str, str] = {}
    for an in analyses:
        s = an.summary["sweep"]
        baselines = an.summary["baselines"]
        for metric, by_var in an.run_points.items():
            # reference lines: parent-run metrics baseline_<name>_<metric>
            lines = {k[len("baseline_"):-len(metric) - 1].replace("_", " "): v for k, v in baselines.items()
                     if k.endswith("_" + metric)}
            for var, (x, y) in by_var.items():
                if len(x) == 0:
                    continue
                name = f"{_safe(s)}_{metric}_vs_{var}.png"
                plot_axis([(s, an.axis_fits[metric].get(var), x, y)], metric, var, out_dir / name, lines)
                figs[f"{s}|axis:{metric}:{var}"] = name
        for metric, fr in an.frontiers.items():
            name = f"{_safe(s)}_{metric}_frontier.png"
            plot_frontier([(s, an.curves[metric], fr)], metric, out_dir / name)
            figs[f"{s}|frontier:{metric}"] = name
            profiles = fr.get("approach2", {}).get("profiles", [])
            if profiles:
                name = f"{_safe(s)}_{metric}_isoflop.png"
                plot_isoflop(profiles, metric, out_dir / name)
                figs[f"{s}|isoflop:{metric}"] = name
    if len(analyses) > 1:
        metrics = sorted({m for an in analyses for m in an.run_points})
        for metric in metrics:
            for var in (M.N_PARAMS, M.TRAIN_SIZE):
                series = [(an.summary["sweep"], an.axis_fits.get(metric, {}).get(var), *an.run_points[metric][var])
                          for an in analyses if var in an.run_points.get(metric, {})
                          and len(an.run_points[metric][var][0])]
                if len(series) > 1:
                    name = f"compare_{metric}_vs_{var}.png"
                    plot_axis(series, metric, var, out_dir / name)
                    figs[f"compare:{metric} vs {var}"] = name
            series = [(an.summary["sweep"], an.curves[metric], an.frontiers[metric])
                      for an in analyses if metric in an.frontiers]
            if len(series) > 1:
                name = f"compare_{metric}_frontier.png"
                plot_frontier(series, metric, out_dir / name)
                figs[f"compare:{metric} frontier"] = name
    return figs


def build_report(
    sweeps: list[str],
    tracking_uri: str | None = None,
    out_dir: Path | None = None,
    metrics: list[str] | None = None,
    n_boot: int = 500,
    seed: int = 0,
    log_to_mlflow: bool = True,
) -> Path:
    """Collect, fit, plot and write the report of one sweep (or a comparison of several); returns its folder."""
    uri = tracking_uri or default_tracking_uri()
    data = [collect_sweep(s, uri) for s in sweeps]
    analyses = [analyze_sweep(d, metrics, n_boot=n_boot, seed=seed) for d in data]
    out = Path(out_dir) if out_dir is not None else reports_dir() / "__vs__".join(_safe(s) for s in sweeps)
    out.mkdir(parents=True, exist_ok=True)
    figures = make_figures(analyses, out)
    fits = {
        "format": "engine-report/1",
        "generated_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "sweeps": [an.summary for an in analyses],
        "figures": figures,
    }
    (out / "fits.json").write_text(json.dumps(fits, indent=1, ensure_ascii=False, allow_nan=False))
    blocks = document(fits, figures)
    (out / "report.md").write_text(to_markdown(blocks))
    (out / "report.html").write_text(to_html(blocks, out))
    if log_to_mlflow:
        _log_artifacts(data, out)
    return out


def _log_artifacts(data, out: Path) -> None:
    from mlflow.tracking import MlflowClient

    for d in data:
        if d.parent_run_id:
            MlflowClient(tracking_uri=d.tracking_uri).log_artifacts(d.parent_run_id, str(out), artifact_path="report")
