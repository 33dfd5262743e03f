"""Where trial state lives so that it outlives a node: a folder every node sees, or an object store.

A sweep's storage root holds ``trials/<trial_id>/`` (checkpoint, metrics, config, attempts, the
driver's completion marker) and ``ray/`` (Ray Tune's experiment state, ``RunConfig(storage_path)``).

- A plain path (the default: the sweep folder; or an NFS/EFS mount): trials train directly in
  ``<root>/trials/<id>``. On a cluster the path must be the same shared file system on every node;
  :func:`check_visible_from_workers` proves it before the sweep starts.
- A URI (``s3://``, ``gs://``, ``hdfs://``, ``file://``): read and written through pyarrow's file
  systems, the same ones Ray's storage uses. A trial trains in a local scratch folder on its node,
  pulls the folder's files from storage when it starts (the resume point after a lost node or a
  killed driver) and pushes them after every checkpoint, before the result reaches the driver.
  Files travel as streams in chunks of :data:`COPY_CHUNK_BYTES` (a checkpoint is never whole in
  memory), and a push skips a file unchanged since this process last pushed or pulled it (same
  inode, size and modification time: the loop replaces its checkpoint by a rename at every save), so
  each checkpoint is uploaded once however many reports follow it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import shutil
import tempfile
from pathlib import Path

from engine.errors import ConfigError

TRIAL_FILES = ("checkpoint.pt", "metrics.jsonl", "config.json", "attempts.json")
PROBE_FILE = ".engine-storage-probe"
COPY_CHUNK_BYTES = 8 << 20  # a push or pull holds at most this much of a file in memory


def is_uri(location: str) -> bool:
    return "://" in location


class TrialStorage:
    """One sweep's storage root (see the module docstring); paths inside it are relative, with ``/``."""

    def __init__(self, location: str) -> None:
        import pyarrow.fs as pafs

        self.location = location
        self.remote = is_uri(location)
        if self.remote:
            try:
                self.fs, root = pafs.FileSystem.from_uri(location)
            except (ValueError, OSError, ImportError) as exc:  # unknown scheme, missing credentials, no such bucket
                raise ConfigError(f"storage {location!r} cannot be opened ({exc}); fix --storage") from exc
            self.root = root.rstrip("/")
        else:
            self.fs = pafs.LocalFileSystem()
            self.root = str(Path(location).expanduser().resolve())
        self._synced: dict[str, tuple[int, ...]] = {}  # storage path → signature of the local file last copied

    def __reduce__(self):  # travels to workers as its location; each process opens its own file system
        return (TrialStorage, (self.location,))

    # -- paths -------------------------------------------------------------------------
    def path(self, rel: str) -> str:
        return f"{self.root}/{rel}" if rel else self.root

    def uri(self, rel: str = "") -> str:
        """``rel`` as something Ray's ``storage_path`` and humans accept (a path or a URI)."""
        if not self.remote:
            return self.path(rel)
        return self.location.rstrip("/") + (f"/{rel}" if rel else "")

    def trial_dir(self, trial_id: str) -> str:
        """Where a trial trains: in storage for a shared path, a scratch folder on this node otherwise."""
        if not self.remote:
            return self.path(f"trials/{trial_id}")
        digest = hashlib.sha1(self.location.encode()).hexdigest()[:12]  # distinct sweeps never share scratch
        return str(Path(tempfile.gettempdir()) / "engine-trials" / digest / trial_id)

    # -- files -------------------------------------------------------------------------
    def read_bytes(self, rel: str) -> bytes | None:
        import pyarrow as pa

        try:
            with self.fs.open_input_stream(self.path(rel)) as fh:
                return fh.read()
        except (FileNotFoundError, pa.ArrowException, OSError):
            return None

    def read_text(self, rel: str) -> str | None:
        data = self.read_bytes(rel)
        return None if data is None else data.decode()

    def write_bytes(self, rel: str, data: bytes) -> None:
        """Replace ``rel`` whole: a local file via a temporary sibling and rename; an object store's put is atomic."""
        target = self.path(rel)
        parent = target.rsplit("/", 1)[0]
        self.fs.create_dir(parent, recursive=True)
        if not self.remote:
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=parent)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, target)
            return
        with self.fs.open_output_stream(target) as fh:
            fh.write(data)

    def write_text(self, rel: str, text: str) -> None:
        self.write_bytes(rel, text.encode())

    def delete(self, rel: str) -> None:
        with contextlib.suppress(OSError):  # FileNotFoundError included
            self.fs.delete_file(self.path(rel))

    def list_dirs(self, rel: str) -> list[str]:
        """Names of the folders directly inside ``rel`` (empty when it does not exist)."""
        import pyarrow.fs as pafs

        try:
            infos = self.fs.get_file_info(pafs.FileSelector(self.path(rel), allow_not_found=True))
        except OSError:
            return []
        return sorted(i.base_name for i in infos if i.type == pafs.FileType.Directory)

    def upload_file(self, src: str | Path, rel: str) -> None:
        """Stream local file ``src`` into ``rel`` (chunks of :data:`COPY_CHUNK_BYTES`); replaced whole, as
        :meth:`write_bytes` does."""
        target = self.path(rel)
        parent = target.rsplit("/", 1)[0]
        self.fs.create_dir(parent, recursive=True)
        with open(src, "rb") as fin:
            if not self.remote:
                fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=parent)
                with os.fdopen(fd, "wb") as fout:
                    shutil.copyfileobj(fin, fout, COPY_CHUNK_BYTES)
                os.replace(tmp, target)
                return
            with self.fs.open_output_stream(target) as fout:  # an object store's upload appears whole on close
                shutil.copyfileobj(fin, fout, COPY_CHUNK_BYTES)

    def download_file(self, rel: str, dest: str | Path) -> bool:
        """Stream ``rel`` into local file ``dest`` (via a temporary sibling and rename); False when absent."""
        import pyarrow as pa

        dest = Path(dest)
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", dir=dest.parent)
        try:
            with os.fdopen(fd, "wb") as fout, self.fs.open_input_stream(self.path(rel)) as fin:
                while chunk := fin.read(COPY_CHUNK_BYTES):
                    fout.write(chunk)
        except (FileNotFoundError, pa.ArrowException, OSError):
            Path(tmp).unlink(missing_ok=True)
            return False
        os.replace(tmp, dest)
        return True

    @staticmethod
    def _signature(path: Path) -> tuple[int, ...]:
        st = path.stat()
        return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    # -- a trial's folder --------------------------------------------------------------
    def push(self, trial_id: str, local_dir: str | Path, names: tuple[str, ...] = TRIAL_FILES) -> list[str]:
        """Copy a trial's files from its scratch folder into storage (no-op for a shared path), streaming each and
        skipping those unchanged since this process last pushed or pulled them; returns the names uploaded."""
        if not self.remote:
            return []
        uploaded = []
        for name in names:
            src = Path(local_dir) / name
            if not src.is_file():
                continue
            rel, signature = f"trials/{trial_id}/{name}", self._signature(src)
            if self._synced.get(self.path(rel)) == signature:
                continue
            self.upload_file(src, rel)
            self._synced[self.path(rel)] = signature
            uploaded.append(name)
        return uploaded

    def pull(self, trial_id: str, local_dir: str | Path, names: tuple[str, ...] = TRIAL_FILES) -> None:
        """Bring a trial's stored files into its scratch folder (no-op for a shared path), streaming each."""
        if not self.remote:
            return
        local = Path(local_dir)
        local.mkdir(parents=True, exist_ok=True)
        for name in names:
            rel = f"trials/{trial_id}/{name}"
            if self.download_file(rel, local / name):
                self._synced[self.path(rel)] = self._signature(local / name)  # the stored copy is this file

    # -- the start-time check ----------------------------------------------------------
    def write_probe(self) -> str:
        """A fresh marker a worker node must be able to read back; returns its token."""
        token = secrets.token_hex(8)
        self.write_text(PROBE_FILE, token)
        return token


