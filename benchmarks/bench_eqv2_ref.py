"""EquiformerV2 side by side with fairchem-core 1.10.0's implementation (issue 12, item 4).

Forward+backward step time [s] of this project's ``equiformer_v2`` and of fairchem's
``HydraModel(equiformer_v2_backbone + scalar, vector and rank-2 decomposed stress heads)`` at three
sizes, on the same batch (8 rattled 32-atom Cu cells, cutoff 6 Å, 20 neighbours non-strict, graphs
built once by ``engine.data.graph`` and handed to both), float32, train mode, 2 threads. The two run
alternately in fresh processes (the CPU may be shared); the ratio of medians is reported per size.

The reference lives in a scratch venv that this script builds (``--venv``, default
``/tmp/eqv2-ref-venv``): a venv seeing this project's site-packages through a ``.pth`` file, plus
``pip install --no-deps`` of fairchem-core 1.10.0 and the few pure-Python modules its import chain
needs. ``torch_scatter`` (a compiled extension that does not build here) is replaced there by a
one-line module re-exporting ``torch_geometric.utils.scatter``; EquiformerV2's forward path does not call it.
CI never builds this venv.

    python -m benchmarks.bench_eqv2_ref [--rounds 3] [--venv DIR]
    python -m benchmarks.run eqv2_ref        # writes the section of BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_VENV = Path("/tmp/eqv2-ref-venv")
REF_PACKAGES = [
    "fairchem-core==1.10.0",
    "e3nn==0.6.0",
    "opt-einsum==3.4.0",
    "opt-einsum-fx==0.1.4",
    "huggingface-hub==0.27.1",
]

# (label, layers, sphere channels, lmax, mmax): the three sizes of issue 12
SIZES = [("L2 C32 l2 m1", 2, 32, 2, 1), ("L4 C64 l4 m2", 4, 64, 4, 2), ("L2 C16 l1 m1", 2, 16, 1, 1)]


def size_config(layers: int, channels: int, lmax: int, mmax: int) -> dict:
    """Knobs shared by both implementations (names as in this project's EquiformerV2Config)."""
    heads = 4 if channels >= 32 else 2
    return {
        "num_layers": layers,
        "sphere_channels": channels,
        "attn_hidden_channels": channels // 2,
        "num_heads": heads,
        "attn_alpha_channels": channels // 2,
        "attn_value_channels": max(channels // (2 * heads), 2),
        "ffn_hidden_channels": channels,
        "edge_channels": channels,
        "lmax": lmax,
        "mmax": mmax,
        "grid_resolution": 18,
        "cutoff": 6.0,
        "max_neighbors": 20,
        "alpha_drop": 0.1,
        "drop_path_rate": 0.1,
    }


_COMMON = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
import numpy as np, torch
torch.set_num_threads(int(sys.argv[3]))
from ase.build import bulk
from engine.data.graph import GraphSpec, collate, neighbor_graph
from engine.data.records import Record
cfg = json.loads(sys.argv[2])
rng = np.random.default_rng(0)
recs = []
for k in range(8):
    a = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 2, 2))
    a.positions += rng.normal(0, 0.1, size=a.positions.shape)
    recs.append(Record(numbers=a.numbers, positions=a.positions, cell=a.cell.array, pbc=a.pbc, uid=str(k)))
spec = GraphSpec(cutoff=cfg["cutoff"], max_neighbors=cfg["max_neighbors"], strict=False)
batch = collate(recs, [neighbor_graph(r, spec) for r in recs])
torch.manual_seed(0)

def timed(step, n=int(sys.argv[4])):
    # median wall time and median process CPU time (all threads) of n steps after one warm-up step [s]
    step()
    wall, cpu = [], []
    for _ in range(n):
        t, c = time.perf_counter(), time.process_time()
        step()
        wall.append(time.perf_counter() - t); cpu.append(time.process_time() - c)
    return {"step_s": float(np.median(wall)), "cpu_s": float(np.median(cpu))}
