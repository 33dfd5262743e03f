"""OMat24 scale rehearsal on this machine (issue 24, item 7): what a lazy trial costs against dataset size.

    .venv/bin/python -m benchmarks.scale_rehearsal [--sizes 100000 1000000] [--steps 40] [--folder DIR]
                                                   [--kill-resume-steps 60] [--no-kill-resume]

For each size N a synthetic ``.aselmdb`` of N small records (256 distinct EMT structures of 2–32 atoms, cycled;
LMDB rows written directly in ase-db-backends' layout: the same keys, zlib-compressed ASE JSON) is measured in
fresh processes:

- **driver** (what a sweep's driver does before any trial): the lazy index (one pass decoding every row), the
  split hashes, then ``engine.sweep.shared_data.prepare_shared_data`` (dataset digest over every uid,
  normalization on the reference subset, baselines); seconds of each and the process's resident memory;
- **trial** (as a sweep runs one, the index and splits existing): ``engine.loop.loop.Trial`` built (trial start)
  and run for ``--steps`` optimizer steps (fcn, one torch thread, one DataLoader worker, ``data.max_test`` 500):
  time to first step (start, the untrained model's report included), the loop's own time per step outside
  ``train_step`` and outside the wait for a batch, the epoch-start packing (permutation and
  :class:`~engine.data.graph.EpochBatches` over the whole training split), the epoch-end work (validation,
  checkpoint), and from these the per-epoch overhead outside training steps as a share of a full epoch's steps;
  resident memory of the trial process and of its DataLoader worker.

On the largest size, kill-mid-epoch-then-resume: ``python -m engine.train ... --lazy`` with
``checkpoint.every_steps`` is sent SIGTERM once its first step checkpoint exists (it saves at the next step and
exits 75), then run again in the same folder; its reports and final weights must equal an uninterrupted run's.
Prints one JSON line per measurement and a summary.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENV = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1", "HOME": os.environ.get("HOME", "/tmp")}
MODEL = {"model": "fcn", "model_config": {"hidden": 32, "num_rbf": 8}}


def make_dataset(path: Path, n: int, distinct: int = 256) -> dict:
    """N rows (ids 1..N) cycling ``distinct`` EMT structures' LMDB values, plus ``nextid``."""
    import lmdb
    from ase_db_backends.aselmdb import encode_object

    from engine.data.emt import generate_records
    from engine.data.store import write_aselmdb

    t0 = time.perf_counter()
    path.parent.mkdir(parents=True, exist_ok=True)
    seed_file = path.parent.parent / "seed.aselmdb"
    if not seed_file.exists():
        write_aselmdb(generate_records(seed=3, size=distinct, progress=False), seed_file)
    env = lmdb.open(str(seed_file), subdir=False, readonly=True, lock=False)
    with env.begin() as txn:
        values = [bytes(txn.get(str(i).encode("ascii"))) for i in range(1, distinct + 1)]
    env.close()
    mean = sum(map(len, values)) / len(values)
    env = lmdb.open(str(path), subdir=False, map_size=int(2 * n * (mean + 64)) + (1 << 28))
    for start in range(1, n + 1, 200_000):
        with env.begin(write=True) as txn:
            for i in range(start, min(start + 200_000, n + 1)):
                txn.put(str(i).encode("ascii"), values[(i - 1) % distinct])
    with env.begin(write=True) as txn:
        txn.put(b"nextid", encode_object(n + 1, compress=True, json_encode=True))
    env.close()
    return {"records": n, "write_s": time.perf_counter() - t0, "file_mb": path.stat().st_size / 2**20}


PROLOGUE = r"""
import json, os, sys, time
def rss(pid="self", field="VmRSS"):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
"""

DRIVER = PROLOGUE + r"""
from pathlib import Path
from engine.config import trial_config_from_dict
from engine.data.lazy import LazyAseDB, lazy_splits
from engine.sweep.shared_data import prepare_shared_data
cfg = trial_config_from_dict(json.loads(sys.argv[1]))
base = rss()
t0 = time.perf_counter()
db = LazyAseDB(cfg.data.path)
db.index(cfg.data.cache_dir)
t1 = time.perf_counter()
lazy_splits(db, cfg.data.val_fraction, cfg.data.test_fraction, cache_dir=cfg.data.cache_dir)
t2 = time.perf_counter()
Path(sys.argv[2]).mkdir(parents=True, exist_ok=True)
shared = prepare_shared_data([cfg], Path(sys.argv[2]))
t3 = time.perf_counter()
print(json.dumps({"index_build_s": t1 - t0, "rows_decoded": db.rows_read, "split_hash_s": t2 - t1,
                  "shared_data_s": t3 - t2, "driver_rss_after_imports_mb": base, "driver_rss_end_mb": rss(),
                  "driver_rss_anon_end_mb": rss("self", "RssAnon"), "driver_rss_file_end_mb": rss("self", "RssFile"),
                  "driver_rss_peak_mb": rss("self", "VmHWM"), "normalization_file": shared.normalization_file}))
"""

