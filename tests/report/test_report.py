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
    # not identify is named so instead
    for k, v in chosen["params"].items():
        lo, hi = chosen["ci95"][k]
        if k in chosen["not_identified"]:
            assert f"{k}: not identified by these runs (estimate {fmt(v)}; {chosen['not_identified'][k]})" in md
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
    assert s["frontier"]["val_loss"]["n_runs"] == 9  # … the stopped run's curve is on the frontier, not the diverged
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
    assert "## Comparison" in md and "| fit | params-tiny | params-other | seed study (EquiformerV2) |" in md
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
