"""MLflow bookkeeping at sweep scale, and the cost of the checks on data files.

- Paged searches: a SQLite store with more trial runs than one MLflow search returns (5,000 per
  call, the old limit), listed by one ``search_runs`` call and by :func:`engine.sweep.tracking.search_all`.
- Trial artifacts: ``config.json``, ``metrics.jsonl`` and ``checkpoint.pt`` logged to a trial's run
  (SQLite store, artifacts in a local folder) per trial, for a transformer t6 checkpoint.
- The LMDB truncation check before an ``.aselmdb`` is read, beside reading the file.

    python -m benchmarks.run tracking
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
import time
from pathlib import Path

N_RUNS = 5_200  # > 5,000: what one unpaged search returned
N_ARTIFACT_TRIALS = 10


def _paged_search(root: Path) -> list[dict]:
    from engine.sweep.tracking import SweepTracker, search_all

    tracker = SweepTracker(f"sqlite:///{root / 'mlflow.db'}", "big", "params")
    tracker.start_parent({}, None)
    t0 = time.perf_counter()
    for k in range(N_RUNS):
        tracker.client.create_run(
            tracker.experiment_id,
            tags={"engine.kind": "trial", "engine.sweep": "big", "engine.trial_id": f"t{k}"},
            run_name=f"t{k}",
        )
    create_s = time.perf_counter() - t0
    flt = "tags.`engine.kind` = 'trial' and tags.`engine.sweep` = 'big'"
    one_call = len(tracker.client.search_runs([tracker.experiment_id], filter_string=flt, max_results=5000))
    t0 = time.perf_counter()
    paged = len(search_all(tracker.client, [tracker.experiment_id], flt))
    paged_s = time.perf_counter() - t0
    return [
        {"name": f"trial runs found by one search_runs call ({N_RUNS:,} in the store)", "value": one_call,
         "unit": "runs", "notes": "max_results=5000, the tracker's old single call"},
        {"name": f"trial runs found by search_all (pages of 1,000; {N_RUNS:,} in the store)", "value": paged,
         "unit": "runs", "notes": f"{paged_s:.1f} s for all pages ({1e3 * paged_s / paged:.2f} ms/run)"},
        {"name": "create_run on SQLite (setting up the store)", "value": 1e3 * create_s / N_RUNS, "unit": "ms/run",
         "notes": f"{N_RUNS:,} runs in {create_s:.0f} s"},
    ]


def _artifacts(root: Path) -> list[dict]:
    import torch

    import models
    from engine.sweep.tracking import SweepTracker
    from models.checkpoint import save_checkpoint

    model = models.build("transformer", preset="t6")
    optimizer = torch.optim.AdamW(model.parameters())
    for p in model.parameters():  # one step so the optimizer holds its moment buffers, as a trial's does
        p.grad = torch.zeros_like(p)
    optimizer.step()
    trial = root / "trial"
    save_checkpoint(
        trial / "checkpoint.pt",
        {
            "format": "engine-checkpoint/1", "model": "transformer", "model_config": dataclasses.asdict(model.config),
            "normalization": None, "model_state": model.state_dict(), "ema_state": model.state_dict(),
            "optimizer_state": optimizer.state_dict(), "scheduler_state": {}, "scaler_state": None, "epoch": 10,
            "step": 1000, "flops_cum": 1e12, "wall_s": 60.0, "rng": {}, "trial_config": {}, "metrics_history": [],
        },
    )  # fmt: skip
    (trial / "config.json").write_text(json.dumps({"model": "transformer", "preset": "t6"}) + "\n")
    (trial / "metrics.jsonl").write_text("".join(json.dumps({"epoch": e, "val_loss": 1.0 / (e + 1)}) + "\n"
                                                 for e in range(11)))
    size_mb = (trial / "checkpoint.pt").stat().st_size / 1e6
    tracker = SweepTracker(f"sqlite:///{root / 'art.db'}", "arts", "params")
    tracker.start_parent({}, None)
    ids = [tracker.start_trial(f"t{k}", {}, checkpoint_path=str(trial / "checkpoint.pt"))
           for k in range(N_ARTIFACT_TRIALS)]
    t0 = time.perf_counter()
    for k in range(N_ARTIFACT_TRIALS):
        tracker.log_trial_artifacts(f"t{k}")
    per_trial = (time.perf_counter() - t0) / N_ARTIFACT_TRIALS
    assert len(ids) == N_ARTIFACT_TRIALS
    return [
        {"name": "log a trial's artifacts (config, metrics, checkpoint)", "value": 1e3 * per_trial,
         "unit": "ms/trial", "notes": f"transformer t6 checkpoint {size_mb:.1f} MB (with EMA and AdamW state); "
         "SQLite store, local artifact folder"},
    ]


def _lmdb_check(root: Path) -> list[dict]:
    from engine.data.emt import generate_records
    from engine.data.readers import read_records
    from engine.data.store import check_lmdb_file, write_aselmdb

    path = root / "s.aselmdb"
    write_aselmdb(generate_records(0, 500, progress=False), path)
    reps = 50
    t0 = time.perf_counter()
    for _ in range(reps):
        check_lmdb_file(path)
    check_ms = 1e3 * (time.perf_counter() - t0) / reps
    t0 = time.perf_counter()
    n = len(read_records(path).records)
    read_ms = 1e3 * (time.perf_counter() - t0)
    return [
        {"name": "LMDB truncation check of an .aselmdb", "value": check_ms, "unit": "ms/file",
         "notes": f"{path.stat().st_size / 1e6:.1f} MB file; reading its {n} structures takes {read_ms:.0f} ms"},
    ]


def run() -> list[dict]:
    root = Path(tempfile.mkdtemp(prefix="bench-tracking-"))
    try:
        return _paged_search(root) + _artifacts(root) + _lmdb_check(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
