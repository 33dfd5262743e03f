"""Start the MLflow UI / tracking server on the engine's store: ``python -m engine.ui``.

Usage::

    python -m engine.ui [--port 5000] [--host 127.0.0.1] [--tracking-uri URI] [--artifacts-destination DIR|URI]

The server binds 127.0.0.1 by default, reads ``$MLFLOW_TRACKING_URI`` or ``./mlflow.db``
(:func:`engine.paths.default_tracking_uri`) and serves artifacts from ``mlartifacts`` beside it.
For a cluster, run it on a machine the driver reaches, on a database several drivers can share::

    python -m engine.ui --host 0.0.0.0 --tracking-uri postgresql://mlflow@dbhost:5432/mlflow \\
        --artifacts-destination s3://bucket/mlflow
    python -m engine.scale --tracking-uri http://<that host>:5000 ...

The process management lives in :mod:`engine.tracking_server`; this module parses and calls it.
"""

from __future__ import annotations

import argparse
import signal
import sys

from engine.cli import run_cli
from engine.paths import default_tracking_uri
from engine.tracking_server import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    ServerHandle,
    raise_interrupt,
    serve_forever,
    start_server,
)

# the names this module had before the process management moved out (scripts and tests use them)
UIHandle = ServerHandle
start_ui = start_server

__all__ = ["UIHandle", "main", "start_ui"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.ui", description="Start the MLflow UI on the sweep store.")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="port to listen on (0 = any free port)")
    parser.add_argument("--host", default=DEFAULT_HOST, help="interface to bind (default 127.0.0.1: this machine only)")
    parser.add_argument(
        "--tracking-uri",
        default=None,
        help="backend store: sqlite:///mlflow.db, postgresql://user@host/db, ... "
        "(default: $MLFLOW_TRACKING_URI or sqlite:///./mlflow.db)",
    )
    parser.add_argument(
        "--artifacts-destination",
        default=None,
        help="where the server stores uploaded artifacts: a folder or s3://, gs:// (default: mlartifacts beside "
        "a SQLite store, else ./mlartifacts)",
    )
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, raise_interrupt)  # a SIGTERM during start-up also stops the server group
    # a shell's background job inherits SIGINT ignored; `kill -INT` must still stop the UI as Ctrl-C does
    signal.signal(signal.SIGINT, raise_interrupt)
    handle = start_server(
        port=args.port, host=args.host, tracking_uri=args.tracking_uri, artifact_root=args.artifacts_destination
    )
    print(f"MLflow UI: {handle.url}  (store {args.tracking_uri or default_tracking_uri()}; Ctrl-C to stop)", flush=True)
    serve_forever(handle)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
