"""Forward+backward time per step and peak memory per model size (issue 3's benchmark).

Batch: 8 rattled 32-atom Cu cells (fcc 2×2×2 cubic, σ = 0.1 Å), cutoff 6 Å, 20 neighbors.
Each (family, preset) runs in its own process so peak resident memory is its own.

    python -m benchmarks.bench_models
"""

from __future__ import annotations

import json
import subprocess
import sys

CASES = [
    ("equiformer_v2", "e1"),
    ("equiformer_v2", "e3"),
    ("equiformer_v2", "e5"),
    ("transformer", "t4"),
    ("transformer", "p4"),
    ("transformer", "t6"),
    ("fcn", "f3"),
    ("schnet", "s3"),
]

_CHILD = r"""
import json, resource, sys, time
import numpy as np, torch
torch.set_num_threads(int(sys.argv[3]))
import models
from ase.build import bulk
from engine.data.graph import GraphSpec, collate, neighbor_graph
from engine.data.records import Record

family, preset = sys.argv[1], sys.argv[2]
rng = np.random.default_rng(0)
recs = []
for k in range(8):
    a = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 2, 2))
    a.positions += rng.normal(0, 0.1, size=a.positions.shape)
    recs.append(Record(numbers=a.numbers, positions=a.positions, cell=a.cell.array, pbc=a.pbc, uid=str(k)))
torch.manual_seed(0)
overrides = {"cutoff": 6.0, "max_neighbors": 20}
model = models.build(family, overrides, preset=preset)
spec = GraphSpec(cutoff=6.0, max_neighbors=20, strict=model.config.strict_neighbors)
batch = collate(recs, [neighbor_graph(r, spec) for r in recs])
model.train()

def step():
    out = model(batch)
    loss = out.energy.pow(2).mean() + out.forces.pow(2).mean()
    if out.stress is not None:
        loss = loss + out.stress.pow(2).mean()
    loss.backward()
    model.zero_grad(set_to_none=True)

import psutil
rss0 = psutil.Process().memory_info().rss / 1024  # resident now (KiB), before the first step
step()
times = []
for _ in range(3):
    t = time.perf_counter(); step(); times.append(time.perf_counter() - t)
rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"n_params": model.num_parameters(), "edges": int(batch.edge_index.shape[1]),
                  "step_s": float(np.median(times)), "peak_rss_mb": rss1 / 1024,
                  "step_rss_delta_mb": max(rss1 - rss0, 0.0) / 1024}))
"""


def measure(family: str, preset: str, threads: int = 2) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, family, preset, str(threads)], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def run() -> list[dict]:
    rows = []
    for family, preset in CASES:
        m = measure(family, preset)
        note = f"{m['n_params']:,} params, {m['edges']} edges, peak RSS {m['peak_rss_mb']:.0f} MB"
        rows.append({"name": f"{family} {preset} fwd+bwd, 8×32-atom Cu", "value": m["step_s"], "unit": "s/step",
                     "notes": note})
        rows.append({"name": f"{family} {preset} memory of one step", "value": m["step_rss_delta_mb"],
                     "unit": "MB", "notes": "peak resident memory above the resident set before the first step"})
    return rows


if __name__ == "__main__":
    for row in run():
        print(row)
