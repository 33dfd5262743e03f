"""Issue 23: graded verdicts in fits.json and the report, "not a test" extrapolation checks, and compute frontiers
from annealed points only."""

import json

from engine.fit.verdict import AT_BASELINE, DEFINITIONS, LAW, ORDER, TREND
from engine.report.analyze import curves_of
from engine.report.build import build_report
from engine.report.collect import collect_sweep
from engine.report.compare import comparison_blocks
from engine.report.document import to_markdown


def test_every_fit_has_one_verdict_defined_once(mlflow_store, tmp_path):
    uri, _ = mlflow_store
    # the transformer whose force error sits on a 3 eV/Å floor, above the predict-zero baseline (2.5 eV/Å)
    out = build_report(["params-other"], uri, tmp_path / "rep", metrics=["val_loss", "val_forces_mae_mev_per_a"],
                       n_boot=20, log_to_mlflow=False)
    fits = json.loads((out / "fits.json").read_text())
    assert fits["verdicts"] == {"order": list(ORDER), "definitions": DEFINITIONS}
    s = fits["sweeps"][0]
    verdicts = [f["verdict"] for by_var in s["axis_fits"].values() for f in by_var.values()]
    verdicts += [fr["verdict"] for fr in s["frontier"].values()]
    assert len(verdicts) == 4 and all(v["label"] in ORDER for v in verdicts)
    forces = s["axis_fits"]["val_forces_mae_mev_per_a"]["n_params"]["verdict"]
    assert forces["label"] == AT_BASELINE and forces["baseline"]["name"] == "predict zero"
    assert s["frontier"]["val_forces_mae_mev_per_a"]["verdict"]["label"] == AT_BASELINE
    md = (out / "report.md").read_text()
    assert md.count("Verdicts (one per fit): ") == 1 and f"*{LAW}*: {DEFINITIONS[LAW]}" in md
    assert "| **at baseline** | — | β ≈ " in md  # an at-baseline fit prints its exponent as an estimate only
    html = (out / "report.html").read_text()
    assert "<td><strong>at baseline</strong></td>" in html and "<em>law</em>: identified" in html
    # 4 sizes with one seed: the refit without the largest has 3 points for 2 parameters, 1 residual dof
    loss = s["axis_fits"]["val_loss"]["n_params"]
    assert loss["extrapolation"]["residual_dof"] == 1 and loss["extrapolation"]["verdict"] == "not a test"
    assert loss["verdict"]["check"] == "not a test" and loss["verdict"]["label"] != LAW
    assert "Extrapolation check, not a test (the refit has 1 residual degree of freedom; a check needs ≥ 2" in md
    # (its losses never beat the sweep's predict-mean baseline of 3: at baseline comes before anything else)
    assert loss["verdict"]["label"] == AT_BASELINE


def test_params_sweep_frontier_uses_annealed_points_only(mlflow_store, tmp_path):
    uri, _ = mlflow_store
    data = collect_sweep("params-tiny", uri)
    curves = curves_of(data.frame, "val_loss")
    # 10 trials: one diverged, one stopped by ASHA mid-schedule; the other 8 give their final point only
    assert len(curves) == 8 and all(len(c.flops) == 1 for c in curves)
    final = data.frame[data.frame["epoch"] == 6]
    for c in curves:
        row = final[final["run_id"] == c.run_id]
        assert c.loss[0] == row["val_loss"].iloc[0] and c.flops[0] == row["flops_cum"].iloc[0]
    out = build_report(["params-tiny"], uri, tmp_path / "rep", metrics=["val_loss"], n_boot=10, log_to_mlflow=False)
    md = (out / "report.md").read_text()
    assert ("Annealed points only: the final report of each of the 8 runs that trained to the end of their "
            "schedule") in md
    assert "as are the 1 runs stopped before the end of their schedule" in md
    s = json.loads((out / "fits.json").read_text())["sweeps"][0]
    assert s["annealed"] == {"rungs": False, "final_points_only": True, "n_runs": 8, "n_runs_left_out": 1}


def test_comparison_prints_an_exponent_as_a_law_only_for_a_law():
    def verdict(label, reasons=()):
        return {"label": label, "reasons": list(reasons), "estimate": {"beta": {"value": 0.383, "ci95": [0.3, 0.45]}},
                "n_points": 6, "min_seeds": 2, "decades": 3.0, "r2_log": 0.99, "check": "passed"}

    def sweep(name, label, reasons=()):
        return {"sweep": name, "axis_fits": {"val_loss": {"n_params": {"verdict": verdict(label, reasons)}}},
                "frontier": {}}

    fits = {"sweeps": [sweep("eqv2", LAW), sweep("plain", TREND, ["log-R² 0.78 (needs ≥ 0.9)"])]}
    md = to_markdown(comparison_blocks(fits, {}))
    assert "| val_loss vs n_params | eqv2 | **law** | β = 0.383 [0.3, 0.45] | — | — | 0.383 |" in md
    assert "| val_loss vs n_params | plain | **trend** | — | β ≈ 0.383 | log-R² 0.78 (needs ≥ 0.9) | 0.383 |" in md
    assert "flagged, not a law" not in md


def test_frontier_without_a_law_still_reads_at_baseline():
    from engine.report.analyze import _grade_frontier

    flat = {"frontier": {"flops": [1e9, 2e9], "loss": [5.0, 4.99], "n_seeds": [2, 2], "size": [0, 1]},
            "law": {"not_available": "the frontier has 2 points; L(C) needs ≥ 3"}}
    _grade_frontier(flat, {"predict zero": 4.9})
    assert flat["verdict"]["label"] == AT_BASELINE
    falling = {"frontier": {"flops": [1e9, 2e9], "loss": [5.0, 3.0], "n_seeds": [2, 2], "size": [0, 1]},
               "law": {"not_available": "the frontier has 2 points; L(C) needs ≥ 3"}}
    _grade_frontier(falling, {"predict zero": 10.0})
    assert "verdict" not in falling  # no law and no plateau: nothing to grade
