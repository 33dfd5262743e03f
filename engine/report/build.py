"""Build a report: MLflow (or runs files) → tidy frame → fits → figures → report.md, report.html, fits.json.

``build_report(["sweep"])`` writes reports/<sweep>/ (several sweeps: reports/<a>__vs__<b>/, with one
comparison figure per target, :mod:`engine.report.compare`) and logs the same files to each sweep's
parent MLflow run under the artifact path ``report``. The report opens with the decision section and one summary
table (:mod:`engine.report.summary`); every sweep's detail follows as an appendix. fits.json also records every
figure's legend and where it sits (``legend_layout``: never over a panel's data); runs/ holds
each sweep's runs (:mod:`engine.report.snapshot`), so ``--runs`` rebuilds the report without the store.
"""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path
from typing import TextIO

from engine import metrics as M
from engine.errors import UserError
from engine.fit.result import jsonable
from engine.fit.verdict import DEFINITIONS, ORDER
from engine.paths import default_tracking_uri, reports_dir
from engine.report import snapshot
from engine.report.analyze import DEFAULT_METRICS, SweepAnalysis, analyze_sweep
from engine.report.collect import collect_sweep
from engine.report.compare import (
    comparison_blocks,
    comparison_figure_blocks,
    comparison_summary,
    panels_for,
    plot_target,
)
from engine.report.decision import decide_family, decision_blocks, pool_families
from engine.report.document import document, to_markdown
from engine.report.figures import (
    LEGEND_LAYOUTS,
    baseline_lines,
    plot_axis,
    plot_frontier,
    plot_hpo,
    plot_isoflop,
)
from engine.report.html import to_html
from engine.report.probes import plot_probes, probe_blocks, probe_summary
from engine.report.summary import summary_blocks


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def make_figures(analyses: list[SweepAnalysis], out_dir: Path
                 ) -> tuple[dict[str, str], dict[str, list[str]], dict[str, dict]]:
    """Write every PNG; returns ({key: file name}, {file name: legend labels}, {file name: where its legend sits}).

    Legends sit below the panels; the third dict (fits.json "legend_layout") says, per figure, whether the legend
    meets any panel's data area (``overlaps_data``) or leaves the figure (``inside_figure``), measured in display
    coordinates when the figure was saved (:func:`engine.report.figures.legend_layout`).

    Keys: "<sweep>|axis:<metric>:<var>", "<sweep>|frontier:<metric>", "<sweep>|isoflop:<metric>",
    "<sweep>|hpo:loss_vs_lr" and, with several sweeps, "compare:<metric>" (one figure per target).
    """
    figs: dict[str, str] = {}
    legends: dict[str, list[str]] = {}
    layouts: dict[str, dict] = {}

    def keep(key: str, name: str, labels: list[str]) -> None:
        figs[key] = name
        legends[name] = labels
        if name in LEGEND_LAYOUTS:
            layouts[name] = LEGEND_LAYOUTS.pop(name)

    def verdict(fit: dict | None) -> str | None:
        return ((fit or {}).get("verdict") or {}).get("label")

    for an in analyses:
        s = an.summary["sweep"]
        baselines = an.summary["baselines"]
        if "hpo" in an.summary:
            h = an.summary["hpo"]
            name = f"{_safe(s)}_loss_vs_lr.png"
            keep(f"{s}|hpo:loss_vs_lr", name, plot_hpo(h["trials"], h["range"], h["best"], out_dir / name))
            continue
        pr = an.summary.get("probes") or {}
        if "variable" in pr:  # physical probes beside the validation-loss law (engine.report.probes)
            var = pr["variable"]
            name = f"{_safe(s)}_probes_vs_{var}.png"
            keep(f"{s}|probes:{var}", name, plot_probes(pr, an.run_points.get(M.VAL_LOSS, {}).get(var),
                                                       an.axis_fits.get(M.VAL_LOSS, {}).get(var), out_dir / name,
                                                       verdict(an.summary["axis_fits"].get(M.VAL_LOSS, {}).get(var))))
        for metric, by_var in an.run_points.items():
            lines = baseline_lines(baselines, metric)  # parent-run metrics baseline_<name>_<metric>
            for var, (x, y) in by_var.items():
                if len(x) == 0:
                    continue
                name = f"{_safe(s)}_{metric}_vs_{var}.png"
                keep(f"{s}|axis:{metric}:{var}", name,
                     plot_axis([(s, an.axis_fits[metric].get(var), x, y)], metric, var, out_dir / name, lines,
                               verdict(an.summary["axis_fits"][metric].get(var))))
        for metric, fr in an.frontiers.items():
            name = f"{_safe(s)}_{metric}_frontier.png"
            keep(f"{s}|frontier:{metric}", name, plot_frontier([(s, an.curves[metric], fr)], metric, out_dir / name,
                                                              baseline_lines(baselines, metric),
                                                              verdict(an.summary["frontier"].get(metric))))
            profiles = fr.get("approach2", {}).get("profiles", [])
            if profiles:
                name = f"{_safe(s)}_{metric}_isoflop.png"
                keep(f"{s}|isoflop:{metric}", name, plot_isoflop(profiles, metric, out_dir / name))
    compared = [an for an in analyses if "hpo" not in an.summary]
    if len(compared) > 1:
        metrics = [m for m in DEFAULT_METRICS if any(m in an.run_points or m in an.frontiers for an in compared)]
        metrics += sorted({m for an in compared for m in an.run_points} - set(metrics))
        for metric in metrics:
            if panels_for(compared, metric):
                name = f"compare_{_safe(metric)}.png"
                keep(f"compare:{metric}", name, plot_target(compared, metric, out_dir / name))
    return figs, legends, layouts


