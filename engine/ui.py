"""Start the MLflow UI against the engine's tracking store: ``python -m engine.ui``.

Usage::

    python -m engine.ui [--port 5000] [--host 127.0.0.1] [--tracking-uri URI]

The server binds 127.0.0.1 by default, reads ``$MLFLOW_TRACKING_URI`` or ``./mlflow.db``
(:func:`engine.paths.default_tracking_uri`) and serves artifacts from ``mlartifacts`` beside it.
``mlflow server`` starts helper processes that can outlive it (DESIGN.md, Ray note 10), so it
runs with job execution disabled and one worker in its own process group, and the whole group
is ended on stop, Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from engine.cli import run_cli
from engine.errors import ConfigError, TrackingError
from engine.paths import default_artifact_root, default_tracking_uri

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5000
_LOG_TAIL_CHARS = 2000


def _free_port(host: str) -> int:
    """A port the OS reports free right now on ``host``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def _backend_uri(tracking_uri: str) -> str:
    """Validate a tracking URI for ``mlflow server --backend-store-uri``."""
    if tracking_uri.startswith(("http://", "https://")):
        raise ConfigError(
            f"tracking URI {tracking_uri} is already an MLflow server; open it in a browser instead "
            "of starting a UI, or pass --tracking-uri sqlite:///path/to/mlflow.db"
        )
    if tracking_uri.startswith("sqlite:///"):
        db = Path(tracking_uri.removeprefix("sqlite:///"))
        if not db.parent.is_dir():
            raise ConfigError(f"folder of the MLflow store {db} does not exist; run a sweep or fix --tracking-uri")
        return tracking_uri
    if "://" not in tracking_uri:  # a plain folder: MLflow's file store
        return Path(tracking_uri).resolve().as_uri()
    return tracking_uri


def _artifact_root_for(backend: str) -> Path:
    """``mlartifacts`` beside a SQLite store (where the sweep puts artifacts), else ./mlartifacts."""
    if backend.startswith("sqlite:///"):
        return Path(backend.removeprefix("sqlite:///")).resolve().parent / "mlartifacts"
    return default_artifact_root()


@dataclass
class UIHandle:
    """A running MLflow UI: ``url``, the server process, and :meth:`stop`."""

    url: str
    process: subprocess.Popen
    log_path: Path
    _stopped: bool = field(default=False, repr=False)

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-_LOG_TAIL_CHARS:]
        except OSError:
            return ""

    def stop(self, timeout_s: float = 10.0) -> None:
        """End the server's whole process group: SIGTERM, then SIGKILL after ``timeout_s``."""
        if self._stopped:
            return
        self._stopped = True
        pgid = self.process.pid  # start_new_session=True: the server leads its own group
        for sig, wait_s in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + wait_s
            while time.monotonic() < deadline and _group_alive(pgid):
                time.sleep(0.1)
                self.process.poll()  # reap the leader so it does not linger as a zombie
            if not _group_alive(pgid):
                break
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=5.0)

    def __enter__(self) -> UIHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _group_alive(pgid: int) -> bool:
    """True while any non-zombie process of group ``pgid`` exists."""
    import psutil

    for proc in psutil.process_iter(["pid"]):
        try:
            if os.getpgid(proc.info["pid"]) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                return True
        except (ProcessLookupError, psutil.NoSuchProcess, psutil.AccessDenied, PermissionError):
            continue
    return False


def _wait_healthy(handle: UIHandle, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if handle.process.poll() is not None:
            raise TrackingError(
                f"mlflow server exited with code {handle.process.returncode}: "
                f"{handle.log_tail().strip().splitlines()[-1:] or ['(no output)']}; check --tracking-uri and --port"
            )
        try:
            with urllib.request.urlopen(f"{handle.url}/health", timeout=1.0) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass
        time.sleep(0.25)
    handle.stop()
    raise TrackingError(f"mlflow server did not answer on {handle.url} within {timeout_s:.0f} s; see {handle.log_path}")


def start_ui(
    port: int = DEFAULT_PORT,
    host: str = DEFAULT_HOST,
    tracking_uri: str | None = None,
    artifact_root: str | Path | None = None,
    log_dir: str | Path | None = None,
    timeout_s: float = 90.0,
) -> UIHandle:
    """Start ``mlflow server`` in its own process group and wait until ``/health`` answers.

    ``port=0`` picks a free port. Artifacts default to ``mlartifacts`` beside a SQLite store
    (``./mlartifacts`` for the default ``./mlflow.db``, :func:`engine.paths.default_artifact_root`).
    The server's output goes to ``<log_dir>/mlflow-ui.log`` (default: the artifact folder).
    Returns a :class:`UIHandle`; call ``.stop()`` (or use it as a context manager) to end it.
    """
    uri = tracking_uri or default_tracking_uri()
    backend = _backend_uri(uri)
    if port == 0:
        port = _free_port(host)
    elif not 0 < port < 65536:
        raise ConfigError(f"port {port} is out of range; pass --port between 1 and 65535")
    if _port_in_use(host, port):
        raise ConfigError(f"port {port} on {host} is already in use; pass another --port (e.g. --port {port + 1})")
    artifacts = Path(artifact_root) if artifact_root is not None else _artifact_root_for(backend)
    artifacts.mkdir(parents=True, exist_ok=True)
    log_folder = Path(log_dir) if log_dir is not None else artifacts
    log_folder.mkdir(parents=True, exist_ok=True)
    log_path = log_folder / "mlflow-ui.log"

    cmd = [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", backend,
        "--default-artifact-root", artifacts.resolve().as_uri(),
        "--artifacts-destination", artifacts.resolve().as_uri(),
        "--host", host,
        "--port", str(port),
        "--workers", "1",
    ]  # fmt: skip
    env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True
        )
    handle = UIHandle(url=f"http://{host}:{port}", process=proc, log_path=log_path)
    try:
        _wait_healthy(handle, timeout_s)
    except BaseException:
        handle.stop()
        raise
    return handle


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def serve_forever(handle: UIHandle) -> None:
    """Block until Ctrl-C or SIGTERM (or the server dies), then stop the server's group."""
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        while handle.process.poll() is None:
            time.sleep(0.5)
        raise TrackingError(f"mlflow server exited with code {handle.process.returncode}; see {handle.log_path}")
    except KeyboardInterrupt:
        print("stopping the MLflow UI", file=sys.stderr)
    finally:
        handle.stop()
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.ui", description="Start the MLflow UI on the sweep store.")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="port to listen on (0 = any free port)")
    parser.add_argument("--host", default=DEFAULT_HOST, help="interface to bind (default 127.0.0.1: this machine only)")
    parser.add_argument(
        "--tracking-uri", default=None, help="MLflow store (default: $MLFLOW_TRACKING_URI or sqlite:///./mlflow.db)"
    )
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_interrupt)  # a SIGTERM during start-up also stops the server group
    # a shell's background job inherits SIGINT ignored; `kill -INT` must still stop the UI as Ctrl-C does
    signal.signal(signal.SIGINT, _raise_interrupt)
    handle = start_ui(port=args.port, host=args.host, tracking_uri=args.tracking_uri)
    print(f"MLflow UI: {handle.url}  (store {args.tracking_uri or default_tracking_uri()}; Ctrl-C to stop)", flush=True)
    serve_forever(handle)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
