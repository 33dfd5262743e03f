"""Default locations, all relative to the working directory unless overridden.

- dataset cache:   $ENGINE_CACHE or ./cache
- sweep folders:   $ENGINE_SWEEPS or ./sweeps/<sweep name>/  (trial dirs, checkpoints, Ray results)
- reports:         $ENGINE_REPORTS or ./reports/<sweep name>/
- MLflow store:    $MLFLOW_TRACKING_URI or sqlite:///./mlflow.db, artifacts in ./mlartifacts
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    return Path(os.environ.get("ENGINE_CACHE", "cache")).resolve()


def sweeps_dir() -> Path:
    return Path(os.environ.get("ENGINE_SWEEPS", "sweeps")).resolve()


def reports_dir() -> Path:
    return Path(os.environ.get("ENGINE_REPORTS", "reports")).resolve()


def default_tracking_uri() -> str:
    """``$MLFLOW_TRACKING_URI`` if set, else a SQLite file ``mlflow.db`` in the working directory."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    return f"sqlite:///{Path('mlflow.db').resolve()}"


def default_artifact_root() -> Path:
    """Artifacts beside the default SQLite store (``./mlartifacts``)."""
    return Path("mlartifacts").resolve()


def with_postgres_driver(uri: str) -> str:
    """``postgresql://`` → ``postgresql+psycopg2://`` unless psycopg 3 is installed.

    SQLAlchemy 2.1 maps a bare ``postgresql://`` to psycopg 3; the project pins ``psycopg2-binary``.
    Lives here (below models) so both the calculator and the sweep's tracker can use it.
    """
    import importlib.util

    for prefix in ("postgresql://", "postgres://"):
        if uri.startswith(prefix) and importlib.util.find_spec("psycopg") is None:
            return "postgresql+psycopg2://" + uri.removeprefix(prefix)
    return uri