TRIAL = PROLOGUE + r"""
from pathlib import Path
import numpy as np, torch
from engine.config import trial_config_from_dict
from engine.loop import loop as L
cfg = trial_config_from_dict(json.loads(sys.argv[1]))
torch.set_num_threads(1)
m = {"trial_rss_after_imports_mb": rss()}
steps, waits, batch_times, evals, saves, packs = [], [], [], [], [], []
def timed(fn, into):
    def wrapper(*a, **k):
        t = time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            into.append(time.perf_counter() - t)
    return wrapper
L.train_step = timed(L.train_step, steps)  # the loop's name for it: what Trial.train_batch calls
L.Trial.evaluate_val = timed(L.Trial.evaluate_val, evals)
L.Trial.save = timed(L.Trial.save, saves)
epoch_batches = L.EpochBatches
def packed(*a, **k):  # the epoch's batches over the whole training split (the cooldown's too: none here)
    t = time.perf_counter()
    out = epoch_batches(*a, **k)
    packs.append((time.perf_counter() - t, len(out)))
    return out
L.EpochBatches = packed
feed = L.Trial.feed
def waited(self, batches):  # time the training process waits for each batch (DataLoader worker, RankShards)
    it = feed(self, batches)
    try:
        while True:
            t = time.perf_counter()
            try:
                item = next(it)
            except StopIteration:
                return
            waits.append(time.perf_counter() - t)
            yield item
    finally:
        it.close()
L.Trial.feed = waited
class Reporter:
    rows, worker = [], None
    def report(self, row, run_dir=None):
        self.rows.append((time.perf_counter(), dict(row)))
    def on_batch(self, epoch, k, n, step):
        batch_times.append(time.perf_counter())
        if step == cfg.budget.steps // 2:
            m["trial_rss_mid_mb"] = rss()
            pid = os.getpid()
            kids = [int(p) for p in open(f"/proc/{pid}/task/{pid}/children").read().split()]
            found = [(rss(p), rss(p, "RssAnon"), rss(p, "RssFile")) for p in kids]
            self.worker = max(found) if found else None
rep = Reporter()
t0 = time.perf_counter()
trial = L.Trial(cfg, Path(sys.argv[2]), rep, None, None, torch.float32)
t1 = time.perf_counter()
m["trial_rss_after_start_mb"] = rss()
trial.run()
n_train = len(trial.data.train_set)
t = time.perf_counter()
np.random.default_rng(0).permutation(n_train)
permutation_s = time.perf_counter() - t
k = len(batch_times)
# between two batches' on_batch: one train_step, the wait for the next batch, and the loop's own bookkeeping
loop_s = (batch_times[-1] - batch_times[0] - sum(steps[1:k]) - sum(waits[1:k])) / (k - 1)
step_s = float(np.median(steps[1:k]))
pack_s, n_batches = packs[0]
epoch_end_s = evals[-1] + float(np.mean(saves))  # validation (capped at data.max_val) and the checkpoint
outside = permutation_s + pack_s + waits[0] + n_batches * loop_s + epoch_end_s
m.update({"train": n_train, "trial_start_s": t1 - t0, "time_to_first_step_s": batch_times[0] - t0,
          "initial_report_s": rep.rows[0][0] - t1, "steps": k, "step_s_median": step_s,
          "wait_per_step_s": float(np.mean(waits[1:k])), "loop_per_step_us": 1e6 * loop_s,
          "epoch_batches": n_batches, "pack_s": pack_s, "permutation_s": permutation_s,
          "first_batch_wait_s": waits[0], "epoch_end_s": epoch_end_s,
          "epoch_steps_s": n_batches * step_s, "epoch_overhead_s": outside,
          "epoch_overhead_share": outside / (n_batches * step_s + outside),
          "trial_rss_end_mb": rss(), "trial_rss_anon_end_mb": rss("self", "RssAnon"),
          "trial_rss_file_end_mb": rss("self", "RssFile"), "trial_rss_peak_mb": rss("self", "VmHWM")})
if rep.worker:
    m.update({"worker_rss_mb": rep.worker[0], "worker_rss_anon_mb": rep.worker[1], "worker_rss_file_mb": rep.worker[2]})
print(json.dumps(m))
"""


