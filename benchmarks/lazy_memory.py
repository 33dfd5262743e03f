"""Resident memory of the streaming data path against dataset size (issue 12: < 10 % growth from 10⁴ to 10⁶).

    .venv/bin/python -m benchmarks.lazy_memory [sizes...]      # default: 10000 1000000

For each size, a synthetic ``.aselmdb`` of N copies of one EMT row (written straight through LMDB, seconds
per million rows) is opened in a fresh process that indexes it (:class:`LazyAseDB`), splits it by index
(:func:`lazy_splits`, every uid hashed) and draws 50 batches of 16 random structures through two
DataLoader workers (records read and neighbor lists built there). Reported: the main process's resident
set after imports and at the end (VmRSS; RssAnon without file-backed pages), and the largest worker's
(its RssFile is mostly LMDB's memory-mapped pages: shared page cache, reclaimable).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def make_lmdb(path: Path, n: int) -> None:
    """N identical rows (ids 1..N) plus ``nextid``, in the layout ase-db-backends writes."""
    import lmdb
    from ase_db_backends.aselmdb import encode_object

    from engine.data.emt import generate_records
    from engine.data.store import write_aselmdb

    seed_file = path.with_name("seed.aselmdb")
    write_aselmdb(generate_records(seed=3, size=1, progress=False), seed_file)
    env = lmdb.open(str(seed_file), subdir=False, readonly=True, lock=False)
    with env.begin() as txn:
        value = bytes(txn.get(b"1"))
    env.close()
    env = lmdb.open(str(path), subdir=False, map_size=max(1 << 30, 4 * n * len(value)))
    for start in range(1, n + 1, 100_000):
        with env.begin(write=True) as txn:
            for i in range(start, min(start + 100_000, n + 1)):
                txn.put(str(i).encode("ascii"), value)
    with env.begin(write=True) as txn:
        txn.put(b"nextid", encode_object(n + 1, compress=True, json_encode=True))
    env.close()


CHILD = r"""
import json, sys, numpy as np
def rss(pid="self", field="VmRSS"):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
import torch
from engine.data.graph import GraphSpec
from engine.data.lazy import LazyAseDB, LazyGraphDataset, batch_loader, lazy_splits
torch.set_num_threads(1)
base = rss()
db = LazyAseDB(sys.argv[1])
splits = lazy_splits(db, train_size=min(len(db) // 2, 500_000))
rng = np.random.default_rng(0)
batches = [rng.choice(splits.train, size=16, replace=False).tolist() for _ in range(50)]
loader = batch_loader(LazyGraphDataset(db, GraphSpec(5.0, 32, True)), batches, num_workers=2, prefetch_factor=4)
workers = []
for k, batch in enumerate(loader):
    if k == 25:
        import os
        kids = [int(p) for p in open(f"/proc/{os.getpid()}/task/{os.getpid()}/children").read().split()]
        workers = [(rss(p), rss(p, "RssAnon"), rss(p, "RssFile")) for p in kids]
top = max(workers) if workers else (None, None, None)
print(json.dumps({"records": len(db), "rss_after_imports_mb": base, "rss_end_mb": rss(),
                  "rss_anon_end_mb": rss("self", "RssAnon"), "worker_rss_max_mb": top[0],
                  "worker_rss_anon_mb": top[1], "worker_rss_file_mb": top[2], "train": len(splits.train)}))
"""


def measure(n: int, folder: Path) -> dict:
    path = folder / f"synthetic-{n}.aselmdb"
    make_lmdb(path, n)
    out = subprocess.run([sys.executable, "-c", CHILD, str(path)], cwd=ROOT, capture_output=True, text=True,
                         check=True, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})  # fmt: skip
    path.unlink()
    return json.loads(out.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    sizes = [int(x) for x in sys.argv[1:]] or [10_000, 1_000_000]
    with tempfile.TemporaryDirectory(prefix="lazymem-") as tmp:
        rows = [measure(n, Path(tmp)) for n in sizes]
    for r in rows:
        print(r)
    first, last = rows[0], rows[-1]
    growth = last["rss_end_mb"] / first["rss_end_mb"] - 1
    print(f"main-process RSS growth {first['records']:,} → {last['records']:,} records: {growth:+.1%}")
