"""Data-path throughput of the streaming path beside each model's training-step rate (issue 12, item 2).

    .venv/bin/python -m benchmarks.lazy_throughput [--structures 256] [--steps 12] [--workers 1]

On one ``.aselmdb`` file of fresh EMT structures (seed 4242, 2–32 atoms), read through
:class:`~engine.data.lazy.LazyAseDB`:

- data path alone: structures/s of a DataLoader (0, 1, 2 workers) that reads rows, builds each model's
  neighbor lists and collates batches packed as the loop packs them (16 structures, 1024 atoms), no model;
- per model: the training-step rate on batches built beforehand (in memory: no data cost at all), and the
  same steps fed by the lazy DataLoader with ``--workers`` workers, timing how long the training process
  waits for each batch (``next()`` on the loader). The data path's share of a step is that wait over the
  whole step, over the steps after an epoch's first (whose wait, worker start-up and an empty pipeline,
  is given apart: paid once per epoch). The two modes alternate (in memory, lazy, in memory, lazy) and
  the medians are reported, so a load drift on this shared machine hits both alike.

One torch thread in the training process. A worker needs a free core to hide its work: on a machine
with fewer free cores than 1 + workers, the share measures the contention too.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import models
from engine.config import TrialConfig
from engine.data.graph import GraphSpec, pack_batches
from engine.data.lazy import LazyAseDB, LazyGraphDataset, batch_loader, close_environments
from engine.data.store import write_aselmdb
from engine.loop.loop import StepContext, train_step

CASES = (  # (label, family, model config)
    ("fcn default", "fcn", {}),
    ("schnet default", "schnet", {}),
    ("transformer default", "transformer", {}),
    ("equiformer_v2 e1", "equiformer_v2", None),
)


def _build(family: str, model_config: dict | None):
    torch.manual_seed(0)
    if model_config is None:
        return models.build(family, {}, preset="e1"), {"preset": "e1"}
    return models.build(family, model_config), model_config


def data_path_rate(dataset: LazyGraphDataset, batches: list[list[int]], workers: int) -> float:
    """Structures/s of the DataLoader alone (rows read, neighbor lists built, batches collated)."""
    t0 = time.perf_counter()
    n = sum(b.num_graphs for b in batch_loader(dataset, batches, num_workers=workers, prefetch_factor=4))
    return n / (time.perf_counter() - t0)


def _steps_in_memory(ctx: StepContext, prebuilt: list) -> float:
    t0 = time.perf_counter()
    for batch in prebuilt:
        train_step(ctx, batch)
    return (time.perf_counter() - t0) / len(prebuilt)


def _steps_lazy(ctx: StepContext, dataset: LazyGraphDataset, batches: list[list[int]], workers: int):
    """Over ``batches``: (seconds per step after the first, their wait for the loader per step, the first batch's
    wait: worker start-up and an empty pipeline, paid once per epoch)."""
    waits = []
    stream = iter(batch_loader(dataset, batches, num_workers=workers, prefetch_factor=4))
    t1 = 0.0
    for k in range(len(batches)):
        if k == 1:
            t1 = time.perf_counter()
        w0 = time.perf_counter()
        batch = next(stream)
        waits.append(time.perf_counter() - w0)
        train_step(ctx, batch)
    total = time.perf_counter() - t1
    del stream
    return total / (len(batches) - 1), sum(waits[1:]) / (len(batches) - 1), waits[0]


def run(n_structures: int = 256, n_steps: int = 12, workers: int = 1, only: str = "") -> list[dict]:
    from engine.data.emt import generate_records

    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory(prefix="lazythru-") as tmp:
        path = Path(tmp) / "bench.aselmdb"
        write_aselmdb(generate_records(seed=4242, size=n_structures, progress=False), path)
        db = LazyAseDB(path)
        sizes = db.sizes()
        order = np.random.default_rng(0).permutation(len(db))
        batches = pack_batches(sizes, 16, 1024, order)
        for label, family, model_config in (case for case in CASES if only in case[0]):
            model, cfg_values = _build(family, model_config)
            c = model.config
            spec = GraphSpec(float(c.cutoff), int(c.max_neighbors), bool(c.strict_neighbors))
            dataset = LazyGraphDataset(db, spec)
            data_rates = {w: data_path_rate(dataset, batches, w) for w in (0, 1, 2)}
            steps = batches[:n_steps]
            prebuilt = [dataset.batch(b) for b in steps]
            config = TrialConfig(model=family, count_flops=False, **({"preset": "e1"} if model_config is None else
                                                                     {"model_config": cfg_values}))
            optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
            ctx = StepContext(model=model, module=model, optimizer=optimizer, config=config,
                              device=torch.device("cpu"), dtype=torch.float32)
            train_step(ctx, prebuilt[0])  # warm-up
            memory, lazy, wait, first = [], [], [], []
            for _ in range(2):
                memory.append(_steps_in_memory(ctx, prebuilt[1:]))
                step_s, wait_s, first_s = _steps_lazy(ctx, dataset, steps, workers)
                lazy.append(step_s)
                wait.append(wait_s)
                first.append(first_s)
            m, lz, wt = statistics.median(memory), statistics.median(lazy), statistics.median(wait)
            structs = sum(len(b) for b in steps) / len(steps)
            rows.append({
                "model": label, "edges_per_batch": int(np.mean([b.edge_index.shape[1] for b in prebuilt])),
                "data_struct_s": {w: round(r, 1) for w, r in data_rates.items()},
                "step_struct_s_memory": round(structs / m, 1), "step_struct_s_lazy": round(structs / lz, 1),
                "lazy_over_memory_step": round(lz / m, 3), "data_wait_share": round(wt / lz, 4),
                "first_batch_wait_s": round(statistics.median(first), 3),
            })
            print(rows[-1], flush=True)
        close_environments()
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--structures", type=int, default=256)
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--only", default="", help="models whose label contains this text (default: all)")
    args = p.parse_args()
    print(f"{platform.node()} {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} torch {torch.__version__}")
    for r in run(args.structures, args.steps, args.workers, args.only):
        print(f"| {r['model']} | {r['edges_per_batch']} | {r['data_struct_s'][0]} / {r['data_struct_s'][1]} / "
              f"{r['data_struct_s'][2]} | {r['step_struct_s_memory']} | {r['step_struct_s_lazy']} | "
              f"{r['lazy_over_memory_step']} | {100 * r['data_wait_share']:.1f} % | {r['first_batch_wait_s']} |")


if __name__ == "__main__":
    main()
