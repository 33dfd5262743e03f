"""The report's first page: the summary table's cells, and legends measured off the data (engine.report.summary,
engine.report.figures.legend_layout)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from engine.report.document import to_markdown
from engine.report.figures import LEGEND_LAYOUTS, legend_layout, save_with_legend
from engine.report.summary import summary_blocks, verdict_cell


def _verdict(label: str, beta: float, ci, n: int = 5, seeds: int = 1) -> dict:
    return {"label": label, "estimate": {"beta": {"value": beta, "ci95": ci}}, "n_points": n, "min_seeds": seeds,
            "reasons": []}


def test_only_a_law_prints_its_exponent_with_an_interval():
    assert verdict_cell({"verdict": _verdict("law", 0.431, [0.16, 0.49])}) == \
        "**law** β = 0.431 [0.16, 0.49]; 5 pts × 1 seed"
    assert verdict_cell({"verdict": _verdict("plateau", 0.00044, [-0.01, 0.01], 4, 2)}) == \
        "**plateau** β ≈ 0.00044 (est.); 4 pts × 2 seeds"
    assert verdict_cell({"not_available": "2 distinct n_params values"}) == "not available"
    assert verdict_cell(None) == "—"


def test_summary_is_one_table_family_by_target_with_a_column_per_scale():
    def sweep(name, axis, preset, var=None, label="trend"):
        fits = {"val_loss": {var: {"verdict": _verdict(label, 0.3, [0.2, 0.4])}}} if var else {"val_loss": {}}
        return {"sweep": name, "axis": axis, "models": ["transformer"], "trials": [{"preset": preset + "0"}],
                "axis_fits": fits,
                "frontier": {"val_loss": {"verdict": _verdict("law", 0.35, [0.3, 0.4], 7, 2)}} if axis == "compute"
                else {"val_loss": {"verdict": _verdict("trend", 0.5, None)}}}

    fits = {"sweeps": [sweep("tp", "params", "t", "n_params", "plateau"), sweep("td", "data", "t", "train_size"),
                       sweep("tc", "compute", "t"), sweep("pp", "params", "p", "n_params", "law")]}
    blocks = summary_blocks(fits)
    tables = [b for b in blocks if b.kind == "table"]
    assert len(tables) == 1
    t = tables[0]
    assert t.header == ["family", "target", "vs N (params sweep)", "vs D (data sweep)", "vs C (compute frontier)"]
    rows = {r[0]: r for r in t.rows}
    assert set(rows) == {"transformer t-ladder", "transformer p-ladder"}
    tr = rows["transformer t-ladder"]
    assert tr[2] == "**plateau** β ≈ 0.3 (est.); 5 pts × 1 seed"
    # C from the compute sweep's frontier; the params and data sweeps' final-point frontiers are in the appendix
    assert tr[4] == "**law** β = 0.35 [0.3, 0.4]; 7 pts × 2 seeds"
    # a family without a compute sweep: its params sweep's final points, said so
    assert rows["transformer p-ladder"][4].endswith("(final points of the params sweep)")
    assert rows["transformer p-ladder"][3] == "—"
    md = to_markdown(blocks)
    assert "| family | target |" in md and "the frontiers of its params and data sweeps are in the appendices" in md


def test_legend_layout_flags_a_legend_over_the_data_and_clears_one_below(tmp_path):
    x = np.geomspace(1, 100, 30)
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot(x, x, label="data filling the panel")
    ax.fill_between(x, 0, 200, alpha=0.2, label="band")
    inside = ax.legend(loc="center")
    fig.canvas.draw()
    assert legend_layout(fig, inside)["overlaps_data"] is True
    inside.remove()
    handles, labels = ax.get_legend_handles_labels()
    assert save_with_legend(fig, tmp_path / "f.png", handles, labels) == labels
    layout = LEGEND_LAYOUTS.pop("f.png")
    assert layout == {"entries": 2, "overlaps_data": False, "axes_overlapped": [], "inside_figure": True}


def test_a_long_legend_takes_fewer_columns_to_stay_inside_the_figure(tmp_path):
    fig, ax = plt.subplots(figsize=(4, 3))
    labels = [f"a rather long legend entry number {k} that needs room" for k in range(4)]
    handles = [ax.plot([1, 2], [k, k + 1])[0] for k in range(4)]
    save_with_legend(fig, tmp_path / "g.png", handles, labels, ncol=4)
    layout = LEGEND_LAYOUTS.pop("g.png")
    assert layout["inside_figure"] and not layout["overlaps_data"]