"""

_OURS = r"""
import models
model = models.build("equiformer_v2", cfg)
model.train()

def step():
    out = model(batch)
    loss = out.energy.pow(2).mean() + out.forces.pow(2).mean() + out.stress.pow(2).mean()
    loss.backward()
    model.zero_grad(set_to_none=True)

print(json.dumps({"params": model.num_parameters(), "edges": int(batch.edge_index.shape[1]), **timed(step)}))
"""

_REFERENCE = r"""
import logging
logging.disable(logging.WARNING)
from torch_geometric.data import Batch as PygBatch, Data
from fairchem.core.models.base import HydraModel
import fairchem.core.models.equiformer_v2.equiformer_v2  # registers the backbone and heads
import fairchem.core.models.equiformer_v2.heads  # noqa
backbone = {
    "model": "equiformer_v2_backbone", "use_pbc": True, "regress_forces": True, "otf_graph": False,
    "max_neighbors": cfg["max_neighbors"], "max_radius": cfg["cutoff"], "max_num_elements": 96,
    "num_layers": cfg["num_layers"], "sphere_channels": cfg["sphere_channels"],
    "attn_hidden_channels": cfg["attn_hidden_channels"], "num_heads": cfg["num_heads"],
    "attn_alpha_channels": cfg["attn_alpha_channels"], "attn_value_channels": cfg["attn_value_channels"],
    "ffn_hidden_channels": cfg["ffn_hidden_channels"], "norm_type": "layer_norm_sh",
    "lmax_list": [cfg["lmax"]], "mmax_list": [cfg["mmax"]], "grid_resolution": cfg["grid_resolution"],
    "edge_channels": cfg["edge_channels"], "use_atom_edge_embedding": True, "share_atom_edge_embedding": False,
    "distance_function": "gaussian", "num_distance_basis": 512, "attn_activation": "silu",
    "use_s2_act_attn": False, "use_attn_renorm": True, "ffn_activation": "silu", "use_gate_act": False,
    "use_grid_mlp": True, "use_sep_s2_act": True, "alpha_drop": cfg["alpha_drop"],
    "drop_path_rate": cfg["drop_path_rate"], "proj_drop": 0.0, "weight_init": "uniform",
    "enforce_max_neighbors_strictly": False, "avg_num_nodes": 31.17, "avg_degree": 61.95,
}
heads = {
    "energy": {"module": "equiformerV2_scalar_head"},
    "forces": {"module": "equiformerV2_vector_head"},
    "stress": {"module": "rank2_symmetric_head", "output_name": "stress", "decompose": True,
               "use_source_target_embedding": True},
}
model = HydraModel(backbone=backbone, heads=heads, otf_graph=False)
model.train()
n = batch.n_atoms
data = PygBatch.from_data_list([Data(num_nodes=int(k)) for k in n])
data.pos = batch.positions
data.cell = batch.cell
data.atomic_numbers = batch.numbers
data.natoms = n
data.batch = batch.batch
data.edge_index = batch.edge_index
data.cell_offsets = batch.edge_shift.to(torch.float32)
data.neighbors = torch.bincount(batch.batch[batch.edge_index[1]], minlength=len(n))

def step():
    out = model(data)
    loss = out["energy"]["energy"].pow(2).mean() + out["forces"]["forces"].pow(2).mean()
    loss = loss + out["stress"]["stress_isotropic"].pow(2).mean() + out["stress"]["stress_anisotropic"].pow(2).mean()
    loss.backward()
    model.zero_grad(set_to_none=True)

