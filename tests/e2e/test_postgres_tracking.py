"""Two sweep drivers at once against one MLflow tracking server backed by PostgreSQL.

What a cluster runs: a long-lived ``mlflow server`` on a real database (several drivers write to
it at once, which a SQLite file does not take well) that also stores the artifacts drivers upload
over HTTP. The PostgreSQL server is a throw-away instance made with ``initdb``/``pg_ctl`` in a
temporary folder on a free port (as the ``postgres`` user when the tests run as root: PostgreSQL
refuses to run as root). The MLflow server is started by :func:`engine.tracking_server.start_server`;
both drivers are the real ``python -m engine.scale``. Skipped only when PostgreSQL's binaries are
absent (``.ci/run`` installs Debian's ``postgresql``).
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psutil
import pytest

from tests.e2e.processes import alive_pids

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
SPACE = """\
# two-trial params space for the PostgreSQL tracking test
axis: params
model: fcn
sizes: [f0]
train_sizes: [16, 24]
seeds: [0]
fixed:
  epochs: 2
  batch_size: 8
  count_flops: false
  data: {emt_size: 40, max_val: 4}
resources:
  workers: 1
  cpus_per_worker: 1
  max_concurrent: 1
"""


def _pg_bin(name: str) -> str | None:
    """A PostgreSQL program on PATH or in Debian's versioned folder (not on PATH there)."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


