"""The report stage end to end on a small real MLflow store (SQLite, filled by conftest.log_sweep)."""

import base64
import json
import re

import pytest

from engine.cli import run_cli
from engine.errors import UserError
from engine.report.__main__ import main
from engine.report.analyze import fmt
from engine.report.build import build_report
from engine.report.collect import collect_sweep, list_sweeps


def test_collect_returns_one_row_per_trial_epoch(mlflow_store):
    uri, _ = mlflow_store
    data = collect_sweep("params-tiny", uri)
    f = data.frame
    assert data.axis == "params" and data.parent_run_id
    assert f["run_id"].nunique() == 10 and len(f) == 9 * 7 + 4  # 5 sizes × 2 seeds, epochs 0..6 (one diverged at 3)
    for col in ["sweep", "run_id", "trial_id", "axis", "model", "preset", "n_params", "train_size", "seed",
                "status", "epoch", "flops_cum", "wall_s", "val_loss", "val_energy_mae_mev_per_atom"]:
        assert col in f.columns
    assert set(f["status"]) == {"FINISHED"}
    assert (f.drop_duplicates("run_id")["engine_status"] == "stopped").sum() == 1
    assert (f.drop_duplicates("run_id")["engine_status"] == "diverged").sum() == 1
    assert sorted(f["n_params"].unique()) == [2e3, 8e3, 3e4, 1.2e5, 5e5]
    assert set(f["peak_lr"]) == {1e-3} and set(f["batch_size"]) == {16}
    assert data.baselines == {"baseline_predict_mean_val_loss": 3.0, "baseline_predict_zero_val_loss": 4.5,
                              "baseline_predict_zero_val_forces_mae_mev_per_a": 2500.0}
    assert data.parent_params["budget_rule"] == "epochs=6"
    assert list_sweeps(uri) == ["grid-tiny", "hpo-tiny", "params-other", "params-tiny"]


