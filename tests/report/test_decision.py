"""The decision section: a known surface in, its compute-optimal allocation and predictions out."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from engine import metrics as M
from engine.report.decision import FamilyPoints, annealed_points, decide_family, decision_markdown

TRUTH = {"E": 1.0, "A": 40.0, "a": 0.30, "B": 200.0, "b": 0.42}
GAMMA, K = 1.2, 50.0  # FLOPs per structure seen = K·N^γ (a graph model is not 6·N)


def surface(n, d):
    return TRUTH["E"] + TRUTH["A"] * n ** -TRUTH["a"] + TRUTH["B"] * d ** -TRUTH["b"]


def compute_sweep(noise: float = 0.005, seeds: int = 2, rng_seed: int = 0) -> pd.DataFrame:
    """A compute-axis grid as collect_sweep gives it: rung rows of 5 sizes × seeds × 6 budgets."""
    rng = np.random.default_rng(rng_seed)
    rows = []
    for i, n in enumerate([1e4, 3e4, 1e5, 3e5, 1e6]):
        for s in range(seeds):
            offset = rng.normal(0, noise)
            for r, c in enumerate(np.geomspace(1e12, 1e15, 6)):
                d = c / (K * n**GAMMA)
                loss = surface(n, d) * math.exp(offset + rng.normal(0, noise / 3))
                rows.append({"run_id": f"p{i}-s{s}", "model": "toy", "preset": f"p{i}", "n_params": n,
                             "train_size": 1000.0, "seed": float(s), "engine_status": "completed", "epoch": 1.0,
                             M.REPORT: float(r + 1), M.RUNG: float(r), M.EPOCHS_RUN: d / 1000.0, M.FLOPS_CUM: c,
                             M.FLOPS_SPENT: c * 1.2, M.WALL_S: c * 1.2 * 1e-12 * (n / 1e4) ** 0.1,
                             M.VAL_LOSS: loss, f"val_{M.FORCES_MAE}": 10 * loss})
    return pd.DataFrame(rows)


def test_annealed_points_are_rungs_and_final_reports_only() -> None:
    frame = compute_sweep(seeds=1)
    pts, excluded = annealed_points(frame)
    assert len(pts) == 5 * 6 and not excluded
    np.testing.assert_allclose(pts["structures"], frame[M.EPOCHS_RUN] * 1000.0)
    cosine = frame.drop(columns=[M.RUNG]).assign(engine_status=["stopped"] * 6 + ["completed"] * 24)
    pts, excluded = annealed_points(cosine)
    assert len(pts) == 4  # one final report per run trained to its end; the stopped run is not annealed
    assert sum(excluded.values()) == 1


def test_a_known_surface_gives_its_allocation_and_predictions() -> None:
    pts, _ = annealed_points(compute_sweep())
    dec = decide_family(FamilyPoints("toy", ["grid"], pts), n_boot=100)
    assert dec["cost"]["gamma"] == pytest.approx(GAMMA, abs=1e-6)  # FLOPs per structure ∝ N^γ, counted
    a_true = TRUTH["b"] / (TRUTH["a"] + GAMMA * TRUTH["b"])
    b_true = TRUTH["a"] / (TRUTH["a"] + GAMMA * TRUTH["b"])
    a, b = dec["allocation"]["a"], dec["allocation"]["b"]
    assert a[0] == pytest.approx(a_true, abs=0.03) and b[0] == pytest.approx(b_true, abs=0.03)
    assert a[1] <= a_true <= a[2] and b[1] <= b_true <= b[2]
    assert GAMMA * a[0] + b[0] == pytest.approx(1.0)  # C = k·N^γ·D: γa + b = 1
    best = dec["best"]
    for o in dec["options"]:
        truth = surface(o["n_params"], o["structures"])
        est = o["loss"][M.VAL_LOSS][0]
        assert est == pytest.approx(truth, rel=0.03), o["what"]
        assert o["flops"] == pytest.approx(o["factor"] * best["flops"])
        assert o["hours"] > 0
    optimal = [o for o in dec["options"] if o["what"] == "compute-optimal split"]
    others = [o for o in dec["options"] if o["what"] != "compute-optimal split"]
    for o in optimal:  # the split the law calls optimal predicts no more loss than the two one-sided plans
        assert all(o["loss"][M.VAL_LOSS][0] <= p["loss"][M.VAL_LOSS][0] + 1e-9 for p in others
                   if p["factor"] == o["factor"])
    assert "compute-optimal split" in dec["answer"] or "more" in dec["answer"]


def test_markdown_leads_with_the_answer_and_a_table() -> None:
    pts, _ = annealed_points(compute_sweep())
    dec = decide_family(FamilyPoints("toy", ["grid"], pts), n_boot=50)
    md = decision_markdown([dec])
    assert md.startswith("## What the next compute buys")
    assert "10× the best run's compute buys the most as" in md
    assert "| 2× | more data, same model" in md and "| 10× | compute-optimal split" in md
    assert "N_opt ∝ C^a with a = " in md


def test_too_few_sizes_ask_for_the_runs_that_would_identify_the_law() -> None:
    frame = compute_sweep(seeds=1)
    pts, _ = annealed_points(frame[frame["preset"].isin(["p0", "p1"])])
    dec = decide_family(FamilyPoints("toy", ["grid"], pts), n_boot=20)
    assert "not_available" in dec["law"]
    assert any("at least 3 model sizes (now 2)" in r for r in dec["next_runs"])
    assert any("second seed" in r for r in dec["next_runs"])
    md = decision_markdown([dec])
    assert "No joint law" in md and "at least 3 model sizes" in md


@pytest.mark.slow
def test_report_from_runs_files_covers_the_true_allocation_and_calls_a_plateau_a_plateau(tmp_path) -> None:
    """The issue's check, end to end through runs files and engine.report: a joint surface with α ≠ β, noise,
    several sizes and training sets (a compute grid: D seen varies along each trial) → the decision section's
    interval on a covers the truth; a params sweep whose loss does not move with N → its verdict is plateau."""
    import json

    from engine.report import snapshot
    from engine.report.build import build_report
    from engine.report.collect import SweepData

    grid = compute_sweep(noise=0.01)
    grid = grid.assign(sweep="toy-grid", trial_id=grid["run_id"], axis="compute", status="FINISHED")
    flat_rows = []
    for i, n in enumerate([1e3, 1e4, 1e5, 1e6, 1e7]):
        for s in range(2):
            flat_rows.append({"sweep": "toy-flat", "run_id": f"f{i}-s{s}", "trial_id": f"f{i}-s{s}", "axis": "params",
                              "model": "flat", "preset": f"f{i}", "n_params": n, "train_size": 500.0,
                              "seed": float(s), "status": "FINISHED", "engine_status": "completed", "epoch": 5.0,
                              M.REPORT: 5.0, M.EPOCHS_RUN: 5.0, M.FLOPS_CUM: 1e9 * n, M.FLOPS_SPENT: 1e9 * n,
                              M.WALL_S: 10.0, M.VAL_LOSS: 3.0 * (1 + 0.003 * (-1) ** (i + s))})
    files = []
    for name, axis, frame in (("toy-grid", "compute", grid), ("toy-flat", "params", pd.DataFrame(flat_rows))):
        data = SweepData(name, "none", "0", None, axis, frame.reset_index(drop=True),
                         baselines={"baseline_predict_zero_val_loss": 50.0})
        files.append(snapshot.save(data, tmp_path / f"{name}.json"))
    out = build_report([], runs=files, out_dir=tmp_path / "report", n_boot=100, log_to_mlflow=False)
    fits = json.loads((out / "fits.json").read_text())
    dec = {d["family"]: d for d in fits["decision"]}
    a = dec["toy p-ladder"]["allocation"]["a"]
    a_true = TRUTH["b"] / (TRUTH["a"] + GAMMA * TRUTH["b"])
    assert a[1] <= a_true <= a[2], (a, a_true)
    flat = next(s for s in fits["sweeps"] if s["sweep"] == "toy-flat")
    assert flat["axis_fits"][M.VAL_LOSS]["n_params"]["verdict"]["label"] == "plateau"
    md = (out / "report.md").read_text()
    assert md.index("## What the next compute buys") < md.index("Verdicts (one per fit)")


def test_a_params_sweep_alone_answers_along_n_and_says_d_is_unmeasured() -> None:
    frame = compute_sweep(seeds=2)
    last = frame[frame[M.RUNG] == 5.0].drop(columns=[M.RUNG])  # one D per size: make it one D for all sizes
    last = last.assign(**{M.EPOCHS_RUN: 50.0, M.VAL_LOSS: surface(last["n_params"], 50_000.0),
                          M.FLOPS_CUM: K * last["n_params"] ** GAMMA * 50_000.0})
    pts, _ = annealed_points(last)
    dec = decide_family(FamilyPoints("toy", ["params"], pts), n_boot=50)
    assert "not_available" in dec["law"]
    one = dec["one_axis"]
    assert one["variable"] == "n_params" and [o["factor"] for o in one["options"]] == [2.0, 10.0]
    assert all(o["what"] == "more parameters, same data" for o in one["options"])
    assert "more data (one D measured): not measured" in dec["answer"]
    md = decision_markdown([dec])
    assert "**Answer.**" in md and "No joint law L(N, D)" in md


def test_missing_interval_ends_and_estimates_render_as_words() -> None:
    pts, _ = annealed_points(compute_sweep(seeds=1))
    dec = decide_family(FamilyPoints("toy", ["grid"], pts), n_boot=20)
    dec["allocation"]["a"] = [0.5, None, None]  # a bootstrap that gave no interval (NaN → null in fits.json)
    dec["law"]["ci95"]["E"] = [None, 2.0]
    dec["options"][0]["loss"][M.VAL_LOSS] = [None, None, None]
    dec["options"][1]["hours"] = None
    dec["options"][1]["n_params"] = None
    md = decision_markdown([dec])
    assert "N_opt ∝ C^a with a = 0.5," in md and "| not identified |" in md and "n/a" in md
