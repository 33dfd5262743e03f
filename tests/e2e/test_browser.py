"""What a user sees after a sweep, checked in a real headless Chromium.

Runs a tiny real sweep (``python -m engine.scale --axis params`` on a three-size space written
here), starts the MLflow UI with :func:`engine.ui.start_ui`, and drives Debian's Chromium
through Playwright: the sweep's experiment lists its trial runs, a trial's page shows its
metrics, its artifacts (checkpoint, config, metrics), its system metrics and its dataset input, the
Model Registry shows one version per size, and ``reports/<sweep>/report.html`` shows its plots and
fitted exponents. A report built from runs files (no Ray) opens with the decision section and the summary table,
its detail in appendices, every figure loaded with its legend clear of the data. Screenshots
go to ``$ENGINE_TEST_ARTIFACTS`` (default ``./test-artifacts``) under ``browser/``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SWEEP = "browser-sweep"
SPACE = """\
# Browser test: three fcn sizes on a tiny EMT set, two epochs each (about a minute, mostly Ray start-up).
#   python -m engine.scale --axis params --space <this file> --name browser-sweep
axis: params
model: fcn
sizes: [f0, f1, f2]
train_sizes: [32]
seeds: [0]
fixed:
  epochs: 2
  batch_size: 8
  optim: {lr: 1.0e-2}
  data: {emt_size: 48, max_val: 8}
resources:
  workers: 1
  cpus_per_worker: 1
"""
UI_TIMEOUT_MS = 90_000

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} not installed (apt-get install chromium)"),
]


def artifacts_dir() -> Path:
    out = Path(os.environ.get("ENGINE_TEST_ARTIFACTS", REPO / "test-artifacts")) / "browser"
    out.mkdir(parents=True, exist_ok=True)
    return out


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """Run the tiny sweep once; yield its store, report folder and MLflow ids."""
    import mlflow

    root = tmp_path_factory.mktemp("browser")
    space = root / "tiny_params.yaml"
    space.write_text(SPACE)
    ray_tmp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # Ray's socket paths must stay short
    uri = f"sqlite:///{root / 'mlflow.db'}"
    env = dict(
        os.environ,
        PYTHONPATH=str(REPO),
        ENGINE_CACHE=str(root / "cache"),
        ENGINE_SWEEPS=str(root / "sweeps"),
        ENGINE_REPORTS=str(root / "reports"),
        MLFLOW_TRACKING_URI=uri,
        TMPDIR=ray_tmp,
        RAY_TMPDIR=ray_tmp,
        OMP_NUM_THREADS="1",
    )
    cmd = [sys.executable, "-m", "engine.scale", "--axis", "params", "--space", str(space), "--name", SWEEP]
    try:
        proc = subprocess.run(cmd, env=env, cwd=root, capture_output=True, text=True, timeout=420)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    (artifacts_dir() / "sweep.log").write_text(f"$ {' '.join(cmd)}\n{proc.stdout}\n--- stderr\n{proc.stderr}")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]

    client = mlflow.MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(SWEEP)
    assert exp is not None, f"no MLflow experiment {SWEEP!r}"
    trials = client.search_runs([exp.experiment_id], filter_string="tags.`engine.kind` = 'trial'")
    parents = client.search_runs([exp.experiment_id], filter_string="tags.`engine.kind` = 'sweep'")
    assert len(trials) == 3 and len(parents) == 1
    versions = client.search_model_versions(f"name = '{SWEEP}'")  # the sweep's name is registry-safe
    assert len(versions) == 3, f"expected one registered version per size, got {len(versions)}"
    yield {
        "versions": versions,
        "root": root,
        "uri": uri,
        "experiment_id": exp.experiment_id,
        "parent": parents[0],
        "trials": trials,
        "report_dir": root / "reports" / SWEEP,
    }


@pytest.fixture(scope="module")
def browser() -> Iterator:
    """Debian's Chromium, headless, driven by Playwright's Python driver."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="module")
def page(sweep: dict, browser) -> Iterator:
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        yield page
    finally:
        page.close()