params = sum(p.numel() for p in model.parameters() if p.requires_grad)
print(json.dumps({"params": params, "edges": int(batch.edge_index.shape[1]), **timed(step)}))
"""


def build_reference_venv(venv: Path) -> Path:
    """Create (once) the scratch venv with fairchem-core 1.10.0 installed without dependencies."""
    python = venv / "bin" / "python"
    marker = venv / ".eqv2-ref-ready"
    if marker.exists():
        return python
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    here = subprocess.run(
        [sys.executable, "-c", "import site; print(site.getsitepackages()[0])"], capture_output=True, text=True
    ).stdout.strip()
    there = subprocess.run(
        [str(python), "-c", "import site; print(site.getsitepackages()[0])"], capture_output=True, text=True
    ).stdout.strip()
    (Path(there) / "project_site.pth").write_text(here + "\n")
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", *REF_PACKAGES], check=True)
    shim = Path(there) / "torch_scatter"
    shim.mkdir(exist_ok=True)
    (shim / "__init__.py").write_text(
        '"""Benchmark-venv shim: fairchem imports torch_scatter.scatter at module level."""\n'
        "from torch_geometric.utils import scatter  # noqa: F401\n"
    )
    marker.write_text("ok\n")
    return python


def measure(python: str, body: str, cfg: dict, threads: int = 2, steps: int = 2) -> dict:
    out = subprocess.run(
        [python, "-c", _COMMON + body, str(ROOT), json.dumps(cfg), str(threads), str(steps)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"},  # idle threads sleep: CPU time counts work, not spinning
    )
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def compare(rounds: int = 3, venv: Path = DEFAULT_VENV, sizes=SIZES) -> list[dict]:
    import numpy as np

    ref_python = str(build_reference_venv(venv))
    results = []
    for label, layers, channels, lmax, mmax in sizes:
        cfg = size_config(layers, channels, lmax, mmax)
        ours, ref = [], []
        for _ in range(rounds):  # alternate, fresh processes
            ours.append(measure(sys.executable, _OURS, cfg))
            ref.append(measure(ref_python, _REFERENCE, cfg))
            print(f"{label}: ours {ours[-1]}, fairchem {ref[-1]}", file=sys.stderr, flush=True)
        t_ours = float(np.median([r["step_s"] for r in ours]))
        t_ref = float(np.median([r["step_s"] for r in ref]))
        c_ours = float(np.median([r["cpu_s"] for r in ours]))
        c_ref = float(np.median([r["cpu_s"] for r in ref]))
        pair_ratios = [a["step_s"] / b["step_s"] for a, b in zip(ours, ref)]
        results.append(
            {
                "label": label,
                "ours_s": t_ours,
                "ref_s": t_ref,
                "ratio": t_ours / t_ref,
                "ours_cpu_s": c_ours,
                "ref_cpu_s": c_ref,
                "cpu_ratio": c_ours / c_ref,
                "pair_ratios": pair_ratios,
                "params": (ours[0]["params"], ref[0]["params"]),
                "edges": ours[0]["edges"],
            }
        )
    return results


def run() -> list[dict]:
    rows = []
    for r in compare():
        pairs = ", ".join(f"{x:.2f}" for x in r["pair_ratios"])
        note = (
            f"fairchem-core 1.10.0 {r['ref_s']:.3f} s/step; ratio {r['ratio']:.2f} (per alternating pair: {pairs}); "
            f"CPU time {r['ours_cpu_s']:.3f} vs {r['ref_cpu_s']:.3f} s, ratio {r['cpu_ratio']:.2f}; "
            f"params {r['params'][0]:,} vs {r['params'][1]:,}; {r['edges']} edges"
        )
        rows.append(
            {
                "name": f"equiformer_v2 {r['label']} fwd+bwd vs fairchem",
                "value": r["ours_s"],
                "unit": "s/step",
                "notes": note,
            }
        )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--venv", type=Path, default=DEFAULT_VENV)
    parser.add_argument("--sizes", default="0,1,2", help="indices into the three sizes, e.g. 0,2")
    args = parser.parse_args()
    sizes = [SIZES[int(k)] for k in args.sizes.split(",")]
    for r in compare(args.rounds, args.venv, sizes):
        print(json.dumps(r))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