def test_missing_sweep_is_one_line_user_error(mlflow_store, capsys):
    uri, _ = mlflow_store
    with pytest.raises(UserError, match=r"no MLflow experiment for sweep 'nope'.*--list"):
        collect_sweep("nope", uri)
    assert run_cli(main, ["--sweep", "nope", "--tracking-uri", uri]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: no MLflow experiment for sweep 'nope'")


def test_report_files_numbers_and_embedded_images(mlflow_store, tmp_path):
    uri, _ = mlflow_store
    out = build_report(["params-tiny"], uri, tmp_path / "rep", metrics=["val_loss"], n_boot=30)
    for name in ["report.md", "report.html", "fits.json", "params-tiny_val_loss_vs_n_params.png",
                 "params-tiny_val_loss_frontier.png"]:
        assert (out / name).is_file(), name
    fits = json.loads((out / "fits.json").read_text())
    md = (out / "report.md").read_text()
    s = fits["sweeps"][0]
    axis = s["axis_fits"]["val_loss"]["n_params"]
    chosen = axis["fits"][axis["chosen"]]
    # every fitted parameter and interval in fits.json is printed in report.md, same format; one the runs do
    # not identify is named so instead, and an interval that cannot be trusted is not quoted
    for k, v in chosen["params"].items():
        lo, hi = chosen["ci95"][k]
        if k in chosen["not_identified"]:
            assert f"{k}: not identified by these runs (estimate {fmt(v)}; {chosen['not_identified'][k]})" in md
        elif k in chosen["interval_unreliable"]:
            assert f"{k} = {fmt(v)} (interval not reliable: see below)" in md
            assert f"interval not reliable for {k}: {chosen['interval_unreliable'][k]}" in md
            assert f"{k} = {fmt(v)} [{fmt(lo)}, {fmt(hi)}]" not in md
        else:
            assert f"{k} = {fmt(v)} [{fmt(lo)}, {fmt(hi)}]" in md
    assert chosen["converged"] is True
    assert axis["choice"] in md
    ex = axis["extrapolation"]
    assert (f"predicts {fmt(ex['predicted'])}, 95 % prediction interval [{fmt(ex['pi95'][0])}, "
            f"{fmt(ex['pi95'][1])}] (curve [{fmt(ex['ci95'][0])}, {fmt(ex['ci95'][1])}]") in md
    law = s["frontier"]["val_loss"]["law"]
    assert f"beta = {fmt(law['params']['beta'])}" in md
    assert chosen["n_runs"] == 8  # the ASHA-stopped and the diverged run are left out of the per-axis fit …
    # … nor on the frontier: only annealed points make it, the final points of the 8 runs that trained to the end
    # of their schedule (before issue 23 the stopped run's un-annealed curve counted: 9)
    assert s["frontier"]["val_loss"]["n_runs"] == 8
    # the synthetic sweep follows N^-0.35 on top of a data term: the fit finds a clear positive exponent
    assert 0.1 < chosen["params"]["beta"] < 0.6
    # joint law needs ≥ 3 data sizes: said so, no number
    assert "not available: L = E + A/N^a + B/D^b needs" in md
    html = (out / "report.html").read_text()
    imgs = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", html)
    assert len(imgs) >= 2 and all(base64.b64decode(i)[:8] == b"\x89PNG\r\n\x1a\n" for i in imgs)
    assert "src='params-tiny" not in html  # self-contained: no file references


def test_report_logged_to_parent_run(mlflow_store, tmp_path):
    from mlflow.tracking import MlflowClient

    uri, _ = mlflow_store
    build_report(["params-other"], uri, tmp_path / "rep", metrics=["val_loss"], n_boot=10)
    data = collect_sweep("params-other", uri)
    names = {a.path for a in MlflowClient(tracking_uri=uri).list_artifacts(data.parent_run_id, "report")}
    assert {"report/report.md", "report/report.html", "report/fits.json"} <= names


def test_two_sweeps_make_one_comparison_report(mlflow_store, tmp_path):
    uri, _ = mlflow_store
    code = run_cli(main, ["--sweep", "params-tiny", "--sweep", "params-other", "--tracking-uri", uri,
                          "--out", str(tmp_path / "cmp"), "--metric", "val_loss", "--n-boot", "10",
                          "--no-mlflow-artifacts"])
    assert code == 0
    md = (tmp_path / "cmp" / "report.md").read_text()
    assert md.startswith("# Scaling report: params-tiny vs params-other")
    assert "## Appendix: every fit of every sweep, side by side" in md and (
        "| fit | sweep | verdict | law exponent [95 % CI] | estimate (not a law) | "
        "why / what is missing for a law | seed study (EquiformerV2) |") in md
    # one page first: the decision section, one summary table (family × target), the figures; then appendices
    heads = [line for line in md.splitlines() if line.startswith("## ")]
    assert heads[:3] == ["## What the next compute buys", "## Summary: one verdict per family, target and scale",
                         "## Figures: families side by side"], heads
    assert all(h.startswith("## Appendix: ") for h in heads[3:]) and len(heads) == 6, heads
    assert "| family | target | vs N (params sweep) |" in md and md.count("| family | target |") == 1
    assert "## Appendix: sweep params-tiny (axis: params)" in md and "### Trials" in md
    assert (tmp_path / "cmp" / "compare_val_loss.png").is_file()


def test_grid_sweep_reports_joint_law_and_allocation(mlflow_store, tmp_path):
    uri, _ = mlflow_store
    out = build_report(["grid-tiny"], uri, tmp_path / "grid", metrics=["val_loss"], n_boot=10, log_to_mlflow=False)
    s = json.loads((out / "fits.json").read_text())["sweeps"][0]
    md = (out / "report.md").read_text()
    joint = s["joint"]["val_loss"]
    assert joint["n_points"] == 9 and joint["n_grid"] == 4500
    assert f"a = {fmt(joint['params']['a'])}" in md and f"b = {fmt(joint['params']['b'])}" in md
    # 3 sizes: without the largest only 2 remain, so the check says why instead of printing a number
    assert "≥ 3 distinct values" in joint["extrapolation"]["not_available"]
    assert f"val_loss: extrapolation check not available: {joint['extrapolation']['not_available']}." in md
    al = s["allocation"]
    assert al["approach3"]["x_n_opt"] == pytest.approx(joint["params"]["x_n_opt"])
    assert "| 3: joint law b/(a+b), a/(a+b) | " + fmt(al["approach3"]["x_n_opt"]) in md
    assert s["axis_fits"]["val_loss"] == {}  # compute axis: no per-axis fit, frontier instead
    assert (out / "grid-tiny_val_loss_frontier.png").is_file()


def test_protocol_diverged_baselines_and_test_metrics(mlflow_store, tmp_path):
    uri, _ = mlflow_store
    out = build_report(["params-tiny"], uri, tmp_path / "proto", n_boot=20, log_to_mlflow=False)
    fits = json.loads((out / "fits.json").read_text())
    s = fits["sweeps"][0]
    md = (out / "report.md").read_text()
    # the diverged trial: excluded from every fit, listed with its epoch
    assert [(d["trial_id"], d["diverged_epoch"]) for d in s["diverged"]] == [("t010", 3.0)]
    assert "Diverged runs, excluded from every fit (1): t010 (p500000, N = 5e+05, D = 800, seed 1, lr 0.001) at " \
           "epoch 3." in md
    for metric, by_var in s["axis_fits"].items():
        assert by_var["n_params"]["fits"]["power"]["n_runs"] == 8, metric  # 10 − stopped − diverged
        assert s["frontier"][metric]["n_runs"] == 8, metric  # annealed (final) points of runs that trained to the end
    # the budget rule with each trial's epochs, the LR each trial used
    assert "Budget rule: epochs=6. Epochs each trial ran (passes over its training subset): 3, 6" in md
    assert "Peak learning rate per size: p2000: 0.001;" in md
    # test metrics in a column of the trials table, next to the validation value
    header = "| trial | size | N | D | seed | peak LR | batch | epochs run | status | val_loss (val / test) |"
    assert md.count(header) == 1
    t2 = next(t for t in s["trials"] if t["trial_id"] == "t002")
    assert t2["test"]["val_loss"] == pytest.approx(1.05 * t2["final"]["val_loss"])
    assert f"| t002 | p2000 | 2000 | 800 | 1 | 0.001 | 16 | 6 | completed | {fmt(t2['final']['val_loss'])} / " \
           f"{fmt(t2['test']['val_loss'])} |" in md
    # baselines (parent-run baseline_<name>_<metric>) are reference lines in every plot of that metric
    legends = fits["legends"]
    for key in ("params-tiny_val_loss_vs_n_params.png", "params-tiny_val_loss_frontier.png"):
        assert {"baseline: predict mean", "baseline: predict zero"} <= set(legends[key]), key
    assert "baseline: predict zero" in legends["params-tiny_val_forces_mae_mev_per_a_vs_n_params.png"]
    assert "| baseline | val_loss | val_forces_mae_mev_per_a |" in md  # and tabulated, name × metric
    assert "| predict zero | 4.5 | 2500 |" in md and "| predict mean | 3 | — |" in md
    energy = legends["params-tiny_val_energy_mae_mev_per_atom_vs_n_params.png"]
    assert not any(lab.startswith("baseline") for lab in energy)


def test_unidentified_exponent_is_named_in_report_and_legend(tmp_path, sweep_logger):
    uri = f"sqlite:///{tmp_path}/m.db"
    sweep_logger(uri, str(tmp_path / "art"), "flat", "params", sizes=[2e3, 8e3, 3e4, 1.2e5], data_sizes=[800],
              exponent=0.0)  # the loss does not depend on N: no exponent to find
    out = build_report(["flat"], uri, tmp_path / "rep", metrics=["val_loss"], n_boot=100, log_to_mlflow=False)
    fits = json.loads((out / "fits.json").read_text())
    axis = fits["sweeps"][0]["axis_fits"]["val_loss"]["n_params"]
    chosen = axis["fits"][axis["chosen"]]
    assert "beta" in chosen["not_identified"] and axis["trusted"] is False
    md = (out / "report.md").read_text()
    assert f"beta: not identified by these runs (estimate {fmt(chosen['params']['beta'])};" in md
    assert "Do not read this fit as a law: " in md
    label = next(lab for lab in fits["legends"]["flat_val_loss_vs_n_params.png"] if lab.startswith("L = "))
    assert label.endswith("β not identified by these runs")


def test_tuning_report_tables_trials_warns_at_edges_and_draws_no_frontier(mlflow_store, tmp_path):
    uri, _ = mlflow_store
    out = build_report(["hpo-tiny"], uri, tmp_path / "hpo", n_boot=10, log_to_mlflow=False)
    fits = json.loads((out / "fits.json").read_text())
    s = fits["sweeps"][0]
    h = s["hpo"]
    assert len(h["trials"]) == 20 and h["range"] == {"lr_min": 3e-4, "lr_max": 3e-2, "batch_sizes": [8, 16]}
    assert h["best"]["p0"]["peak_lr"] == pytest.approx(3e-3) and h["best"]["p1"]["peak_lr"] == pytest.approx(3e-2)
    assert not any("learning rate" in w for w in h["best"]["p0"]["warnings"])
    assert any("upper edge" in w for w in h["best"]["p1"]["warnings"])
    md = (out / "report.md").read_text()
    assert "lies at the upper edge of the searched range [0.0003, 0.03]" in md
    assert "| trial | size | peak LR | batch size | epochs | val_loss | status |" in md
    assert s["frontier"] == {} and s["axis_fits"] == {} and "frontier" not in " ".join(fits["figures"])
    assert list(fits["figures"]) == ["hpo-tiny|hpo:loss_vs_lr"]
    assert {"p0: best", "p1: best", "searched LR range"} <= set(fits["legends"]["hpo-tiny_loss_vs_lr.png"])


def test_comparison_one_figure_per_target_with_plateau_and_seed_exponents(mlflow_store, tmp_path):
    uri, _ = mlflow_store
    out = build_report(["params-tiny", "params-other"], uri, tmp_path / "cmp", n_boot=10, log_to_mlflow=False)
    fits = json.loads((out / "fits.json").read_text())
    for metric in ("val_loss", "val_energy_mae_mev_per_atom", "val_forces_mae_mev_per_a"):
        assert fits["figures"][f"compare:{metric}"] == f"compare_{metric}.png"
    labels = fits["legends"]["compare_val_forces_mae_mev_per_a.png"]
    # both families in the one force figure, each named once, line styles named by verdict, the baseline once
    assert {"equiformer_v2 p-ladder", "transformer p-ladder", "baseline: predict zero"} <= set(labels), labels
    assert any(lab.startswith("fit, ") for lab in labels) and len(labels) <= 10
    assert not any("flagged" in lab for lab in labels)
    # every legend was measured when saved: below the panels, never over a data area, inside the figure
    layout = fits["legend_layout"]
    assert set(layout) == {name for name, labels in fits["legends"].items() if labels}
    assert all(not v["overlaps_data"] and v["inside_figure"] for v in layout.values()), layout
    slopes = fits["comparison"]["last_decade_slope"]["val_forces_mae_mev_per_a"]["n_params"]
    # the transformer's force error with a 3 eV/Å floor flattens more than EquiformerV2's
    assert abs(slopes["params-other"]) < abs(slopes["params-tiny"])
    md = (out / "report.md").read_text()
    assert "| val_loss vs n_params | " in md and md.split("| val_loss vs n_params | ")[1].split("\n")[0].endswith(
        "| 0.383 |")
    assert "0.383 vs n_params, 0.242 vs train_size, 0.339 vs flops_cum" in md


def test_unconverged_fit_is_flagged_in_the_report_text():
    import numpy as np

    from engine.fit.powerlaw import fit_axis
    from engine.report.document import axis_blocks, to_markdown

    n = np.logspace(3, 7, 8)
    y = 776.0 * n**-0.383 * np.exp(np.random.default_rng(0).normal(0, 0.02, n.size))
    fit = fit_axis(n, y, "n_params", "val_loss", n_boot=0, extrapolate=False, maxiter=1)  # stops unconverged
    d = json.loads(json.dumps(fit.to_dict(), allow_nan=False))
    assert d["fits"][d["chosen"]]["converged"] is False and d["trusted"] is False
    md = to_markdown(axis_blocks({"axis_fits": {"val_loss": {"n_params": d}}}, {}))
    assert "Do not read this fit as a law: not converged: none of" in md
    assert "optimum NOT converged" in md  # the method line says it too


def test_legend_marks_a_flagged_exponent(tmp_path, sweep_logger):
    # the transformer's flat force error (a floor far above the trend) gives a fit whose report flags it: its
    # legend may show the estimate but must say it is not a law, as the text does
    uri = f"sqlite:///{tmp_path}/m.db"
    sweep_logger(uri, str(tmp_path / "art"), "floor", "params", sizes=[2e3, 8e3, 3e4, 1.2e5, 5e5], data_sizes=[800],
                 seeds=(0,), force_floor=3000.0)
    out = build_report(["floor"], uri, tmp_path / "rep", metrics=["val_forces_mae_mev_per_a"], n_boot=100,
                       log_to_mlflow=False)
    fits = json.loads((out / "fits.json").read_text())
    axis = fits["sweeps"][0]["axis_fits"]["val_forces_mae_mev_per_a"]["n_params"]
    chosen = axis["fits"][axis["chosen"]]
    label = next(lab for lab in fits["legends"]["floor_val_forces_mae_mev_per_a_vs_n_params.png"]
                 if lab.startswith("L = "))
    assert "beta" not in chosen["not_identified"] and chosen["flags"]
    verdict = axis["verdict"]["label"]
    assert verdict != "law" and label.endswith(f"{verdict}: β≈{chosen['params']['beta']:.3g}"), label
