"""Data-path benchmarks: EMT generation, .aselmdb reading, neighbor lists + collation, graph cache.

Run: ``.venv/bin/python benchmarks/bench_data.py`` (single process, one torch thread).
``run()`` returns rows {name, value, unit, notes} for the BENCHMARKS.md runner.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from engine.data.emt import generate_records, read_emt_cache
from engine.data.graph import GraphSpec, collate, neighbor_graph, pack_batches
from engine.data.store import cached_graph_dataset, write_aselmdb

N_GENERATE = 300  # structures labelled for the generation rate
GRAPH_SPECS = (GraphSpec(cutoff=5.0, max_neighbors=32), GraphSpec(cutoff=6.0, max_neighbors=20))


def _rate(n: int, seconds: float) -> float:
    return n / max(seconds, 1e-12)


def run(n_generate: int = N_GENERATE) -> list[dict]:
    """Measure the data path on ``n_generate`` fresh EMT structures (seed 12345) in a temp folder."""
    torch.set_num_threads(1)
    rows: list[dict] = []
    t0 = time.perf_counter()
    records = generate_records(seed=12345, size=n_generate, progress=False)
    gen_s = time.perf_counter() - t0
    mean_atoms = sum(r.n_atoms for r in records) / len(records)
    rows.append(
        {
            "name": "emt_generation",
            "value": _rate(len(records), gen_s),
            "unit": "structures/s",
            "notes": f"EMT labels (E, F, stress) + filters, 1 core, {len(records)} structures, "
            f"mean {mean_atoms:.1f} atoms",
        }
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.aselmdb"
        t0 = time.perf_counter()
        write_aselmdb(records, path)
        rows.append(
            {
                "name": "aselmdb_write",
                "value": _rate(len(records), time.perf_counter() - t0),
                "unit": "structures/s",
                "notes": "one LMDB transaction, atomic rename",
            }
        )
        t0 = time.perf_counter()
        back = read_emt_cache(path, 12345, len(records))
        rows.append(
            {
                "name": "aselmdb_read",
                "value": _rate(len(back), time.perf_counter() - t0),
                "unit": "structures/s",
                "notes": "rows → Record (energy, forces, stress)",
            }
        )
        for spec in GRAPH_SPECS:
            tag = f"{spec.cutoff:g}A_{spec.max_neighbors}nb"
            t0 = time.perf_counter()
            graphs = [neighbor_graph(r, spec) for r in records]
            nl_s = time.perf_counter() - t0
            batches = pack_batches(torch.tensor([r.n_atoms for r in records]).numpy(), 16, 1024)
            t0 = time.perf_counter()
            for idx in batches:
                collate([records[k] for k in idx], [graphs[k] for k in idx])
            col_s = time.perf_counter() - t0
            mean_edges = sum(g.num_edges for g in graphs) / len(graphs)
            rows.append(
                {
                    "name": f"neighbor_list_{tag}",
                    "value": _rate(len(records), nl_s),
                    "unit": "structures/s",
                    "notes": f"vesin + per-receiver cap, mean {mean_edges:.0f} edges/structure",
                }
            )
            rows.append(
                {
                    "name": f"neighbor_list_collate_{tag}",
                    "value": _rate(len(records), nl_s + col_s),
                    "unit": "structures/s",
                    "notes": f"neighbor list + collate into batches of ≤16 structures/≤1024 atoms "
                    f"(collate alone {_rate(len(records), col_s):.0f}/s)",
                }
            )
        spec = GRAPH_SPECS[0]
        cache = Path(tmp) / "graphs"
        cached_graph_dataset(records, spec, cache)  # builds and saves
        t0 = time.perf_counter()
        cached_graph_dataset(records, spec, cache)
        rows.append(
            {
                "name": "graph_cache_load_5A_32nb",
                "value": _rate(len(records), time.perf_counter() - t0),
                "unit": "structures/s",
                "notes": "npz neighbor-list cache hit (fingerprint + load) instead of recomputing",
            }
        )
    return rows


if __name__ == "__main__":
    for row in run():
        print(f"{row['name']:<34} {row['value']:>12.1f} {row['unit']:<14} {row['notes']}")
