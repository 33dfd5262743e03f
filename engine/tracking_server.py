"""An MLflow tracking server as a managed process: start it, wait until it answers, stop its whole group.

``python -m engine.ui`` is the thin CLI over this module; tests and scripts call :func:`start_server`.

    with start_server(port=0, tracking_uri="postgresql://mlflow@db:5432/mlflow",
                      artifact_root="/shared/mlartifacts") as server:
        ...  # drivers log to server.url (python -m engine.scale --tracking-uri <url>)

The backend store is a SQLite file, a folder (file store) or a database URI (``postgresql://``,
``mysql://``: several sweep drivers may write at once). Artifacts are served through the server
(``mlflow-artifacts:/``, stored under ``artifact_root``: a folder, ``s3://`` or ``gs://``), so drivers and
workers on other machines upload over HTTP. ``mlflow server`` starts helper processes that can
outlive it (docs/design.md, Ray note 10), so it runs with job execution disabled and one worker in its
own process group, and the whole group is ended on stop.
"""

from __future__ import annotations

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

from engine.errors import ConfigError, TrackingError
from engine.paths import default_artifact_root, default_tracking_uri, with_postgres_driver

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
    return with_postgres_driver(tracking_uri)


def _artifact_root_for(backend: str) -> Path:
    """``mlartifacts`` beside a SQLite store (where the sweep puts artifacts), else ./mlartifacts."""
    if backend.startswith("sqlite:///"):
        return Path(backend.removeprefix("sqlite:///")).resolve().parent / "mlartifacts"
    return default_artifact_root()


@dataclass
class ServerHandle:
    """A running MLflow server: ``url``, the server process, and :meth:`stop`."""

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

    def __enter__(self) -> ServerHandle:
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


def _wait_healthy(handle: ServerHandle, timeout_s: float) -> None:
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


def start_server(
    port: int = DEFAULT_PORT,
    host: str = DEFAULT_HOST,
    tracking_uri: str | None = None,
    artifact_root: str | Path | None = None,
    log_dir: str | Path | None = None,
    timeout_s: float = 90.0,
) -> ServerHandle:
    """Start ``mlflow server`` in its own process group and wait until ``/health`` answers.

    ``tracking_uri`` is the backend store (default ``$MLFLOW_TRACKING_URI`` or ``./mlflow.db``).
    ``port=0`` picks a free port. ``artifact_root`` is where the server stores the artifacts it
    receives (a folder, or a ``s3://``/``gs://`` URI); it defaults to ``mlartifacts`` beside a SQLite
    store, else ``./mlartifacts`` (:func:`engine.paths.default_artifact_root`). Experiments created
    through the server store artifacts as ``mlflow-artifacts:/`` (uploaded over HTTP); experiments
    a sweep created on a SQLite store keep the folder it set. The server's output goes to
    ``<log_dir>/mlflow-server.log`` (default: the artifact folder, or the working directory for a
    remote one). Returns a :class:`ServerHandle`; ``.stop()`` it (or use it as a context manager).
    """
    uri = tracking_uri or default_tracking_uri()
    backend = _backend_uri(uri)
    if port == 0:
        port = _free_port(host)
    elif not 0 < port < 65536:
        raise ConfigError(f"port {port} is out of range; pass --port between 1 and 65535")
    if _port_in_use(host, port):
        raise ConfigError(f"port {port} on {host} is already in use; pass another --port (e.g. --port {port + 1})")
    remote = isinstance(artifact_root, str) and "://" in artifact_root and not artifact_root.startswith("file:")
    if remote:
        destination, log_folder = str(artifact_root), Path(log_dir or ".")
    else:
        folder = Path(str(artifact_root).removeprefix("file://")) if artifact_root else _artifact_root_for(backend)
        folder.mkdir(parents=True, exist_ok=True)
        destination, log_folder = folder.resolve().as_uri(), Path(log_dir) if log_dir is not None else folder
    log_folder.mkdir(parents=True, exist_ok=True)
    log_path = log_folder / "mlflow-server.log"

    cmd = [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", backend,
        "--artifacts-destination", destination,
        "--host", host,
        "--port", str(port),
        "--workers", "1",
    ]  # fmt: skip
    env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True
        )
    handle = ServerHandle(url=f"http://{host}:{port}", process=proc, log_path=log_path)
    try:
        _wait_healthy(handle, timeout_s)
    except BaseException:
        handle.stop()
        raise
    return handle


def raise_interrupt(signum: int, frame: object) -> None:
    """Signal handler: turn SIGTERM (or an inherited-ignored SIGINT) into a KeyboardInterrupt."""
    raise KeyboardInterrupt


def serve_forever(handle: ServerHandle) -> None:
    """Block until Ctrl-C or SIGTERM (or the server dies), then stop the server's group."""
    previous = signal.signal(signal.SIGTERM, raise_interrupt)
    try:
        while handle.process.poll() is None:
            time.sleep(0.5)
        raise TrackingError(f"mlflow server exited with code {handle.process.returncode}; see {handle.log_path}")
    except KeyboardInterrupt:
        print("stopping the MLflow server", file=sys.stderr)
    finally:
        handle.stop()
        signal.signal(signal.SIGTERM, previous)