def probe_storage(storage: TrialStorage, token: str) -> str | None:
    """Run on a worker node: None when the driver's marker reads back and a write succeeds, else why not."""
    import socket

    seen = storage.read_text(PROBE_FILE)
    if seen is None:
        return f"{storage.uri(PROBE_FILE)} does not exist on node {socket.gethostname()}"
    if seen.strip() != token:
        return f"{storage.uri(PROBE_FILE)} on node {socket.gethostname()} holds another sweep's marker"
    try:
        storage.write_text(f"{PROBE_FILE}.{token}", "ok")
        storage.delete(f"{PROBE_FILE}.{token}")
    except OSError as exc:
        return f"node {socket.gethostname()} cannot write to {storage.uri()} ({exc})"
    return None


def check_visible_from_workers(storage: TrialStorage, timeout_s: float = 120.0) -> int:
    """Prove every alive worker node (not the driver's) reads the driver's marker in ``storage``.

    Raises :class:`ConfigError` with one line when a node cannot; returns how many nodes were checked
    (0 on an autoscaling cluster with no worker node up yet: each trial then checks on start).
    """
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    token = storage.write_probe()
    here = ray.get_runtime_context().get_node_id()
    nodes = [n["NodeID"] for n in ray.nodes() if n.get("Alive") and n["NodeID"] != here]
    probe = ray.remote(num_cpus=0, max_retries=0)(probe_storage)
    on = [NodeAffinitySchedulingStrategy(node_id=node, soft=False) for node in nodes]
    refs = [probe.options(scheduling_strategy=where).remote(storage, token) for where in on]
    ready, _ = ray.wait(refs, num_returns=len(refs), timeout=timeout_s)
    if len(ready) < len(refs):
        raise ConfigError(f"storage check: {len(refs) - len(ready)} worker node(s) did not answer in {timeout_s:g} s")
    checked = 0
    for ref in refs:
        try:
            problem = ray.get(ref)
        except (ray.exceptions.TaskUnschedulableError, ray.exceptions.NodeDiedError):
            continue  # listed alive a moment ago, gone now (a lost node): nothing to check there
        checked += 1
        if problem:
            raise ConfigError(
                f"storage {storage.uri()} is not shared with the worker nodes: {problem}; "
                "pass --storage with an NFS path every node mounts, or s3://bucket/prefix"
            )
    return checked


def check_trial_storage(storage: TrialStorage) -> None:
    """Inside a trial: fail in one line when this node does not see the sweep's storage."""
    if storage.read_text(PROBE_FILE) is None:
        raise ConfigError(
            f"storage {storage.uri()} is not visible on this node; "
            "pass --storage with an NFS path every node mounts, or s3://bucket/prefix"
        )