def first_screen(browser, report: Path, png: Path, width: int = 1280, height: int = 800) -> dict:
    """Open ``report`` (a report.html) at width × height, save its first screen to ``png``; returns what the page
    shows: its h1/h2 headings in order, the tag of the first element after the title's paragraph, every image's
    load state and displayed size."""
    page = browser.new_page(viewport={"width": width, "height": height})
    try:
        page.goto(report.as_uri(), wait_until="load")
        shown = page.evaluate("""() => ({
            headings: Array.from(document.querySelectorAll('h1, h2')).map(h => [h.tagName, h.textContent]),
            order: Array.from(document.body.children).slice(0, 3).map(e => e.tagName),
            images: Array.from(document.images).map(i => ({alt: i.alt, ok: i.complete && i.naturalWidth > 0,
                width: i.getBoundingClientRect().width, natural: i.naturalWidth})),
        })""")
        page.screenshot(path=str(png))
        return shown
    finally:
        page.close()


def _runs_files(folder: Path) -> list[Path]:
    """Two families as runs files (engine.report --runs): a compute grid of 4 sizes × 2 seeds × 5 rungs on a known
    surface, and a params sweep of a family whose loss does not move with N (a plateau)."""
    import math

    import numpy as np
    import pandas as pd

    from engine import metrics as M
    from engine.report import snapshot
    from engine.report.collect import SweepData

    rng = np.random.default_rng(0)
    grid, flat = [], []
    for i, n in enumerate([1e4, 4e4, 1.6e5, 6.4e5]):
        for s in range(2):
            for r, c in enumerate(np.geomspace(1e12, 1e15, 5)):
                d = c / (50.0 * n**1.2)
                loss = (1.0 + 40.0 * n**-0.3 + 200.0 * d**-0.42) * math.exp(rng.normal(0, 0.01))
                grid.append({"sweep": "toy-compute", "run_id": f"c{i}-s{s}", "trial_id": f"c{i}-s{s}",
                             "axis": "compute", "model": "toy", "preset": f"c{i}", "n_params": n, "train_size": 1e3,
                             "seed": float(s), "status": "FINISHED", "engine_status": "completed", "epoch": 1.0,
                             M.REPORT: float(r + 1), M.RUNG: float(r), M.EPOCHS_RUN: d / 1e3, M.FLOPS_CUM: c,
                             M.FLOPS_SPENT: 1.2 * c, M.WALL_S: 1.2e-12 * c, M.VAL_LOSS: loss,
                             f"val_{M.FORCES_MAE}": 10 * loss})
            flat.append({"sweep": "flat-params", "run_id": f"f{i}-s{s}", "trial_id": f"f{i}-s{s}", "axis": "params",
                         "model": "flat", "preset": f"f{i}", "n_params": n, "train_size": 500.0, "seed": float(s),
                         "status": "FINISHED", "engine_status": "completed", "epoch": 5.0, M.REPORT: 5.0,
                         M.EPOCHS_RUN: 5.0, M.FLOPS_CUM: 1e9 * n, M.FLOPS_SPENT: 1e9 * n, M.WALL_S: 10.0,
                         M.VAL_LOSS: 3.0 * (1 + 0.003 * (-1) ** (i + s)),
                         f"val_{M.FORCES_MAE}": 777.0 * (1 + 0.002 * (-1) ** (i + s))})
    files = []
    for name, axis, rows in (("toy-compute", "compute", grid), ("flat-params", "params", flat)):
        data = SweepData(name, "none", "0", None, axis, pd.DataFrame(rows),
                         baselines={"baseline_predict_zero_val_loss": 50.0,
                                    "baseline_predict_zero_val_forces_mae_mev_per_a": 777.0})
        files.append(snapshot.save(data, folder / f"{name}.json"))
    return files


