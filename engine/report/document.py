"""The report as a list of blocks generated from fits.json's dict, rendered to Markdown.

report.md and report.html are both rendered from these blocks, so they print exactly the numbers in
fits.json (formatted by :func:`engine.report.analyze.fmt`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from engine import metrics as M
from engine.fit.extrapolate import MIN_RESIDUAL_DOF, NOT_A_TEST
from engine.fit.trust import NOT_IDENTIFIED, UNRELIABLE
from engine.fit.verdict import DEFINITIONS, LAW, ORDER
from engine.report.analyze import fmt
from engine.report.figures import metric_label


@dataclass
class Block:
    kind: str  # h1 | h2 | h3 | h4 | p | table | img
    text: str = ""
    header: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)


def _ci(ci) -> str:
    if not ci or ci[0] is None:
        return "—"
    return f"[{fmt(ci[0])}, {fmt(ci[1])}]"


def _params_cell(fit: dict, flagged_below: bool = True) -> str:
    """Parameters with intervals; one the runs do not identify is named as such, not quoted as a value.

    An interval that cannot be trusted is not quoted: the cell says why, or points to the flag block below
    the table (``flagged_below``: the fit whose flags the section prints)."""
    unident = fit.get("not_identified") or {}
    unreliable = fit.get("interval_unreliable") or {}
    cells = []
    for k, v in fit["params"].items():
        if k in unident:
            cells.append(f"{k}: {NOT_IDENTIFIED} (estimate {fmt(v)}; {unident[k]})")
        elif k in unreliable:  # the estimate without its interval
            cells.append(f"{k} = {fmt(v)} ({UNRELIABLE}: {'see below' if flagged_below else unreliable[k]})")
        else:
            cells.append(f"{k} = {fmt(v)} {_ci(fit['ci95'].get(k))}")
    return "; ".join(cells)


SYMBOLS = {"beta": "β", "a": "a", "b": "b"}
VERDICT_HEADER = ["verdict", "law exponent [95 % CI]", "estimate (not a law)", "points / fewest seeds", "decades",
                  "R² (log)", "extrapolation check", "why / what is missing for a law"]


def verdict_definitions() -> Block:
    """The four labels, defined once per report."""
    return Block("p", "Verdicts (one per fit): " + "; ".join(f"*{k}*: {DEFINITIONS[k]}" for k in ORDER) + ".")


def exponent_cells(v: dict) -> tuple[str, str]:
    """(law exponent with its interval, estimate): only a *law* fills the first; the others the second."""
    parts = []
    for k, e in (v.get("estimate") or {}).items():
        sym = SYMBOLS.get(k, k)
        parts.append((f"{sym} = {fmt(e.get('value'))} {_ci(e.get('ci95'))}", f"{sym} ≈ {fmt(e.get('value'))}"))
    if not parts:
        return "—", "—"
    if v["label"] == LAW:
        return "; ".join(p[0] for p in parts), "—"
    return "—", "; ".join(p[1] for p in parts)


def verdict_cells(v: dict) -> list[str]:
    """One verdict as the cells of :data:`VERDICT_HEADER`."""
    law, est = exponent_cells(v)
    dec = v.get("decades")
    decades = (", ".join(f"{k} {fmt(d, 2)}" for k, d in dec.items()) if isinstance(dec, dict) else fmt(dec, 2))
    return [f"**{v['label']}**", law, est, f"{v.get('n_points')} / {v.get('min_seeds')}", decades,
            fmt(v.get("r2_log"), 3), v.get("check") or "—", "; ".join(v.get("reasons") or []) or "—"]


def verdict_table(v: dict | None) -> list[Block]:
    return [Block("table", header=VERDICT_HEADER, rows=[verdict_cells(v)])] if v else []


def _flag_block(flags: list[str], what: str) -> list[Block]:
    if not flags:
        return []
    return [Block("p", f"Do not read {what} as a law: " + "; ".join(flags) + ".")]


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
            blocks += verdict_table(fit.get("verdict"))
            rows = []
            for form, f in fit["fits"].items():
                chosen = form == fit["chosen"]
                rows.append([f["formula"] + (" (chosen)" if chosen else ""), _params_cell(f, chosen),
                             fmt(f["r2_log"]), fmt(f["rmse_log"]), fmt(fit["loo_rmse_log"].get(form)),
                             f"{f['n_points']} / {f['n_runs']}"])
            for form, why in fit["unavailable"].items():
                rows.append([form, _na({"not_available": why}), "—", "—", "—", "—"])
            blocks.append(Block("table", header=["form", "parameters [95 % CI]", "R² (log)", "RMSE (log)",
                                                  "LOO RMSE (log)", "points / runs"], rows=rows))
            blocks.append(Block("p", f"Form: {fit['choice']}."))
            blocks += _flag_block(fit.get("flags") or [], "this fit")
            ex = fit.get("extrapolation") or {}
            if "predicted" in ex:
                blocks.append(Block("p", _extrapolation_text(ex, var)))
            elif "not_available" in ex:
                blocks.append(Block("p", f"Extrapolation check {_na(ex)}."))
            fit_m = next(iter(fit["fits"].values()), {})
            if fit_m:
                blocks.append(Block("p", f"Method: {fit['fits'][fit['chosen']]['method']}."))
            key = f"axis:{metric}:{var}"
            if key in figures:
                blocks.append(Block("img", figures[key], header=[f"{metric_label(metric)} vs {var}"]))
    return blocks


def _check_prefix(ex: dict) -> str:
    """"Extrapolation check" with its verdict: "not a test" when the refit has < 2 residual degrees of freedom."""
    v, dof = ex.get("verdict"), ex.get("residual_dof")
    if v == NOT_A_TEST:
        return (f"Extrapolation check, {NOT_A_TEST} (the refit has {dof} residual degree{'s' if dof != 1 else ''} of "
                f"freedom; a check needs ≥ {MIN_RESIDUAL_DOF}, else its interval cannot miss)")
    return f"Extrapolation check ({v})" if v else "Extrapolation check"


def _extrapolation_text(ex: dict, var: str) -> str:
    verdict = "inside" if ex["inside"] else "OUTSIDE"
    sc = ex.get("scatter") or {}
    scatter = (f"the scatter of seeds at a point, σ(log L) = {fmt(sc.get('sigma_log'), 3)}"
               if sc.get("source") == "seeds" else
               f"the residual scatter, σ(log L) = {fmt(sc.get('sigma_log'), 3)} (one run per point)")
    flagged = ex.get("fit_flags") or []
    refit = f" The refit's own flags: {'; '.join(flagged)}." if flagged else ""
    return (f"{_check_prefix(ex)}: refit without the largest {var} ({fmt(ex['held_out'])}, "
            f"{ex['n_runs_held_out']} runs) on {ex['n_points_fitted']} points predicts {fmt(ex['predicted'])}, "
            f"95 % prediction interval {_ci(ex.get('pi95'))} (curve {_ci(ex['ci95'])} plus {scatter}); "
            f"observed {fmt(ex['observed'])} ({verdict} the prediction interval, relative error "
            f"{fmt(ex['rel_error'], 3)}).{refit}")


def frontier_blocks(summary: dict, figures: dict[str, str]) -> list[Block]:
    blocks: list[Block] = []
    for metric, fr in summary["frontier"].items():
        blocks.append(Block("h3", f"compute frontier: {metric}"))
        if "not_available" in fr:
            blocks.append(Block("p", _na(fr)))
            continue
        law = fr["law"]
        blocks += verdict_table(fr.get("verdict"))
        if "not_available" in law:
            blocks.append(Block("p", f"L(C) {_na(law)}."))
        else:
            sizes = f" / {fr['n_sizes']}" if fr.get("n_sizes") is not None else ""
            blocks.append(Block("table", header=["law", "parameters [95 % CI]", "R² (log)", "frontier points",
                                                 "runs" + (" / sizes" if sizes else "")],
                                rows=[[law["formula"], _params_cell(law), fmt(law["r2_log"]), str(law["n_points"]),
                                       f"{fr['n_runs']}{sizes}"]]))
            blocks.append(Block("p", "Frontier: the lower envelope over sizes of seed-mean curves (seeds of one "
                                     "size averaged as mean log FLOPs and mean log L at each report key they all "
                                     "reached), not over single runs, whose envelope follows the luckiest seed."))
            blocks.append(Block("p", f"Method: {law['method']}."))
            blocks += _flag_block(law.get("flags") or [], "L(C)")
            ex = law.get("extrapolation") or {}
            if "predicted" in ex:
                blocks.append(Block("p", (
                    f"{_check_prefix(ex)}: L(C) refit on the {ex['n_points_fitted']} frontier points below the size "
                    f"that holds the largest budget ({ex['n_points_held_out']} points held out) predicts "
                    f"{fmt(ex['predicted'])} at C = {fmt(ex['held_out'])}, where that size joins the frontier "
                    "(past it the ladder, not the law, bounds the envelope), 95 % prediction interval "
                    f"{_ci(ex.get('pi95'))}; observed {fmt(ex['observed'])}.")))
            elif "not_available" in ex:
                blocks.append(Block("p", f"Extrapolation check of L(C) {_na(ex)}."))
        blocks += annealed_blocks(summary.get("annealed") or {})
        for key, cap in ((f"frontier:{metric}", "frontier"), (f"isoflop:{metric}", "IsoFLOP profiles")):
            if key in figures:
                blocks.append(Block("img", figures[key], header=[f"{cap}: {metric}"]))
    return blocks


def annealed_blocks(ann: dict) -> list[Block]:
    """Which points the frontier is built from: annealed ones only (rung reports, or final points)."""
    if ann.get("rungs"):
        txt = (f"Annealed points only: {ann['n_rung_reports']} rung reports of {ann['n_runs']} runs, each scored "
               "after a cooldown branch (warmup–stable–decay, Hägele et al. 2024)")
        if "max_lr_end_over_peak" in ann:
            txt += f"; the LR at the end of every cooldown is ≤ {fmt(ann['max_lr_end_over_peak'], 3)} × peak"
        return [Block("p", txt + ".")]
    if ann.get("final_points_only"):
        left = ann.get("n_runs_left_out") or 0
        return [Block("p", (
            f"Annealed points only: the final report of each of the {ann['n_runs']} runs that trained to the end of "
            "their schedule (its learning rate annealed); intermediate reports of a run, whose learning rate was "
            "not annealed, overstate the loss at their budget (Hoffmann et al. 2022) and are left out"
            + (f", as are the {left} runs stopped before the end of their schedule" if left else "") + "."))]
    return []


def _exp_cell(d: dict, key: str) -> str:
    if key not in d:
        return _na(d) if "not_available" in d else "—"
    why = (d.get("interval_unreliable") or {}).get(key)
    if why:
        return f"{fmt(d[key])} ({UNRELIABLE}: {why})"
    return f"{fmt(d[key])} {_ci(d.get('ci95', {}).get(key))}"


def allocation_blocks(summary: dict) -> list[Block]:
    al = summary.get("allocation") or {}
    if not al:
        return [Block("p", "not available: no metric to allocate compute by")]
    rows = [
        ["1: sizes on the seed-mean frontier", _exp_cell(al["approach1"], "x_n_opt"),
         _exp_cell(al["approach1"], "y_samples_seen") if "x_n_opt" in al["approach1"] else "—"],
        ["2: IsoFLOP minima", _exp_cell(al["approach2"], "x_n_opt"), "—"],
        ["3: joint law b/(a+b), a/(a+b)", _exp_cell(al["approach3"], "x_n_opt"),
         _exp_cell(al["approach3"], "y_d_opt") if "x_n_opt" in al["approach3"] else "—"],
    ]
    blocks = [
        Block("p", f"Compute-optimal allocation on {al['metric']} (Hoffmann et al. 2022): N_opt ∝ C^x, "
                   "D_opt ∝ C^y; approach 1's y is for structures processed (epochs run × training-set size)."),
        Block("table", header=["approach", "x (N_opt ∝ C^x) [95 % CI]", "y [95 % CI]"], rows=rows),
    ]
    note = al["approach1"].get("ladder_note")
    if note:
        blocks.append(Block("p", f"Approach 1: {note}; extend the ladder past that end before reading N_opt "
                                 "at those budgets."))
    return blocks


def joint_blocks(summary: dict) -> list[Block]:
    rows, notes = [], []
    for metric, jf in summary["joint"].items():
        if "not_available" in jf:
            rows.append([metric, "—", _na(jf), "—", "—", "—"])
            continue
        v = jf.get("verdict") or {}
        rows.append([metric, f"**{v['label']}**" if v else "—", _params_cell(jf), fmt(jf["r2_log"]),
                     f"{jf['n_points']} / {jf['n_runs']}", "; ".join(v.get("reasons") or []) or "—"])
        if jf.get("flags"):
            notes += _flag_block(jf["flags"], f"the joint law of {metric}")
        ex = jf.get("extrapolation") or {}
        if "predicted" in ex:
            verdict = "inside" if ex["inside"] else "OUTSIDE"
            check = _check_prefix(ex)
            notes.append(Block("p", (
                f"{metric}: {check[0].lower()}{check[1:]}: refit without the largest N predicts "
                f"{fmt(ex['predicted'])}, 95 % prediction interval "
                f"{_ci(ex.get('pi95'))} (curve {_ci(ex['ci95'])}) at (N, D) = ({fmt(ex['held_out'][0])}, "
                f"{fmt(ex['held_out'][1])}); observed {fmt(ex['observed'])} ({verdict} the prediction interval).")))
        elif "not_available" in ex:
            notes.append(Block("p", f"{metric}: extrapolation check {_na(ex)}."))
    return [Block("table", header=["metric", "verdict", "L = E + A/N^a + B/D^b (fit detail) [95 % CI]", "R² (log)",
                                   "points / runs", "why / what is missing for a law"], rows=rows), *notes]


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
        blocks += baseline_blocks(summary["baselines"], summary.get("metrics") or [])
    return blocks


def baseline_blocks(baselines: dict[str, float], metrics: list[str]) -> list[Block]:
    """The sweep's naive baselines (parent-run ``baseline_<name>_<metric>``) as a name × metric table."""
    names: dict[str, dict[str, float]] = {}
    other = {}
    for key, value in baselines.items():
        cut = min((i for i in (key.find("_val_"), key.find("_test_")) if i > len("baseline")), default=-1)
        if not key.startswith("baseline_") or cut < 0:
            other[key] = value
            continue
        names.setdefault(key[len("baseline_"):cut].replace("_", " "), {})[key[cut + 1:]] = value
    found = {m for v in names.values() for m in v}
    cols = [m for m in metrics if m in found] + sorted(found - set(metrics))
    blocks = [Block("p", "Naive baselines on this sweep's own validation set (parent-run metrics "
                         "baseline_<name>_<metric>; dotted reference lines in the plots of that metric):")]
    if names:
        blocks.append(Block("table", header=["baseline", *cols],
                            rows=[[n, *[fmt(v.get(m)) for m in cols]] for n, v in sorted(names.items())]))
    if other:
        blocks.append(Block("p", "Other baseline metrics: "
                                 + ", ".join(f"{k} {fmt(v)}" for k, v in sorted(other.items())) + "."))
    return blocks


