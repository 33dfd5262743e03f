"""The report as a list of blocks generated from fits.json's dict, rendered to Markdown.

report.md and report.html are both rendered from these blocks, so they print exactly the numbers in
fits.json (formatted by :func:`engine.report.analyze.fmt`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from engine.report.analyze import fmt
from engine.report.figures import metric_label


@dataclass
class Block:
    kind: str  # h1 | h2 | h3 | p | table | img
    text: str = ""
    header: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)


def _ci(ci) -> str:
    if not ci or ci[0] is None:
        return "—"
    return f"[{fmt(ci[0])}, {fmt(ci[1])}]"


def _params_cell(fit: dict) -> str:
    return "; ".join(f"{k} = {fmt(v)} {_ci(fit['ci95'].get(k))}" for k, v in fit["params"].items())


def _na(d: dict) -> str:
    return f"not available: {d['not_available']}"


def axis_blocks(summary: dict, figures: dict[str, str]) -> list[Block]:
    blocks: list[Block] = []
    for metric, by_var in summary["axis_fits"].items():
        for var, fit in by_var.items():
            blocks.append(Block("h3", f"{metric} vs {var}"))
            if "not_available" in fit:
                blocks.append(Block("p", _na(fit)))
                continue
            rows = []
            for form, f in fit["fits"].items():
                mark = " (chosen)" if form == fit["chosen"] else ""
                rows.append([f["formula"] + mark, _params_cell(f), fmt(f["r2_log"]), fmt(f["rmse_log"]),
                             fmt(fit["loo_rmse_log"].get(form)), f"{f['n_points']} / {f['n_runs']}"])
            for form, why in fit["unavailable"].items():
                rows.append([form, _na({"not_available": why}), "—", "—", "—", "—"])
            blocks.append(Block("table", header=["form", "parameters [95 % CI]", "R² (log)", "RMSE (log)",
                                                  "LOO RMSE (log)", "points / runs"], rows=rows))
            blocks.append(Block("p", f"Form: {fit['choice']}."))
            ex = fit.get("extrapolation") or {}
            if "predicted" in ex:
                verdict = "inside" if ex["inside"] else "OUTSIDE"
                blocks.append(Block("p", (
                    f"Extrapolation check: refit without the largest {var} ({fmt(ex['held_out'])}, "
                    f"{ex['n_runs_held_out']} runs) on {ex['n_points_fitted']} points predicts "
                    f"{fmt(ex['predicted'])} {_ci(ex['ci95'])}; observed {fmt(ex['observed'])} "
                    f"({verdict} the interval, relative error {fmt(ex['rel_error'], 3)}).")))
            elif "not_available" in ex:
                blocks.append(Block("p", f"Extrapolation check {_na(ex)}."))
            fit_m = next(iter(fit["fits"].values()), {})
            if fit_m:
                blocks.append(Block("p", f"Method: {fit['fits'][fit['chosen']]['method']}."))
            key = f"axis:{metric}:{var}"
            if key in figures:
                blocks.append(Block("img", figures[key], header=[f"{metric_label(metric)} vs {var}"]))
    return blocks


def frontier_blocks(summary: dict, figures: dict[str, str]) -> list[Block]:
    blocks: list[Block] = []
    for metric, fr in summary["frontier"].items():
        blocks.append(Block("h3", f"compute frontier: {metric}"))
        if "not_available" in fr:
            blocks.append(Block("p", _na(fr)))
            continue
        law = fr["law"]
        if "not_available" in law:
            blocks.append(Block("p", f"L(C) {_na(law)}."))
        else:
            blocks.append(Block("table", header=["law", "parameters [95 % CI]", "R² (log)", "frontier points", "runs"],
                                rows=[[law["formula"], _params_cell(law), fmt(law["r2_log"]), str(law["n_points"]),
                                       str(fr["n_runs"])]]))
            blocks.append(Block("p", f"Method: {law['method']}."))
        for key, cap in ((f"frontier:{metric}", "frontier"), (f"isoflop:{metric}", "IsoFLOP profiles")):
            if key in figures:
                blocks.append(Block("img", figures[key], header=[f"{cap}: {metric}"]))
    return blocks


def _exp_cell(d: dict, key: str) -> str:
    if key not in d:
        return _na(d) if "not_available" in d else "—"
    return f"{fmt(d[key])} {_ci(d.get('ci95', {}).get(key))}"


def allocation_blocks(summary: dict) -> list[Block]:
    al = summary.get("allocation") or {}
    if not al:
        return [Block("p", "not available: no metric to allocate compute by")]
    rows = [
        ["1: frontier runs", _exp_cell(al["approach1"], "x_n_opt"),
         _exp_cell(al["approach1"], "y_samples_seen") if "x_n_opt" in al["approach1"] else "—"],
        ["2: IsoFLOP minima", _exp_cell(al["approach2"], "x_n_opt"), "—"],
        ["3: joint law b/(a+b), a/(a+b)", _exp_cell(al["approach3"], "x_n_opt"),
         _exp_cell(al["approach3"], "y_d_opt") if "x_n_opt" in al["approach3"] else "—"],
    ]
    return [
        Block("p", f"Compute-optimal allocation on {al['metric']} (Hoffmann et al. 2022): N_opt ∝ C^x, "
                   "D_opt ∝ C^y; approach 1's y is for structures processed (epochs × training-set size)."),
        Block("table", header=["approach", "x (N_opt ∝ C^x) [95 % CI]", "y [95 % CI]"], rows=rows),
    ]


def joint_blocks(summary: dict) -> list[Block]:
    rows, notes = [], []
    for metric, jf in summary["joint"].items():
        if "not_available" in jf:
            rows.append([metric, _na(jf), "—", "—"])
            continue
        rows.append([metric, _params_cell(jf), fmt(jf["r2_log"]), f"{jf['n_points']} / {jf['n_runs']}"])
        ex = jf.get("extrapolation") or {}
        if "predicted" in ex:
            verdict = "inside" if ex["inside"] else "OUTSIDE"
            notes.append(Block("p", (
                f"{metric}: refit without the largest N predicts {fmt(ex['predicted'])} {_ci(ex['ci95'])} at "
                f"(N, D) = ({fmt(ex['held_out'][0])}, {fmt(ex['held_out'][1])}); observed {fmt(ex['observed'])} "
                f"({verdict} the interval).")))
        elif "not_available" in ex:
            notes.append(Block("p", f"{metric}: extrapolation check {_na(ex)}."))
    return [Block("table", header=["metric", "L = E + A/N^a + B/D^b [95 % CI]", "R² (log)", "points / runs"],
                  rows=rows), *notes]


def reference_blocks(summary: dict) -> list[Block]:
    ref = summary["seed_paper"]
    rows = [[var, fmt(v["alpha"]), fmt(v["beta"])] for var, v in ref["fits"].items()]
    blocks = [
        Block("p", f"Seed paper reference: {ref['source']}; {ref['note']}."),
        Block("table", header=["variable", "α", "β"], rows=rows),
        Block("p", "Seed paper naive baselines (total validation loss on OMat24): "
                   + ", ".join(f"{k} {fmt(v)}" for k, v in ref["naive_val_loss"].items()) + "."),
    ]
    if summary["baselines"]:
        blocks.append(Block("p", "Naive baselines logged with this sweep: "
                                 + ", ".join(f"{k} {fmt(v)}" for k, v in sorted(summary["baselines"].items())) + "."))
    return blocks


def sweep_blocks(summary: dict, figures: dict[str, str]) -> list[Block]:
    status = ", ".join(f"{k} {v}" for k, v in sorted(summary["status_counts"].items()))
    blocks = [
        Block("h2", f"Sweep {summary['sweep']} (axis: {summary['axis']})"),
        Block("p", (f"{summary['n_trials']} trials ({status}); models: {', '.join(summary['models']) or '—'}; "
                    f"MLflow: {summary['tracking_uri']}, parent run {summary['parent_run_id']}. "
                    f"Bootstrap: {summary['n_boot']} resamples over runs, seed {summary['bootstrap_seed']}.")),
    ]
    if summary["metrics_missing"]:
        blocks.append(Block("p", "Metrics not logged by this sweep: " + ", ".join(summary["metrics_missing"]) + "."))
    blocks.append(Block("h2", "Per-axis scaling laws"))
    blocks += axis_blocks(summary, figures) or [Block("p", "not available: no per-axis fit for this axis")]
    blocks.append(Block("h2", "Compute frontier"))
    blocks += frontier_blocks(summary, figures)
    blocks.append(Block("h2", "Joint law L(N, D)"))
    blocks += joint_blocks(summary)
    blocks.append(Block("h2", "Where should the next FLOP go?"))
    blocks += allocation_blocks(summary)
    blocks.append(Block("h2", "Reference"))
    blocks += reference_blocks(summary)
    return blocks


def comparison_blocks(fits: dict, figures: dict[str, str]) -> list[Block]:
    """Side-by-side exponents of several sweeps (e.g. transformer vs EquiformerV2)."""
    names = [s["sweep"] for s in fits["sweeps"]]
    rows = []
    keys = sorted({(m, v) for s in fits["sweeps"] for m, bv in s["axis_fits"].items() for v in bv})
    for metric, var in keys:
        row = [f"{metric} vs {var}"]
        for s in fits["sweeps"]:
            f = s["axis_fits"].get(metric, {}).get(var, {})
            if "fits" in f and f["chosen"]:
                c = f["fits"][f["chosen"]]
                row.append(f"β = {fmt(c['params']['beta'])} {_ci(c['ci95']['beta'])} ({c['formula']})")
            else:
                row.append(_na(f) if "not_available" in f else "—")
        rows.append(row)
    for metric in sorted({m for s in fits["sweeps"] for m in s["frontier"]}):
        row = [f"{metric} vs C (frontier)"]
        for s in fits["sweeps"]:
            law = s["frontier"].get(metric, {}).get("law", {})
            row.append(f"β = {fmt(law['params']['beta'])} {_ci(law['ci95']['beta'])}" if "params" in law else "—")
        rows.append(row)
    blocks = [Block("h2", "Comparison"), Block("table", header=["fit", *names], rows=rows)]
    for key, path in figures.items():
        if key.startswith("compare:"):
            blocks.append(Block("img", path, header=[key.split(":", 1)[1]]))
    return blocks


def document(fits: dict, figures: dict[str, str]) -> list[Block]:
    """All blocks of a report: a comparison first when there are several sweeps, then each sweep."""
    title = "Scaling report: " + " vs ".join(s["sweep"] for s in fits["sweeps"])
    blocks = [Block("h1", title), Block("p", f"Generated {fits['generated_utc']} by `python -m engine.report`; "
                                              "every number below is in fits.json.")]
    if len(fits["sweeps"]) > 1:
        blocks += comparison_blocks(fits, figures)
    for s in fits["sweeps"]:
        blocks += sweep_blocks(s, {k.split("|", 1)[1]: v for k, v in figures.items() if k.startswith(s["sweep"] + "|")})
    return blocks


def to_markdown(blocks: list[Block]) -> str:
    out = []
    for b in blocks:
        if b.kind in ("h1", "h2", "h3"):
            out.append("#" * int(b.kind[1]) + " " + b.text)
        elif b.kind == "p":
            out.append(b.text)
        elif b.kind == "table":
            out.append("| " + " | ".join(b.header) + " |")
            out.append("|" + "---|" * len(b.header))
            out += ["| " + " | ".join(r) + " |" for r in b.rows]
        elif b.kind == "img":
            out.append(f"![{b.header[0]}]({b.text})")
        out.append("")
    return "\n".join(out)
