"""One driver per sweep: a lock file (host, pid, start time) in the sweep's folder.

Created with ``O_CREAT | O_EXCL``, so two drivers starting at once cannot both win. A lock left by
a driver that died (same host, its pid no longer alive, or alive but started after the lock was
taken: a reused pid) is taken over; any other lock stops the second driver with one line.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

from engine.errors import ConfigError

LOCK_FILE = "driver.lock"


def _process_start_time(pid: int) -> float | None:
    """When ``pid`` started (seconds since the epoch) on Linux, else None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        ticks = int(stat.rsplit(")", 1)[1].split()[19])
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime"))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class DriverLock:
    """``with DriverLock(sweep_dir, name):`` holds the sweep's lock for the driver's lifetime."""

    def __init__(self, sweep_dir: Path, sweep: str) -> None:
        self.path = Path(sweep_dir) / LOCK_FILE
        self.sweep = sweep
        self.held = False
        self.info = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time()}

    def _stale(self, other: dict) -> bool:
        if other.get("host") != self.info["host"]:
            return False  # another machine's driver: only its host can tell whether it lives
        pid = int(other.get("pid", -1))
        if pid == os.getpid():
            return True  # this process took it before (a library caller running sweeps in turn)
        if pid <= 0 or not _alive(pid):
            return True
        began = _process_start_time(pid)
        return began is not None and began > float(other.get("started", 0.0)) + 1.0  # the pid was reused

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(self.info) + "\n"
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                try:
                    other = json.loads(self.path.read_text())
                except (OSError, ValueError):
                    other = {}  # half-written by a driver that died at once: stale
                if other and not self._stale(other):
                    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(other.get("started", 0))))
                    raise ConfigError(
                        f"sweep {self.sweep!r} is being run by pid {other.get('pid')} on {other.get('host')} "
                        f"since {since} ({self.path}); wait for it to end, or delete that file if it is gone"
                    ) from None
                self.path.unlink(missing_ok=True)  # stale: take it over
                continue
            with os.fdopen(fd, "w") as fh:
                fh.write(text)
            self.held = True
            return
        raise ConfigError(f"could not take the lock {self.path}: another driver keeps racing for it; retry")

    def release(self) -> None:
        if not self.held:
            return
        try:
            if json.loads(self.path.read_text()).get("pid") == self.info["pid"]:
                self.path.unlink()
        except (OSError, ValueError):
            pass
        self.held = False

    def __enter__(self) -> DriverLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