def _demote(blocks: list[Block]) -> list[Block]:
    """Headings one level down (h2 → h3, h3 → h4): a sweep's sections sit under its appendix heading."""
    return [Block({"h2": "h3", "h3": "h4"}.get(b.kind, b.kind), b.text, b.header, b.rows) for b in blocks]


def sweep_blocks(summary: dict, figures: dict[str, str], extra: list[Block] | None = None) -> list[Block]:
    """One sweep's appendix: its protocol, every fit with its figure, the joint law, allocation, reference, trials."""
    return [Block("h2", f"Appendix: sweep {summary['sweep']} (axis: {summary['axis']})"),
            *_demote(_sweep_sections(summary, figures, extra))]


def _sweep_sections(summary: dict, figures: dict[str, str], extra: list[Block] | None = None) -> list[Block]:
    status = ", ".join(f"{k} {v}" for k, v in sorted(summary["status_counts"].items()))
    blocks = [
        Block("p", (f"{summary['n_trials']} trials ({status}); models: {', '.join(summary['models']) or '—'}; "
                    f"MLflow: {summary['tracking_uri']}, parent run {summary['parent_run_id']}"
                    + (f"; runs: {summary['runs_file']}. " if summary.get("runs_file") else ". ")
                    + f"Bootstrap: {summary['n_boot']} resamples over runs, seed {summary['bootstrap_seed']}.")),
    ]
    if summary["metrics_missing"]:
        blocks.append(Block("p", "Metrics not logged by this sweep: " + ", ".join(summary["metrics_missing"]) + "."))
    if "hpo" in summary:
        return blocks + hpo_blocks(summary, figures)
    blocks += protocol_blocks(summary)
    blocks.append(Block("h2", "Per-axis scaling laws"))
    blocks += axis_blocks(summary, figures) or [Block("p", "not available: no per-axis fit for this axis")]
    blocks += extra or []  # beside the laws: the physical probes (engine.report.probes)
    blocks.append(Block("h2", "Compute frontier"))
    blocks += frontier_blocks(summary, figures)
    blocks.append(Block("h2", "Joint law L(N, D)"))
    blocks += joint_blocks(summary)
    blocks.append(Block("h2", "Where should the next FLOP go?"))
    blocks += allocation_blocks(summary)
    blocks.append(Block("h2", "Reference"))
    blocks += reference_blocks(summary)
    blocks.append(Block("h2", "Trials"))
    blocks += trial_blocks(summary)
    return blocks


