"""What a user sees after a sweep, checked in a real headless Chromium.

Runs a tiny real sweep (``python -m engine.scale --axis params`` on a three-size space written
here), starts the MLflow UI with :func:`engine.ui.start_ui`, and drives Debian's Chromium
through Playwright: the sweep's experiment lists its trial runs, a trial's page shows its
metrics, its artifacts (checkpoint, config, metrics), its system metrics and its dataset input, the
Model Registry shows one version per size, and ``reports/<sweep>/report.html`` shows its plots and
fitted exponents. Screenshots
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
def page(sweep: dict) -> Iterator:
    from playwright.sync_api import sync_playwright  # the Python driver only; the browser is Debian's

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser.new_page(viewport={"width": 1400, "height": 1000})
        finally:
            browser.close()


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
