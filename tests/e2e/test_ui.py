"""The MLflow UI launcher: serves the store on 127.0.0.1 and leaves no process behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from engine.errors import ConfigError
from engine.ui import start_ui
from tests.e2e.processes import alive_pids

REPO = Path(__file__).resolve().parents[2]


def _make_store(tmp_path: Path) -> str:
    """A SQLite MLflow store holding one experiment with one run and a metric."""
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=uri)
    exp_id = client.create_experiment("ui-check", artifact_location=(tmp_path / "art").as_uri())
    run = client.create_run(exp_id, run_name="trial-0")
    client.log_metric(run.info.run_id, "val_loss", 1.5, step=0)
    client.set_terminated(run.info.run_id)
    return uri




def test_start_ui_serves_store_and_stop_leaves_nothing(tmp_path: Path) -> None:
    uri = _make_store(tmp_path)
    handle = start_ui(port=0, tracking_uri=uri, artifact_root=tmp_path / "art", log_dir=tmp_path)
    try:
        assert handle.url.startswith("http://127.0.0.1:")
        tree = [handle.pid] + [p.pid for p in psutil.Process(handle.pid).children(recursive=True)]
        req = urllib.request.Request(
            f"{handle.url}/api/2.0/mlflow/experiments/get-by-name?experiment_name=ui-check",
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            body = json.loads(resp.read())
        assert body["experiment"]["name"] == "ui-check"
        # the server is bound to loopback only
        conns = [c for p in tree for c in _connections(p) if c.status == psutil.CONN_LISTEN]
        assert conns and all(c.laddr.ip == "127.0.0.1" for c in conns)
    finally:
        handle.stop()
    assert alive_pids(tree) == []


def _connections(pid: int) -> list:
    try:
        return psutil.Process(pid).net_connections(kind="tcp")
    except psutil.NoSuchProcess:
        return []


def test_port_in_use_is_a_one_line_error(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        with pytest.raises(ConfigError, match=f"port {port} .* already in use; pass another --port"):
            start_ui(port=port, tracking_uri=f"sqlite:///{tmp_path / 'm.db'}", artifact_root=tmp_path / "a")


@pytest.mark.parametrize(
    "sig", [signal.SIGINT, pytest.param(signal.SIGTERM, marks=pytest.mark.slow)], ids=["ctrl-c", "sigterm"]
)
def test_cli_prints_url_and_ctrl_c_stops_everything(tmp_path: Path, sig: signal.Signals) -> None:
    uri = _make_store(tmp_path)
    env = dict(os.environ, MLFLOW_TRACKING_URI=uri)
    (tmp_path / "cwd").mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine.ui", "--port", "0"],
        cwd=tmp_path / "cwd",
        env=dict(env, PYTHONPATH=str(REPO)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()  # printed once /health answers
        assert line.startswith("MLflow UI: http://127.0.0.1:"), line + proc.stderr.read()
        url = line.split()[2]
        with urllib.request.urlopen(f"{url}/health", timeout=10) as resp:
            assert resp.status == 200
        tree = [p.pid for p in psutil.Process(proc.pid).children(recursive=True)]
        assert tree, "the UI server should run as a child process"
        proc.send_signal(sig)  # SIGINT is what Ctrl-C sends to the foreground process
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    deadline = time.monotonic() + 10
    while alive_pids(tree) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert alive_pids(tree) == []
    assert (tmp_path / "mlartifacts").is_dir()  # artifacts beside the SQLite store, as the sweep writes them


def test_database_uris_use_the_pinned_driver_and_the_cli_stays_thin() -> None:
    """SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3; the project pins psycopg2 (checked by
    tests/e2e/test_postgres_tracking.py against a real server)."""
    import importlib.util

    from engine import ui
    from engine.tracking_server import with_postgres_driver

    if importlib.util.find_spec("psycopg") is None:
        assert with_postgres_driver("postgresql://u@h:5432/db") == "postgresql+psycopg2://u@h:5432/db"
        assert with_postgres_driver("postgres://u@h/db") == "postgresql+psycopg2://u@h/db"
    assert with_postgres_driver("postgresql+psycopg2://u@h/db") == "postgresql+psycopg2://u@h/db"
    assert with_postgres_driver("sqlite:///x.db") == "sqlite:///x.db"
    assert ui.start_ui.__module__ == "engine.tracking_server"  # the process management lives in the library
    assert len(Path(ui.__file__).read_text().splitlines()) < 150