def protocol_blocks(summary: dict) -> list[Block]:
    """The budget rule, the learning rates the trials used, and the diverged runs left out of the fits."""
    blocks = []
    trials = summary.get("trials") or []
    rule = summary.get("budget_rule")
    epochs = [fmt(e, 3) for e in sorted({t[M.EPOCHS_RUN] for t in trials if t.get(M.EPOCHS_RUN) is not None})]
    if rule:
        blocks.append(Block("p", f"Budget rule: {rule}. Epochs each trial ran (passes over its training subset): "
                                 f"{', '.join(epochs) or '—'}; per trial in the Trials table."))
    else:
        blocks.append(Block("p", "Budget rule: not logged by this sweep (no parent-run param budget_rule); epochs "
                                 "each trial ran are in the Trials table."))
    by_size: dict[str, set] = {}
    for t in trials:
        by_size.setdefault(str(t["preset"]), set()).add(fmt(t["peak_lr"], 3))
    lrs = "; ".join(f"{p}: {', '.join(sorted(v))}" for p, v in by_size.items())
    source = f" (tuned per size by engine.tune sweep {summary['lr_from']})" if summary.get("lr_from") else ""
    blocks.append(Block("p", f"Peak learning rate per size{source}: {lrs or '—'}."))
    div = summary.get("diverged") or []
    if div:
        items = [f"{d['trial_id']} ({d['preset']}, N = {fmt(d[M.N_PARAMS])}, D = {fmt(d[M.TRAIN_SIZE])}, seed "
                 f"{fmt(d['seed'])}, lr {fmt(d['peak_lr'], 3)}) at epoch {fmt(d[M.DIVERGED_EPOCH])}" for d in div]
        blocks.append(Block("p", f"Diverged runs, excluded from every fit ({len(div)}): " + "; ".join(items) + "."))
    return blocks


