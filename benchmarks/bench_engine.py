"""Engine overhead per trial: (sweep wall time − time inside the training loop) / trials.

Runs two tiny real sweeps (Ray Tune + MLflow SQLite + checkpoints) in a temporary folder, one
trial at a time so the loop's time is not hidden by parallelism:

- one-worker trials (the loop runs inside the Tune trainable), N = 4 trials;
- one two-worker trial (a Ray Train TorchTrainer with gloo DDP inside the Tune trainable).

"Inside the training loop" is the loop's own ``wall_s`` (train steps + evaluation). Everything
else counts as overhead: Ray and MLflow start-up, actor start, data loading and graph building in
the trial, checkpoints, metric logging. Rows give the total per trial and the steady-state part
(without the one-time Ray/MLflow start-up, measured separately). Target: ≤ 3 s per one-worker trial.

    python -m benchmarks.run engine
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
import time
from pathlib import Path

FIXED = {"epochs": 2, "batch_size": 8, "optim": {"lr": 3e-3}, "data": {"emt_size": 60, "max_val": 8}}


def _space(sizes: list[str], workers: int):
    from engine.sweep.spaces import space_from_dict

    resources = {"workers": workers, "cpus_per_worker": 1.0 if workers == 1 else 0.5, "max_concurrent": 1}
    return space_from_dict(
        {
            "axis": "params",
            "model": "transformer",
            "sizes": sizes,
            "train_sizes": [40],
            "seeds": [0],
            "fixed": FIXED,
            "resources": resources,
        },
        source="bench_engine",
    )


def _measure(name: str, sizes: list[str], workers: int) -> tuple[float, float, int]:
    """(sweep wall s, Σ loop wall s, trials) of one sweep on the already-running Ray."""
    from engine.sweep.runner import SweepOptions, run_sweep

    t0 = time.perf_counter()
    result = run_sweep(_space(sizes, workers), SweepOptions(name=name, progress_interval_s=1e9))
    wall = time.perf_counter() - t0
    return wall, result.loop_wall_s, len(result.trials)


def run() -> list[dict]:
    import ray

    work = Path(tempfile.mkdtemp(prefix="be", dir="/tmp"))
    token = work / "auth_token"
    token.write_text(secrets.token_hex(32))
    saved = {k: os.environ.get(k) for k in ("ENGINE_SWEEPS", "ENGINE_CACHE", "MLFLOW_TRACKING_URI",
                                            "RAY_AUTH_TOKEN_PATH", "ENGINE_REPORTS")}
    os.environ.update(
        ENGINE_SWEEPS=str(work / "sweeps"),
        ENGINE_CACHE=str(work / "cache"),
        ENGINE_REPORTS=str(work / "reports"),
        MLFLOW_TRACKING_URI=f"sqlite:///{work / 'mlflow.db'}",
        RAY_AUTH_TOKEN_PATH=str(token),
    )
    rows = []
    try:
        t0 = time.perf_counter()
        ray.init(num_cpus=2, include_dashboard=False, _temp_dir=str(work / "ray"), logging_level="WARNING")
        ray_start = time.perf_counter() - t0
        # warm-up: MLflow's table creation and the EMT cache, so they do not count against one kind of trial
        warm_wall, warm_loop, _ = _measure("warmup", ["p0"], 1)
        one_wall, one_loop, n_one = _measure("one-worker", ["p0", "p1", "p2", "p3"], 1)
        two_wall, two_loop, n_two = _measure("two-worker", ["p0"], 2)
    finally:
        if ray.is_initialized():
            ray.shutdown()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        shutil.rmtree(work, ignore_errors=True)
    load = os.getloadavg()[0]  # a shared machine: say how busy it was
    per_one = (one_wall - one_loop) / n_one
    per_two = (two_wall - two_loop) / n_two
    rows += [
        {"name": "engine overhead, one-worker trial", "value": per_one, "unit": "s/trial",
         "notes": f"{n_one} sequential trials (transformer p0-p3, 40 structures, 2 epochs), Ray already up; "
                  f"sweep {one_wall:.1f} s, loop {one_loop:.1f} s; load average {load:.1f}; target ≤ 3 s"},
        {"name": "engine overhead, two-worker DDP trial", "value": per_two, "unit": "s/trial",
         "notes": f"Ray Train TorchTrainer (gloo, 2×0.5 CPU) inside the Tune trial; sweep {two_wall:.1f} s, "
                  f"loop {two_loop:.1f} s"},
        {"name": "one-time start-up: ray.init", "value": ray_start, "unit": "s", "notes": "local 2-CPU Ray"},
        {"name": "one-time start-up: first sweep (MLflow tables, dataset)", "value": warm_wall - warm_loop,
         "unit": "s", "notes": "one p0 trial on a fresh SQLite store and empty dataset cache, minus its loop time"},
    ]
    return rows


if __name__ == "__main__":
    for row in run():
        print(row)