def build_report(
    sweeps: list[str],
    tracking_uri: str | None = None,
    out_dir: Path | None = None,
    metrics: list[str] | None = None,
    n_boot: int = 500,
    seed: int = 0,
    log_to_mlflow: bool = True,
    runs: list[Path] | None = None,
) -> Path:
    """Collect, fit, plot and write the report of one sweep (or a comparison of several); returns its folder.

    ``sweeps`` are read from MLflow, then ``runs`` (runs files a report wrote, engine.report.snapshot) in
    their order. Every sweep's runs are written to ``runs/<sweep>.json`` in the folder, so the report can be
    rebuilt from the folder alone.
    """
    uri = tracking_uri or default_tracking_uri()
    data = [collect_sweep(s, uri) for s in sweeps] + [snapshot.load(p) for p in runs or []]
    if not data:
        raise UserError("name a sweep with --sweep NAME or a runs file with --runs FILE")
    names = [d.name for d in data]
    if len(set(names)) < len(names):
        raise UserError(f"a sweep is named twice ({', '.join(sorted({n for n in names if names.count(n) > 1}))}); "
                        "give each sweep once")
    analyses = [analyze_sweep(d, metrics, n_boot=n_boot, seed=seed) for d in data]
    for d, an in zip(data, analyses, strict=True):
        an.summary["runs_file"] = f"runs/{_safe(d.name)}.json"
        if "hpo" not in an.summary:
            an.summary["probes"] = jsonable(probe_summary(d.frame, d.axis))
    out = Path(out_dir) if out_dir is not None else reports_dir() / "__vs__".join(_safe(n) for n in names)
    out.mkdir(parents=True, exist_ok=True)
    for d, an in zip(data, analyses, strict=True):
        snapshot.save(d, out / an.summary["runs_file"])
    figures, legends, layouts = make_figures(analyses, out)
    fits = {
        "format": "engine-report/1",
        "generated_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "sweeps": [an.summary for an in analyses],
        "figures": figures,
        "legends": legends,
        "legend_layout": layouts,
        # each fit's "verdict" has one of these labels (engine.fit.verdict), defined here once
        "verdicts": {"order": list(ORDER), "definitions": DEFINITIONS},
    }
    # first in the report: what the next compute buys, per model family (engine.report.decision)
    decisions = [decide_family(f, n_boot=min(n_boot, 200), seed=seed) for f in pool_families(data)]
    fits["decision"] = decisions
    several = len([an for an in analyses if "hpo" not in an.summary]) > 1
    if several:
        fits["comparison"] = jsonable(comparison_summary(analyses))
    (out / "fits.json").write_text(json.dumps(fits, indent=1, ensure_ascii=False, allow_nan=False))
    probes = {s["sweep"]: probe_blocks(s, {k.split("|", 1)[1]: v for k, v in figures.items()
                                          if k.startswith(s["sweep"] + "|")}) for s in fits["sweeps"]}
    blocks = document(fits, figures, comparison_blocks(fits, figures) if several else None, extra=probes,
                      decision=decision_blocks(decisions), summary=summary_blocks(fits),
                      comparison_figures=comparison_figure_blocks(figures) if several else None)
    (out / "report.md").write_text(to_markdown(blocks))
    (out / "report.html").write_text(to_html(blocks, out))
    if log_to_mlflow:
        _log_artifacts(data, out)
    return out


def _log_artifacts(data, out: Path) -> None:
    from mlflow.tracking import MlflowClient

    for d in data:
        if d.parent_run_id and d.snapshot is None:  # a runs file's parent run lives in another store
            MlflowClient(tracking_uri=d.tracking_uri).log_artifacts(d.parent_run_id, str(out), artifact_path="report")


def report_after_sweep(name: str, tracking_uri: str, sweeps: list[str] | None = None,
                       stream: TextIO | None = None) -> str | None:
    """The report stage a sweep CLI runs last: build ``reports/<name>/`` from ``sweeps`` (default: the sweep
    ``name`` alone; ``engine.tune`` passes one search per size); returns the folder, or None on failure.

    The sweeps' runs are safe in MLflow whatever happens here, so a failure is one line, never a traceback
    that would hide the sweep's own outcome; ``python -m engine.report --sweep NAME`` rebuilds it.
    """
    stream = stream or sys.stdout
    out_dir = reports_dir() / name
    try:
        return str(build_report(sweeps=sweeps or [name], tracking_uri=tracking_uri, out_dir=out_dir))
    except Exception as exc:
        print(f"report: failed ({type(exc).__name__}: {exc}); rerun it with python -m engine.report", file=stream)
        return None
