"""Local multi-node Ray clusters for the tests, started and stopped by the PIDs they own.

- :func:`start_cluster`: a head with 0 CPUs (like cluster.yaml's) and worker nodes as separate
  raylets (``ray.cluster_utils.Cluster``), for DDP across nodes and node loss.
- :func:`start_autoscaling_cluster`: ``ray start --head`` with ``cluster.local.yaml`` and Ray's fake
  multi-node provider, which starts worker nodes on demand (docs/design.md Ray note 11).

Both live in a private temporary folder with their own auth token; stopping one ends exactly the
processes whose command line names that folder (never ``ray stop``, never a process name).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
RAY_BIN = Path(sys.executable).parent / "ray"


def ray_env(base: Path) -> dict[str, str]:
    """Environment of every process of one test cluster (its driver included)."""
    token = base / "auth_token"
    if not token.exists():
        token.write_text(secrets.token_hex(32))
    return {
        "RAY_AUTH_MODE": "token",  # explicit: a driver that joins a running head must send the token
        "RAY_AUTH_TOKEN_PATH": str(token),
        "RAY_TMPDIR": str(base),
        "TMPDIR": str(base),
    }


def processes_under(base: Path) -> list[int]:
    """PIDs whose command line names ``base`` (the cluster's own processes)."""
    found = []
    needle = str(base).encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def kill_under(base: Path, grace_s: float = 10.0) -> list[int]:
    """SIGTERM, then SIGKILL, every process of the cluster in ``base``; returns the ones still alive (none)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = processes_under(base)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace_s
        while processes_under(base) and time.monotonic() < deadline:
            time.sleep(0.2)
    return processes_under(base)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LocalCluster:
    """A running test cluster: its address, folder and the environment its drivers need."""

    address: str
    base: Path
    env: dict[str, str]
    cluster: object = None  # ray.cluster_utils.Cluster (explicit nodes)
    nodes: list = field(default_factory=list)
    head_proc: subprocess.Popen | None = None

    def stop(self) -> list[int]:
        """Stop everything this cluster started; returns PIDs left behind (an empty list)."""
        if self.cluster is not None:
            with contextlib.suppress(Exception):  # whatever is left, kill_under finishes the job
                self.cluster.shutdown()
        if self.head_proc is not None and self.head_proc.poll() is None:
            self.head_proc.send_signal(signal.SIGTERM)
        left = kill_under(self.base)
        if self.head_proc is not None:
            self.head_proc.wait(timeout=30)
        shutil.rmtree(self.base, ignore_errors=True)
        return left


def new_base(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))  # short: unix socket paths are limited


def start_cluster(worker_cpus: list[float], base: Path) -> LocalCluster:
    """A head with 0 CPUs and one raylet per entry of ``worker_cpus``, in ``base`` (this process's
    environment must already hold :func:`ray_env` of ``base``: the raylets inherit it)."""
    from ray.cluster_utils import Cluster

    env = ray_env(base)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    nodes = [cluster.add_node(num_cpus=cpus) for cpus in worker_cpus]
    cluster.wait_for_nodes()
    return LocalCluster(address=cluster.address, base=base, env=env, cluster=cluster, nodes=nodes)


def start_autoscaling_cluster(config: Path = ROOT / "cluster.local.yaml", timeout_s: float = 120.0) -> LocalCluster:
    """``ray start --head`` with the fake multi-node autoscaler of ``config`` (0 worker nodes at first)."""
    base = new_base("ra")
    env = ray_env(base)
    port = free_port()
    values = yaml.safe_load(config.read_text())
    values["provider"]["gcs_address"] = f"127.0.0.1:{port}"  # the file's default is 6379; tests take a free port
    (base / "cluster.yaml").write_text(yaml.safe_dump(values))
    cmd = [
        str(RAY_BIN), "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1", "--num-cpus=0",
        f"--autoscaling-config={base / 'cluster.yaml'}", f"--temp-dir={base / 'ray'}", "--include-dashboard=false",
        "--block",
    ]
    log = open(base / "head.log", "w")  # noqa: SIM115 - the head writes to it for its lifetime
    proc = subprocess.Popen(cmd, env={**os.environ, **env, "RAY_FAKE_CLUSTER": "1"}, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    handle = LocalCluster(address=f"127.0.0.1:{port}", base=base, env=env, head_proc=proc)
    deadline = time.monotonic() + timeout_s
    while "will now block" not in (base / "head.log").read_text():  # `ray start` says so once the head is up
        if proc.poll() is not None or time.monotonic() > deadline:
            text = (base / "head.log").read_text()
            handle.stop()
            raise RuntimeError(f"the fake-autoscaler head did not start:\n{text[-3000:]}")
        time.sleep(0.2)
    return handle