def _as_user(user: str | None, cmd: list[str]) -> list[str]:
    return ["runuser", "-u", user, "--", *cmd] if user else cmd


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def postgres() -> Iterator[str]:
    """A PostgreSQL server in a temporary folder; yields the URI of an empty ``mlflow`` database."""
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if initdb is None or pg_ctl is None:
        pytest.skip("PostgreSQL binaries (initdb, pg_ctl) are absent; apt-get install postgresql")
    user = None
    if os.geteuid() == 0:  # postgres refuses root: run it as the package's own user (created if missing)
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            subprocess.run(["useradd", "--system", "--no-create-home", "postgres"], check=True)
        user = "postgres"
    base = Path(tempfile.mkdtemp(prefix="pg-", dir="/tmp"))  # short: the unix socket lives here
    if user:
        shutil.chown(base, user)
    data, port = base / "data", _free_port()
    subprocess.run(
        _as_user(user, [initdb, "-D", str(data), "-U", "engine", "--auth=trust", "-E", "UTF8", "--no-sync"]),
        check=True,
        capture_output=True,
    )
    options = f"-p {port} -k {base} -h 127.0.0.1 -c fsync=off"
    start = _as_user(user, [pg_ctl, "-D", str(data), "-l", str(base / "postgres.log"), "-w", "-o", options, "start"])
    subprocess.run(start, check=True, capture_output=True)
    try:
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=port, user="engine", dbname="postgres")
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("CREATE DATABASE mlflow")
        conn.close()
        yield f"postgresql://engine@127.0.0.1:{port}/mlflow"
    finally:
        subprocess.run(_as_user(user, [pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop"]), capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


def _count_runs(uri: str) -> int:
    """Rows in MLflow's ``runs`` table, read from PostgreSQL itself."""
    import psycopg2

    conn = psycopg2.connect(uri)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM runs")
            return int(cur.fetchone()[0])
    finally:
        conn.close()


def _processes_using(folder: str) -> list[int]:
    """PIDs whose command line mentions ``folder`` (the Ray session folders the drivers started)."""
    out = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            if any(folder in part for part in proc.info["cmdline"] or []) and proc.status() != psutil.STATUS_ZOMBIE:
                out.append(proc.info["pid"])
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return out


def test_two_sweeps_at_once_on_a_postgres_backed_server(postgres: str, tmp_path: Path) -> None:
    from mlflow import MlflowClient

    from engine.sweep.tracking import search_all
    from engine.tracking_server import start_server
    from models.calculator import EngineCalculator

    space = tmp_path / "tiny.yaml"
    space.write_text(SPACE)
    ray_tmp = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: unix socket paths are limited
    token = Path(ray_tmp) / "auth_token"
    token.write_text(secrets.token_hex(32))
    server = start_server(port=0, tracking_uri=postgres, artifact_root=tmp_path / "artifacts", log_dir=tmp_path)
    server_tree = [server.pid]
    try:
        server_tree += [p.pid for p in psutil.Process(server.pid).children(recursive=True)]
        env = dict(
            os.environ,
            PYTHONPATH=str(REPO),
            ENGINE_SWEEPS=str(tmp_path / "sweeps"),
            ENGINE_REPORTS=str(tmp_path / "reports"),
            ENGINE_CACHE=str(tmp_path / "cache"),
            MLFLOW_TRACKING_URI="sqlite:////nonexistent/not-this.db",  # the flag must win
            RAY_TMPDIR=ray_tmp,
            TMPDIR=ray_tmp,
            RAY_AUTH_TOKEN_PATH=str(token),
            OMP_NUM_THREADS="1",
        )
        drivers = {}
        for name in ("pg-a", "pg-b"):
            cmd = [sys.executable, "-m", "engine.scale", "--space", str(space), "--name", name, "--no-report"]
            log = open(tmp_path / f"{name}.log", "w")  # noqa: SIM115 - closed after the process ends
            drivers[name] = (subprocess.Popen([*cmd, "--tracking-uri", server.url], cwd=tmp_path, env=env,
                                              stdout=log, stderr=subprocess.STDOUT), log)
        for name, (proc, log) in drivers.items():
            rc = proc.wait(timeout=480)
            log.close()
            assert rc == 0, f"{name} exited {rc}:\n" + (tmp_path / f"{name}.log").read_text()[-3000:]

        client = MlflowClient(server.url)
        for name in drivers:
            exp = client.get_experiment_by_name(name)
            assert exp.artifact_location.startswith("mlflow-artifacts:"), exp.artifact_location  # proxied uploads
            runs = search_all(client, [exp.experiment_id])
            parents = [r for r in runs if r.data.tags.get("engine.kind") == "sweep"]
            trials = [r for r in runs if r.data.tags.get("engine.kind") == "trial"]
            assert len(parents) == 1 and parents[0].info.status == "FINISHED"
            ids = sorted(r.data.tags["engine.trial_id"] for r in trials)
            assert ids == ["fcn-f0-n16-s0", "fcn-f0-n24-s0"], ids  # every trial once, none duplicated
            assert {r.info.status for r in trials} == {"FINISHED"}
            assert {r.data.tags["engine.status"] for r in trials} == {"completed"}
            for run in trials:
                assert run.data.tags["engine.artifacts"] == "config.json,metrics.jsonl,checkpoint.pt"
                assert run.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
                steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_loss")]
                assert steps == sorted(set(steps)) and steps[-1] == 2, steps  # every epoch once, to the last
        # the runs live in PostgreSQL, the uploaded files under the server's artifact folder
        assert _count_runs(postgres) == 6
        assert len(list((tmp_path / "artifacts").rglob("checkpoint.pt"))) == 4
        # a trial's model loads from its run through the server alone
        shutil.rmtree(tmp_path / "sweeps")
        from ase.build import bulk

        atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
        atoms.calc = EngineCalculator(f"runs:/{trials[0].info.run_id}", tracking_uri=server.url)
        assert np.isfinite(atoms.get_potential_energy()) and np.all(np.isfinite(atoms.get_forces()))
    finally:
        server.stop()
    assert alive_pids(server_tree) == [], "server processes left behind"
    # the drivers shut their Ray down on exit; its agents may take a moment to follow
    deadline = time.monotonic() + 60
    while _processes_using(ray_tmp) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _processes_using(ray_tmp) == [], "Ray processes of the drivers were left behind"
    shutil.rmtree(ray_tmp, ignore_errors=True)
