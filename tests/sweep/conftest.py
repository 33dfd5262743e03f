"""Shared fixtures of the sweep tests: one local Ray session per test module, folders in tmp.

Ray's session folder and auth token live in a short temporary folder (unix socket paths are
limited to ~107 characters), and the session is shut down at the end of the module; ``ray stop``
is never used (it would end other people's Ray processes on a shared machine).
"""

from __future__ import annotations

import secrets
import shutil
import tempfile
from pathlib import Path

import pytest

TINY_FIXED = {
    "epochs": 2,
    "batch_size": 8,
    "optim": {"lr": 3e-3},
    "data": {"emt_size": 60, "max_val": 8},
}


@pytest.fixture(scope="module")
def ray_session():
    """A 2-CPU local Ray for the whole module, with its temp folder and auth token in a private folder."""
    import ray

    base = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))
    token = base / "auth_token"
    token.write_text(secrets.token_hex(32))
    mp = pytest.MonkeyPatch()
    mp.setenv("RAY_AUTH_TOKEN_PATH", str(token))
    mp.setenv("RAY_TMPDIR", str(base))
    mp.setenv("TMPDIR", str(base))
    ray.init(num_cpus=2, include_dashboard=False, _temp_dir=str(base), logging_level="WARNING")
    try:
        yield base
    finally:
        ray.shutdown()
        mp.undo()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    """One EMT dataset cache per module (generating the tiny set once saves seconds per test)."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def engine_env(tmp_path, shared_cache, monkeypatch):
    """Sweep folders, reports and the MLflow store of one test in its tmp_path."""
    monkeypatch.setenv("ENGINE_SWEEPS", str(tmp_path / "sweeps"))
    monkeypatch.setenv("ENGINE_REPORTS", str(tmp_path / "reports"))
    monkeypatch.setenv("ENGINE_CACHE", str(shared_cache))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return {"uri": uri, "sweeps": tmp_path / "sweeps", "cache": shared_cache, "tmp": tmp_path}
