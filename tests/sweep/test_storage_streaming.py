"""Remote trial storage streams files in chunks and uploads each checkpoint once (no Ray needed)."""

from __future__ import annotations

import os

import pytest

from engine.sweep import storage as storage_mod
from engine.sweep.storage import TrialStorage
from engine.sweep.trial import TuneReporter


@pytest.fixture
def remote(tmp_path) -> TrialStorage:
    return TrialStorage(f"file://{tmp_path / 'store'}")  # a URI: pyarrow's file system, as for s3:// or gs://


class _Stream:
    """A pyarrow stream that records the size of every read and write (what a copy holds in memory at once)."""

    def __init__(self, inner, sizes: list[int]) -> None:
        self.inner, self.sizes = inner, sizes

    def read(self, n):
        data = self.inner.read(n)
        self.sizes.append(len(data))
        return data

    def write(self, data) -> int:
        self.sizes.append(len(data))
        return self.inner.write(data)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.inner.close()


class _SpyFs:
    """pyarrow's file system classes cannot be patched: wrap the two stream methods a push and a pull use."""

    def __init__(self, fs, sizes: list[int]) -> None:
        self.fs, self.sizes = fs, sizes

    def __getattr__(self, name):
        return getattr(self.fs, name)

    def open_input_stream(self, path):
        return _Stream(self.fs.open_input_stream(path), self.sizes)

    def open_output_stream(self, path):
        return _Stream(self.fs.open_output_stream(path), self.sizes)


def test_push_and_pull_stream_in_chunks(remote, tmp_path, monkeypatch):
    monkeypatch.setattr(storage_mod, "COPY_CHUNK_BYTES", 1000)
    local = tmp_path / "scratch"
    local.mkdir()
    payload = os.urandom(10_500)
    (local / "checkpoint.pt").write_bytes(payload)
    written: list[int] = []
    remote.fs = _SpyFs(remote.fs, written)
    assert remote.push("t", local) == ["checkpoint.pt"]
    assert (tmp_path / "store" / "trials" / "t" / "checkpoint.pt").read_bytes() == payload
    assert max(written) <= 1000 and sum(written) == len(payload)

    retry = TrialStorage(remote.location)  # another process (a retry on another node)
    read: list[int] = []
    retry.fs = _SpyFs(retry.fs, read)
    retry.pull("t", tmp_path / "retry")
    assert (tmp_path / "retry" / "checkpoint.pt").read_bytes() == payload
    assert max(read) <= 1000 and sum(read) == len(payload)


def test_each_checkpoint_is_uploaded_once(remote, tmp_path):
    local = tmp_path / "scratch"
    local.mkdir()
    (local / "checkpoint.pt").write_bytes(b"step 4")
    (local / "metrics.jsonl").write_text("{}\n")
    assert sorted(remote.push("t", local)) == ["checkpoint.pt", "metrics.jsonl"]
    assert remote.push("t", local) == []  # a report right after the step checkpoint: nothing new
    (local / "metrics.jsonl").write_text("{}\n{}\n")
    assert remote.push("t", local) == ["metrics.jsonl"]
    tmp = local / ".ck.tmp"
    tmp.write_bytes(b"step 8")  # the loop's next save: a new file renamed over the old one, same size
    os.replace(tmp, local / "checkpoint.pt")
    assert remote.push("t", local) == ["checkpoint.pt"]
    assert (tmp_path / "store" / "trials" / "t" / "checkpoint.pt").read_bytes() == b"step 8"


def test_a_pulled_file_is_not_uploaded_back(remote, tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "checkpoint.pt").write_bytes(b"x" * 100)
    remote.push("t", tmp_path / "a")
    retry = TrialStorage(remote.location)
    retry.pull("t", tmp_path / "b")
    assert retry.push("t", tmp_path / "b") == []


def test_a_step_checkpoint_is_uploaded_by_the_reporter_at_once(remote, tmp_path):
    local = tmp_path / "scratch"
    local.mkdir()
    (local / "checkpoint.pt").write_bytes(b"mid-epoch")
    TuneReporter({}, remote, "t").on_checkpoint(str(local))
    assert (tmp_path / "store" / "trials" / "t" / "checkpoint.pt").read_bytes() == b"mid-epoch"


def test_a_shared_path_is_used_in_place(tmp_path):
    shared = TrialStorage(str(tmp_path / "store"))
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "checkpoint.pt").write_bytes(b"1")
    assert shared.push("t", tmp_path / "x") == []