@pytest.fixture(scope="module")
def runs_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A two-family comparison report built from runs files (no Ray, no MLflow store): its folder."""
    from engine.report.build import build_report

    root = tmp_path_factory.mktemp("one-page")
    return build_report([], runs=_runs_files(root), out_dir=root / "report", n_boot=30, log_to_mlflow=False)


def test_report_html_opens_with_the_decision_and_every_figure_loads_clear_of_its_legend(runs_report: Path,
                                                                                        browser) -> None:
    fits = json.loads((runs_report / "fits.json").read_text())
    shown = first_screen(browser, runs_report / "report.html", artifacts_dir() / "report_first_screen.png")
    # the title, its one-line paragraph, then the decision section: nothing comes before the answer
    assert shown["order"] == ["H1", "P", "H2"], shown["order"]
    h2 = [text for tag, text in shown["headings"] if tag == "H2"]
    assert h2[:2] == ["What the next compute buys", "Summary: one verdict per family, target and scale"], h2
    appendix = [i for i, text in enumerate(h2) if text.startswith("Appendix: ")]
    assert appendix and appendix == list(range(appendix[0], len(h2))), h2  # the detail comes last, all of it
    assert any(text == "Appendix: sweep flat-params (axis: params)" for text in h2)
    images = shown["images"]
    assert len(images) == len(fits["figures"]), (len(images), len(fits["figures"]))
    assert all(img["ok"] and img["width"] > 0 for img in images), [i for i in images if not i["ok"]]
    # every figure's legend was measured at save time: inside the figure, off every panel's data area
    layout = fits["legend_layout"]
    assert set(layout) == set(fits["figures"].values())
    assert all(v["inside_figure"] and not v["overlaps_data"] for v in layout.values()), layout
    assert all(v["entries"] <= 10 for v in layout.values()), {k: v["entries"] for k, v in layout.items()}


def test_mlflow_ui_lists_the_sweep_runs_and_their_metrics(sweep: dict, page) -> None:
    from engine.ui import start_ui

    shots = artifacts_dir()
    handle = start_ui(port=0, tracking_uri=sweep["uri"], log_dir=sweep["root"])
    try:
        page.goto(f"{handle.url}/#/experiments/{sweep['experiment_id']}/runs", wait_until="domcontentloaded")
        parent_row = page.locator("[role=row]", has_text=sweep["parent"].info.run_name).first
        parent_row.wait_for(timeout=UI_TIMEOUT_MS)
        _close_assistant(page)
        # trial runs are nested under the sweep's parent run: expand it
        expand = parent_row.locator("button[data-component-id*='runnamecellrenderer']").first
        if expand.count():
            expand.click()
        for run in sweep["trials"]:
            page.get_by_text(run.info.run_name, exact=True).first.wait_for(timeout=UI_TIMEOUT_MS)
        page.screenshot(path=str(shots / "mlflow_experiment_runs.png"))

        # chart view of the runs, filtered to the validation loss: one curve per trial
        page.locator("label:has(input[type=radio][value=CHART])").first.click()
        page.get_by_placeholder("Search metric charts").fill("val_loss")
        page.get_by_text("val_loss", exact=True).first.wait_for(timeout=UI_TIMEOUT_MS)
        page.wait_for_timeout(1500)  # let the plots draw before the screenshot
        page.screenshot(path=str(shots / "mlflow_val_loss_charts.png"))

        run = min(sweep["trials"], key=lambda r: r.data.metrics["val_loss"])
        page.goto(f"{handle.url}/#/experiments/{sweep['experiment_id']}/runs/{run.info.run_id}")
        page.get_by_text("val_loss", exact=True).first.wait_for(timeout=UI_TIMEOUT_MS)
        _close_assistant(page)
        body = page.inner_text("body")
        for key in ("val_loss", "val_energy_mae_mev_per_atom", "flops_cum", "n_params"):
            assert key in body, f"metric {key} not shown on the run page"
        assert run.info.run_name in body and "Finished" in body
        assert str(run.data.params["model"]) in body  # params table
        page.get_by_text("val_loss", exact=True).first.scroll_into_view_if_needed()
        page.screenshot(path=str(shots / "mlflow_trial_run.png"))
    finally:
        handle.stop()


def test_mlflow_ui_shows_artifacts_system_metrics_dataset_and_registered_model(sweep: dict, page) -> None:
    """What a user needs to pick and reuse a model, as the MLflow UI shows it (waits on page elements only)."""
    import mlflow

    from engine.ui import start_ui

    shots = artifacts_dir()
    client = mlflow.MlflowClient(tracking_uri=sweep["uri"])
    run = min(sweep["trials"], key=lambda r: r.data.metrics["val_loss"])
    dataset = client.get_run(run.info.run_id).inputs.dataset_inputs[0].dataset
    handle = start_ui(port=0, tracking_uri=sweep["uri"], log_dir=sweep["root"])
    try:
        base = f"{handle.url}/#/experiments/{sweep['experiment_id']}/runs/{run.info.run_id}"
        page.goto(f"{base}/artifacts", wait_until="domcontentloaded")
        page.get_by_text("checkpoint.pt", exact=True).first.wait_for(timeout=UI_TIMEOUT_MS)
        _close_assistant(page)
        for name in ("config.json", "metrics.jsonl"):
            page.get_by_text(name, exact=True).first.wait_for(timeout=UI_TIMEOUT_MS)
        page.screenshot(path=str(shots / "mlflow_trial_artifacts.png"))

        page.goto(f"{base}/system-metrics", wait_until="domcontentloaded")
        for chart in ("cpu_utilization_percentage", "process_rss_megabytes", "system_memory_usage_megabytes"):
            page.get_by_text(chart, exact=True).first.wait_for(timeout=UI_TIMEOUT_MS)
        page.screenshot(path=str(shots / "mlflow_trial_system_metrics.png"))

        page.goto(base, wait_until="domcontentloaded")  # the run's overview lists its dataset input
        page.get_by_text(dataset.name).first.wait_for(timeout=UI_TIMEOUT_MS)
        assert dataset.digest in page.inner_text("body")

        page.goto(f"{handle.url}/#/models/{SWEEP}", wait_until="domcontentloaded")
        for v in sweep["versions"]:
            page.get_by_text(f"Version {v.version}", exact=True).first.wait_for(timeout=UI_TIMEOUT_MS)
        _close_assistant(page)
        body = page.inner_text("body")
        for v in sweep["versions"]:
            assert v.tags["engine.trial_id"] in body, f"version {v.version}'s trial not shown"
        assert f"best trial per model size of sweep {SWEEP}" in body
        page.screenshot(path=str(shots / "mlflow_registered_model.png"))
    finally:
        handle.stop()


def _close_assistant(page) -> None:
    """Close MLflow's assistant side panel (if this version has one) so screenshots show the runs."""
    close = page.locator("[data-component-id='mlflow.assistant.chat_panel.close']")
    if close.count():
        close.first.click()