def trial_blocks(summary: dict) -> list[Block]:
    """Every trial: identity, peak LR, batch size, epochs run, status, final validation and test values."""
    trials = summary.get("trials") or []
    metrics = summary.get("metrics") or []
    if not trials:
        return [Block("p", "not available: no trials")]
    header = ["trial", "size", "N", "D", "seed", "peak LR", "batch", "epochs run", "status",
              *[f"{m} (val / test)" for m in metrics]]
    rows = []
    for t in trials:
        vals = [f"{fmt(t['final'].get(m))} / {fmt(t['test'].get(m))}" for m in metrics]
        rows.append([t["trial_id"], str(t["preset"]), fmt(t[M.N_PARAMS]), fmt(t[M.TRAIN_SIZE]), fmt(t["seed"]),
                     fmt(t["peak_lr"], 3), fmt(t["batch_size"]), fmt(t[M.EPOCHS_RUN], 3), str(t["status"]), *vals])
    return [Block("p", "Final values: the last report of each trial (validation), and its final weights on the "
                       "test split (test_* metrics; — when the trial logged none)."),
            Block("table", header=header, rows=rows)]


def hpo_blocks(summary: dict, figures: dict[str, str]) -> list[Block]:
    """A tuning sweep: the best value per size with edge warnings, the trials, loss against LR."""
    h = summary["hpo"]
    rng = h["range"]
    blocks = [Block("h2", "Tuning result"),
              Block("p", f"Searched: peak LR in [{fmt(rng['lr_min'], 3)}, {fmt(rng['lr_max'], 3)}] (log-uniform), "
                         f"batch sizes {rng['batch_sizes'] or '—'}. A search is not a scaling law: no law and no "
                         "compute frontier is fitted here.")]
    rows, warnings = [], []
    for preset, b in h["best"].items():
        if "not_available" in b:
            rows.append([preset, _na(b), "—", "—", "—"])
            continue
        rows.append([preset, fmt(b["peak_lr"], 3), fmt(b["batch_size"]), fmt(b[M.VAL_LOSS]), b["trial_id"]])
        warnings += [f"{preset}: {w}" for w in b["warnings"]]
    blocks.append(Block("table", header=["size", "best peak LR", "batch size", "val_loss", "trial"], rows=rows))
    if warnings:
        blocks.append(Block("p", "Warning: " + "; ".join(warnings) + "."))
    blocks.append(Block("h3", "Trials (learning rate × batch size → final validation loss)"))
    blocks.append(Block("table", header=["trial", "size", "peak LR", "batch size", "epochs", "val_loss", "status"],
                        rows=[[t["trial_id"], str(t["preset"]), fmt(t["peak_lr"], 3), fmt(t["batch_size"]),
                               fmt(t[M.EPOCH], 3), fmt(t[M.VAL_LOSS]), str(t["status"])] for t in h["trials"]]))
    if "hpo:loss_vs_lr" in figures:
        blocks.append(Block("img", figures["hpo:loss_vs_lr"], header=["validation loss vs peak learning rate"]))
    return blocks