def child(code: str, *args: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True, env=ENV)
    if out.returncode:
        raise RuntimeError(f"child failed ({out.returncode}):\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def trial_config(path: Path, folder: Path, steps: int, **extra) -> dict:
    data = {"path": str(path), "lazy": True, "num_workers": 1, "max_test": 500, "cache_dir": str(folder / "cache")}
    return {**MODEL, "batch_size": 16, "seed": 7, "threads": 1, "budget": {"steps": steps},
            "data": {**data, **extra.pop("data", {})}, "optim": {"lr": 1e-3}, **extra}


def _stable(rows: list[dict]) -> list[dict]:
    """Reports without what the clock decides (wall time, throughput)."""
    from engine import metrics as M

    drop = (M.WALL_S, M.THROUGHPUT_STRUCT_S, M.THROUGHPUT_ATOMS_S, M.CHECKPOINT)
    return [{k: v for k, v in r.items() if k not in drop} for r in rows]


def kill_resume(path: Path, folder: Path, steps: int, every: int) -> dict:
    """An uninterrupted ``engine.train`` run, and one sent SIGTERM after its first step checkpoint, then rerun."""
    import torch

    from engine.config import trial_config_from_dict
    from engine.loop.checkpoint import load_checkpoint

    cfg = trial_config(path, folder, steps, checkpoint={"every_steps": every, "every_minutes": None})
    cfg_file = folder / "kill-resume.json"
    cfg_file.write_text(json.dumps(trial_config_from_dict(cfg).to_dict()))

    def command(run_dir: Path) -> list[str]:
        return [sys.executable, "-m", "engine.train", "--config", str(cfg_file), "--lazy", "--run-dir", str(run_dir),
                "--no-progress"]

    def rows(run_dir: Path) -> list[dict]:
        return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]

    out: dict = {}
    straight, killed = folder / "run-straight", folder / "run-killed"
    t0 = time.perf_counter()
    subprocess.run(command(straight), cwd=ROOT, env=ENV, check=True, capture_output=True)
    out["uninterrupted_s"] = time.perf_counter() - t0
    proc = subprocess.Popen(command(killed), cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    ck_path = killed / "checkpoint.pt"
    step = 0
    while proc.poll() is None:
        if ck_path.exists():
            try:
                step = int(load_checkpoint(ck_path)["step"])
            except Exception:  # replaced while read: try again
                step = 0
            if step > 0:
                break
        time.sleep(0.1)
    t_kill = time.perf_counter()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=600)
    if proc.returncode != 75:
        out["killed_stderr"] = err[-2000:]
    saved = load_checkpoint(ck_path)
    out.update({"first_step_checkpoint": step, "killed_exit": proc.returncode, "killed_after_s": time.perf_counter()
                - t_kill, "saved_step": int(saved["step"]), "saved_batches_done": saved["epoch_position"]
                and int(saved["epoch_position"]["batches_done"])})
    t0 = time.perf_counter()
    resumed = subprocess.run(command(killed), cwd=ROOT, env=ENV, capture_output=True, text=True)
    out.update({"resumed_exit": resumed.returncode, "resumed_s": time.perf_counter() - t0})
    a, b = load_checkpoint(straight / "checkpoint.pt"), load_checkpoint(ck_path)
    out["reports_equal"] = _stable(rows(straight)) == _stable(rows(killed))
    out["final_metrics_equal"] = _stable(rows(straight))[-1] == _stable(rows(killed))[-1]
    out["weights_equal"] = all(torch.equal(a["model_state"][k], b["model_state"][k]) for k in a["model_state"])
    out["final_val_loss"] = rows(killed)[-1]["val_loss"]
    if resumed.returncode:
        out["resumed_stderr"] = resumed.stderr[-2000:]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--folder", default="/tmp/scale-rehearsal")
    p.add_argument("--kill-resume-steps", type=int, default=60)
    p.add_argument("--no-kill-resume", action="store_true")
    p.add_argument("--keep", action="store_true", help="keep the datasets")
    args = p.parse_args()
    root = Path(args.folder)
    print(json.dumps({"machine": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                      "load": os.getloadavg(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}))
    results = []
    for n in args.sizes:
        folder = root / f"n{n}"
        shutil.rmtree(folder, ignore_errors=True)
        path = folder / "data" / "synthetic.aselmdb"
        row = make_dataset(path, n)
        print(json.dumps(row), flush=True)
        cfg = trial_config(path, folder, args.steps)
        row.update(child(DRIVER, json.dumps(cfg), str(folder / "sweep")))
        cfg["data"]["normalization_file"] = row.pop("normalization_file")  # as a sweep's trials get it
        row.update(child(TRIAL, json.dumps(cfg), str(folder / "run")))
        row["load"] = os.getloadavg()[0]
        print(json.dumps(row), flush=True)
        results.append(row)
        if n == args.sizes[-1] and not args.no_kill_resume:
            kr = kill_resume(path, folder, args.kill_resume_steps, every=max(1, args.kill_resume_steps // 4))
            print(json.dumps({"records": n, "kill_resume": kr}), flush=True)
        if not args.keep:
            shutil.rmtree(folder / "data", ignore_errors=True)
    first, last = results[0], results[-1]
    for key in ("trial_start_s", "time_to_first_step_s", "driver_rss_end_mb", "driver_rss_anon_end_mb",
                "trial_rss_end_mb", "trial_rss_anon_end_mb", "worker_rss_mb", "worker_rss_anon_mb"):
        if key in first and key in last:
            print(f"{key}: {first[key]:.3g} → {last[key]:.3g} ({last[key] / first[key]:.3f}×), "
                  f"{first['records']:,} → {last['records']:,} records")


if __name__ == "__main__":
    main()