def test_report_html_shows_plots_and_fitted_exponents(sweep: dict, page) -> None:
    report = sweep["report_dir"] / "report.html"
    assert report.is_file(), f"no report at {report}"
    fits = json.loads((sweep["report_dir"] / "fits.json").read_text())
    beta = fits["sweeps"][0]["axis_fits"]["val_loss"]["n_params"]["fits"]["power"]["params"]["beta"]

    page.goto(report.as_uri(), wait_until="load")
    images = page.evaluate(
        "() => Array.from(document.images).map(i => ({src: i.src.slice(0, 40), ok: i.complete && i.naturalWidth > 0}))"
    )
    assert images, "the report has no plots"
    assert all(img["ok"] for img in images), f"plots that did not load: {[i for i in images if not i['ok']]}"
    text = page.inner_text("body")
    assert f"Scaling report: {SWEEP}" in text
    section = text[text.index("val_loss vs n_params") :]
    shown = re.search(r"beta = (-?[0-9.]+(?:e[-+]?[0-9]+)?)", section)
    assert shown, "no fitted exponent beta shown for val_loss vs n_params"
    assert float(shown.group(1)) == pytest.approx(beta, rel=1e-3)  # the same number as fits.json
    page.screenshot(path=str(artifacts_dir() / "report_top.png"))
    page.screenshot(path=str(artifacts_dir() / "report_full.png"), full_page=True)


def test_sweep_checkpoint_drives_the_ase_calculator(sweep: dict) -> None:
    """The checkpoint a sweep trial records in MLflow is usable as an ASE calculator."""
    from ase.build import bulk

    from models.calculator import EngineCalculator

    run = sweep["trials"][0]
    path = Path(run.data.tags["engine.checkpoint_path"])
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True)
    atoms.calc = EngineCalculator(path)
    assert atoms.get_forces().shape == (4, 3)
    assert atoms.get_stress().shape == (6,)
    # the same trial as a registered model version, downloaded from MLflow
    version = next(v for v in sweep["versions"] if v.run_id == run.info.run_id)
    registered = atoms.copy()
    registered.calc = EngineCalculator(f"models:/{SWEEP}/{version.version}", tracking_uri=sweep["uri"])
    assert registered.get_potential_energy() == pytest.approx(atoms.get_potential_energy(), rel=1e-12)