def family_label(summary: dict) -> str:
    """A sweep's family as the decision section names it: its model(s) and size ladders ("transformer t-ladder")."""
    ladders = sorted({str(t.get("preset") or "").rstrip("0123456789") for t in summary.get("trials") or []} - {""})
    return " ".join([*sorted(summary.get("models") or []), *(f"{x}-ladder" for x in ladders)]) or summary["sweep"]


def document(fits: dict, figures: dict[str, str], comparison: list[Block] | None = None,
             extra: dict[str, list[Block]] | None = None, decision: list[Block] | None = None,
             summary: list[Block] | None = None, comparison_figures: list[Block] | None = None) -> list[Block]:
    """All blocks of a report, the page a researcher reads first, then appendices: the ``decision`` section (what
    the next compute buys, engine.report.decision), the ``summary`` table (engine.report.summary), the verdicts'
    definitions, the ``comparison_figures`` (several sweeps); then the appendices: the ``comparison`` table and
    each sweep (with its ``extra`` blocks after its per-axis laws, its trials last)."""
    names = [s["sweep"] for s in fits["sweeps"]]
    if len(names) <= 2:
        title, listed = "Scaling report: " + " vs ".join(names), ""
    else:  # nine sweep names fill a screen: the title names the families, the line below the sweeps
        fams = list(dict.fromkeys(family_label(s) for s in fits["sweeps"]))
        title = f"Scaling report: {len(names)} sweeps of {len(fams)} famil{'ies' if len(fams) != 1 else 'y'} " \
                f"({', '.join(fams)})"
        listed = f"Sweeps: {', '.join(names)}. "
    blocks = [Block("h1", title), Block("p", f"{listed}Generated {fits['generated_utc']} by `python -m engine.report`; "
                                              "every number below is in fits.json.")]
    blocks += decision or []
    blocks += summary or []
    blocks.append(verdict_definitions())
    blocks += comparison_figures or []
    blocks += comparison or []
    for s in fits["sweeps"]:
        blocks += sweep_blocks(s, {k.split("|", 1)[1]: v for k, v in figures.items() if k.startswith(s["sweep"] + "|")},
                               (extra or {}).get(s["sweep"]))
    return blocks


def to_markdown(blocks: list[Block]) -> str:
    out = []
    for b in blocks:
        if b.kind in ("h1", "h2", "h3", "h4"):
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
