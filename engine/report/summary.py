"""The report's one summary table: per model family and target, the verdict of each scale variable's fit.

It follows the decision section on the report's first screen: one row per (family, target), one column per scale
variable (N from a params sweep, D from a data sweep, C from a compute sweep's frontier), each cell the fit's
verdict label (:mod:`engine.fit.verdict`), its exponent with the 95 % interval only for a *law* (otherwise the
estimate, marked as not a law), and the points and seeds behind it. Every other number is in the appendices.
"""

from __future__ import annotations

from engine import metrics as M
from engine.fit.verdict import LAW
from engine.report.analyze import fmt
from engine.report.document import Block, family_label

TARGETS = {
    M.VAL_LOSS: "validation loss",
    f"val_{M.ENERGY_MAE}": "energy MAE",
    f"val_{M.FORCES_MAE}": "force MAE",
    f"val_{M.STRESS_MAE}": "stress MAE",
}
# scale variable → (column header, the sweep axis whose fit the cell shows first)
COLUMNS = {
    M.N_PARAMS: ("vs N (params sweep)", "params"),
    M.TRAIN_SIZE: ("vs D (data sweep)", "data"),
    M.FLOPS_CUM: ("vs C (compute frontier)", "compute"),
}
SYMBOLS = {"beta": "β"}


def verdict_cell(fit: dict | None) -> str:
    """"**law** β = 0.431 [0.16, 0.49]; 5 pts × 1 seed", or "**plateau** β ≈ 0.001 (est.); 4 pts × 2 seeds": only a
    law's exponent with its interval, any other estimate to two digits and marked."""
    if not fit:
        return "—"
    if "not_available" in fit:
        return "not available"
    v = fit.get("verdict")
    if not v:
        law = fit.get("law") or {}
        return "not available" if "not_available" in law else "—"
    parts = []
    for k, e in (v.get("estimate") or {}).items():
        sym = SYMBOLS.get(k, k)
        if e.get("value") is None:
            continue
        if v["label"] == LAW:
            ci = e.get("ci95")
            parts.append(f"{sym} = {fmt(e['value'])}" + (f" [{fmt(ci[0])}, {fmt(ci[1])}]" if ci and ci[0] is not None
                                                          else ""))
        else:
            parts.append(f"{sym} ≈ {fmt(e['value'], 2)} (est.)")
    n, seeds = v.get("n_points"), v.get("min_seeds")
    support = f"{n} pt{'s' if n != 1 else ''} × {seeds} seed{'s' if seeds != 1 else ''}"
    return " ".join([f"**{v['label']}**", *parts]) + f"; {support}"


def _pick(candidates: list[tuple[dict, dict]], axis: str) -> tuple[dict, dict, int] | None:
    """The fit shown for one cell: the first sweep on the cell's own axis, else the first sweep with the fit;
    with how many other sweeps of the family have one."""
    if not candidates:
        return None
    own = [c for c in candidates if c[0].get("axis") == axis]
    s, fit = (own or candidates)[0]
    return s, fit, len(candidates) - 1


def summary_blocks(fits: dict) -> list[Block]:
    """The summary section: one table, family × target, a column per scale variable some sweep covers."""
    cells: dict[tuple[str, str], dict[str, list[tuple[dict, dict]]]] = {}
    for s in fits["sweeps"]:
        if "hpo" in s:
            continue
        fam = family_label(s)
        for metric, by_var in (s.get("axis_fits") or {}).items():
            for var, fit in by_var.items():
                cells.setdefault((fam, metric), {}).setdefault(var, []).append((s, fit))
        for metric, fr in (s.get("frontier") or {}).items():
            if "not_available" in fr and s.get("axis") != "compute":
                continue  # no runs with counted FLOPs: not a missing frontier worth a cell
            cells.setdefault((fam, metric), {}).setdefault(M.FLOPS_CUM, []).append((s, fr))
    if not cells:
        return []
    used = [v for v in COLUMNS if any(v in by_var for by_var in cells.values())]
    order = list(TARGETS) + sorted({m for _, m in cells} - set(TARGETS))
    families = list(dict.fromkeys(f for f, _ in cells))
    rows, others = [], False
    for fam in families:
        for metric in order:
            by_var = cells.get((fam, metric))
            if by_var is None:
                continue
            row = [fam, TARGETS.get(metric, metric)]
            for var in used:
                picked = _pick(by_var.get(var, []), COLUMNS[var][1])
                if picked is None:
                    row.append("—")
                    continue
                s, fit, more = picked
                text = verdict_cell(fit)
                if var == M.FLOPS_CUM and s.get("axis") != "compute" and text not in ("—", "not available"):
                    text += f" (final points of the {s.get('axis')} sweep)"
                others = others or more > 0
                row.append(text)
            rows.append(row)
    note = ("One verdict per fit (defined below): an exponent with its 95 % interval is printed only for a *law*; "
            "\"≈ … (est.)\" is an estimate, not a law. pts: scale values fitted; seeds: the fewest at any of them. "
            "N from the family's params sweep, D from its data sweep, C from its compute sweep's frontier (annealed "
            "points)" + ("; the frontiers of its params and data sweeps are in the appendices" if others else "")
            + ". Every fit's detail, figures and trials follow as appendices.")
    return [Block("h2", "Summary: one verdict per family, target and scale"),
            Block("table", header=["family", "target", *(COLUMNS[v][0] for v in used)], rows=rows),
            Block("p", note)]
