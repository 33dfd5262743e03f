"""Data-path benchmarks: EMT generation (default, OMat24-shaped subsets), .aselmdb I/O, neighbor lists, graph cache.

Run: ``.venv/bin/python benchmarks/bench_data.py`` (single process, one torch thread).
``run()`` returns rows {name, value, unit, notes} for the BENCHMARKS.md runner.

Rates are structures per CPU-second of this process ("per core"): on a shared machine the
wall-clock rate depends on the neighbours' load, so it is given in the notes with the load average.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from engine.data.emt import generate_records, read_emt_cache
from engine.data.emt_subsets import generate_subset_records, generate_unit
from engine.data.graph import GraphSpec, collate, neighbor_graph, pack_batches
from engine.data.store import cached_graph_dataset, write_aselmdb

N_GENERATE = 300  # structures labelled for the generation rate
N_SUBSETS = 300  # frames of the OMat24-shaped mixture (target ≥ 50/core-s, issue 10)
SUBSETS = ["rattled-1000", "aimd-3000", "rattled-relax"]
GRAPH_SPECS = (GraphSpec(cutoff=5.0, max_neighbors=32), GraphSpec(cutoff=6.0, max_neighbors=20))
UNIT = "structures/core-s"


def _timed(fn: Callable[[], object]) -> tuple[object, float, float]:
    """(result, wall seconds, CPU seconds of this process)."""
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w0, time.process_time() - c0


def _row(name: str, n: int, wall: float, cpu: float, notes: str) -> dict:
    load = os.getloadavg()[0]
    return {
        "name": name,
        "value": n / max(cpu, 1e-9),
        "unit": UNIT,
        "notes": f"{notes}; wall {n / max(wall, 1e-9):.0f}/s at load {load:.1f}",
    }


def run(n_generate: int = N_GENERATE, n_subsets: int = N_SUBSETS) -> list[dict]:
    """Measure the data path on ``n_generate`` fresh EMT structures (seed 12345) in a temp folder.

    ``n_subsets`` frames of the OMat24-shaped mixture (rattled-1000, aimd-3000, rattled-relax) give
    the subset generation rate.
    """
    torch.set_num_threads(1)
    rows: list[dict] = []
    records, wall, cpu = _timed(lambda: generate_records(seed=12345, size=n_generate, progress=False))
    mean_atoms = float(np.mean([r.n_atoms for r in records]))
    rows.append(
        _row("emt_generation", len(records), wall, cpu, f"EMT E/F/stress + filters, mean {mean_atoms:.1f} atoms")
    )
    generate_unit(12345, SUBSETS, 0)  # imports (ASE optimizers, scipy) outside the timing
    mixed, wall, cpu = _timed(lambda: generate_subset_records(12345, SUBSETS, n_subsets, progress=False))
    share = {name: sum(r.info["subset"] == name for r in mixed) for name in SUBSETS}
    rows.append(
        _row(
            "emt_subsets_generation",
            len(mixed),
            wall,
            cpu,
            f"{'+'.join(SUBSETS)} ({', '.join(f'{v} {k}' for k, v in share.items())} frames), "
            f"mean {np.mean([r.n_atoms for r in mixed]):.1f} atoms, {len({r.group for r in mixed})} groups; "
            "target ≥ 50",
        )
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.aselmdb"
        _, wall, cpu = _timed(lambda: write_aselmdb(records, path))
        rows.append(_row("aselmdb_write", len(records), wall, cpu, "one LMDB transaction, atomic rename"))
        back, wall, cpu = _timed(lambda: read_emt_cache(path, 12345, len(records)))
        rows.append(_row("aselmdb_read", len(back), wall, cpu, "rows → Record (energy, forces, stress)"))
        sizes = np.array([r.n_atoms for r in records])
        for spec in GRAPH_SPECS:
            tag = f"{spec.cutoff:g}A_{spec.max_neighbors}nb"
            graphs, nl_wall, nl_cpu = _timed(lambda spec=spec: [neighbor_graph(r, spec) for r in records])
            batches = pack_batches(sizes, 16, 1024)
            _, col_wall, col_cpu = _timed(
                lambda graphs=graphs, batches=batches: [
                    collate([records[k] for k in b], [graphs[k] for k in b]) for b in batches
                ]
            )
            mean_edges = np.mean([g.num_edges for g in graphs])
            rows.append(
                _row(
                    f"neighbor_list_{tag}", len(records), nl_wall, nl_cpu, f"vesin + cap, {mean_edges:.0f} edges/struct"
                )
            )
            rows.append(
                _row(
                    f"neighbor_list_collate_{tag}",
                    len(records),
                    nl_wall + col_wall,
                    nl_cpu + col_cpu,
                    f"+ collate into ≤16 structures/≤1024 atoms (collate alone {len(records) / col_cpu:.0f}/core-s)",
                )
            )
        spec = GRAPH_SPECS[0]
        cache = Path(tmp) / "graphs"
        _, wall, cpu = _timed(lambda: cached_graph_dataset(records, spec, cache))
        rows.append(_row("graph_cache_miss_5A_32nb", len(records), wall, cpu, "neighbor lists + npz write"))
        _, wall, cpu = _timed(lambda: cached_graph_dataset(records, spec, cache))
        size_kb = sum(f.stat().st_size for f in cache.iterdir()) / 1024 / len(records)
        rows.append(
            _row("graph_cache_hit_5A_32nb", len(records), wall, cpu, f"fingerprint + npz load, {size_kb:.1f} kB/struct")
        )
    return rows


if __name__ == "__main__":
    for row in run():
        print(f"{row['name']:<30} {row['value']:>10.0f} {row['unit']:<18} {row['notes']}")
