"""Training-step benchmarks: throughput, model FLOP utilization (MFU), FLOP-count overhead, data path.

Run: ``.venv/bin/python -m benchmarks.run train`` (or ``python -m benchmarks.bench_train``); one torch thread.
``run()`` returns rows ``{name, value, unit, notes}`` for the BENCHMARKS.md runner.

- Throughput: structures/s and atoms/s of full training steps (forward, backward, AdamW) on
  batches of fresh EMT structures packed exactly as the loop packs them.
- MFU = achieved FLOP/s of a training step (FLOPs counted by ``torch.utils.flop_counter`` on the
  same batches) ÷ FLOP/s of a large float32 matmul measured in the same run with the same
  thread count (the "peak" of Chowdhery et al. 2022, App. B, measured instead of quoted).
  With ``amp`` (bf16 autocast) the ratio is also given against a bf16 matmul.
- Counting overhead: step time with the FLOP counter on ÷ off, minus 1.
- Data path: collating a batch from cached neighbor lists (what every step pays) and building the
  neighbor lists (paid once per structure), as a fraction of a training step of the smallest model.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import numpy as np
import torch

import models
from engine.config import TrialConfig
from engine.data.graph import GraphDataset, GraphSpec, neighbor_graph, pack_batches
from engine.loop.flops import FlopAccountant
from engine.loop.loop import StepContext, train_step
from engine.loop.schedule import WarmupCosine

N_STRUCTURES = 384  # fresh EMT structures (seed 4242) the steps draw batches from
BATCH_SIZE = 16  # structures per batch, the loop's default
MAX_ATOMS = 1024
# (label, family, model config, structures per batch): each family at two sizes; the transformer at
# d_model 256 is the MFU target, run at the seed study's batch of 64 structures
CASES = (
    ("fcn default (hidden 64)", "fcn", {}, BATCH_SIZE),
    ("fcn hidden 256 depth 3", "fcn", {"hidden": 256, "depth": 3, "species_channels": 8}, BATCH_SIZE),
    ("transformer default (d 64)", "transformer", {}, BATCH_SIZE),
    ("transformer d 256 depth 3, batch 64", "transformer", {"d_model": 256, "depth": 3, "heads": 2}, 64),
    ("transformer periodic d 64", "transformer", {"periodic": True, "xyz_input": False}, BATCH_SIZE),
)


def matmul_flops_per_s(dtype: torch.dtype, n: int = 2048, repeats: int = 5) -> float:
    """Best-of-``repeats`` FLOP/s of an n×n by n×n matmul (2n³ FLOPs)."""
    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n**3 / best


@dataclass
class StepTiming:
    """Medians over steps (robust to a shared machine's load swings)."""

    seconds_per_step: float
    flops_per_step: float
    structures_per_s: float
    atoms_per_s: float


def _context(family: str, model_config: dict, amp: bool, records: list) -> tuple[StepContext, GraphDataset]:
    torch.manual_seed(0)
    model = models.build(family, model_config)
    c = model.config
    dataset = GraphDataset(records, GraphSpec(c.cutoff, c.max_neighbors, c.strict_neighbors))
    config = TrialConfig(model=family, model_config=model_config, amp=amp, batch_size=BATCH_SIZE)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-3)
    WarmupCosine(optimizer, config.optim).set_progress(0.5)
    ctx = StepContext(
        model=model, module=model, optimizer=optimizer, config=config, device=torch.device("cpu"), dtype=torch.float32
    )
    return ctx, dataset


MODES = ("off", "every", "loop")


def time_modes(
    ctx: StepContext, dataset: GraphDataset, n_steps: int, batch_size: int = BATCH_SIZE
) -> tuple[dict[str, StepTiming], FlopAccountant]:
    """Time ``n_steps`` training steps in each FLOP mode, interleaved batch by batch so load drifts cancel.

    Modes: "off" (no FLOPs), "every" (the counter on every step), "loop" (the loop's
    :class:`FlopAccountant`: counted until the batch sizes are spanned, then solved exactly).
    """
    order = np.random.default_rng(0).permutation(len(dataset))
    max_atoms = MAX_ATOMS * max(1, batch_size // BATCH_SIZE)
    prepared = [dataset.batch(idx) for idx in pack_batches(dataset.sizes(), batch_size, max_atoms, order)]
    accountant = FlopAccountant()
    ctx.config.count_flops = False
    train_step(ctx, prepared[0])  # warm-up
    samples: dict[str, list[tuple[float, int, int, int]]] = {m: [] for m in MODES}
    for k in range(n_steps):
        batch = prepared[1 + k % (len(prepared) - 1)]
        for mode in MODES:
            ctx.config.count_flops = mode != "off"
            ctx.flops = accountant if mode == "loop" else None
            t0 = time.perf_counter()
            _, flops = train_step(ctx, batch)
            samples[mode].append((time.perf_counter() - t0, flops, batch.num_graphs, batch.num_atoms))
    out = {}
    for mode, rows in samples.items():
        t = np.array([r[0] for r in rows])
        out[mode] = StepTiming(
            seconds_per_step=float(np.median(t)),
            flops_per_step=float(np.mean([r[1] for r in samples["every"]])),
            structures_per_s=float(np.median([r[2] for r in rows] / t)),
            atoms_per_s=float(np.median([r[3] for r in rows] / t)),
        )
    return out, accountant


def data_path_seconds(dataset: GraphDataset, n_batches: int) -> tuple[float, float]:
    """(collate seconds per batch from cached graphs, neighbor-list seconds per batch's structures)."""
    batches = pack_batches(dataset.sizes(), BATCH_SIZE, MAX_ATOMS)[:n_batches]
    t0 = time.perf_counter()
    for idx in batches:
        for k in idx:
            neighbor_graph(dataset.records[k], dataset.spec)
    neighbors = (time.perf_counter() - t0) / len(batches)
    for idx in batches:  # fill the cache
        dataset.batch(idx)
    t0 = time.perf_counter()
    for idx in batches:
        dataset.batch(idx)
    collate = (time.perf_counter() - t0) / len(batches)
    return collate, neighbors


def _row(name: str, value: float, unit: str, notes: str) -> dict:
    return {"name": name, "value": value, "unit": unit, "notes": notes}


def run(n_steps: int = 20, threads: int | None = 1) -> list[dict]:
    """Benchmark every case of :data:`CASES` in fp32 and bf16 autocast; see the module docstring."""
    from engine.data.emt import generate_records

    if threads:
        torch.set_num_threads(threads)
    nt = torch.get_num_threads()
    records = generate_records(seed=4242, size=N_STRUCTURES, progress=False)
    # the matmul rates are re-measured before every case; the best (least disturbed) one is the peak
    peaks: dict[torch.dtype, float] = {torch.float32: 0.0, torch.bfloat16: 0.0}
    measured = []
    smallest_step = None
    data_dataset = None
    for label, family, mc, batch_size in CASES:
        for amp in (False, True):
            for dtype in peaks:
                peaks[dtype] = max(peaks[dtype], matmul_flops_per_s(dtype))
            ctx, dataset = _context(family, mc, amp, records)
            timings, accountant = time_modes(ctx, dataset, n_steps, batch_size)
            measured.append((label, amp, ctx.module.num_parameters(), timings, accountant, os.getloadavg()[0]))
            if not amp and (smallest_step is None or ctx.module.num_parameters() < smallest_step[1]):
                smallest_step = (label, ctx.module.num_parameters(), timings["off"].seconds_per_step)
                data_dataset = dataset
    peak32, peak16 = peaks[torch.float32], peaks[torch.bfloat16]
    where = f"{nt} thread(s), load {os.getloadavg()[0]:.1f}"
    rows = [
        _row("matmul fp32 2048³", peak32 / 1e9, "GFLOP/s", f"MFU denominator (best of the run); {where}"),
        _row("matmul bf16 2048³", peak16 / 1e9, "GFLOP/s", f"bf16 ÷ fp32 = {peak16 / peak32:.2f}; {where}"),
    ]
    for label, amp, n_params, timings, accountant, load in measured:
        tag = f"{label}{' amp-bf16' if amp else ''}"
        off, every, loop = timings["off"], timings["every"], timings["loop"]
        achieved = off.flops_per_step / off.seconds_per_step
        note = f"{n_params:,} params, {nt} thread(s), load {load:.1f}, median of {n_steps} steps"
        rows.append(_row(f"train {tag}: structures/s", off.structures_per_s, "structures/s", note))
        rows.append(_row(f"train {tag}: atoms/s", off.atoms_per_s, "atoms/s", note))
        mfu_note = f"{achieved / 1e9:.2f} GFLOP/s achieved, {off.flops_per_step / 1e6:.1f} MFLOP/step"
        rows.append(_row(f"train {tag}: MFU vs fp32 matmul", achieved / peak32, "fraction", mfu_note))
        if amp:
            rows.append(_row(f"train {tag}: ratio to bf16 matmul", achieved / peak16, "fraction", mfu_note))
        rows.append(_row(f"train {tag}: FLOP-count overhead, every step",
                         every.seconds_per_step / off.seconds_per_step - 1.0, "fraction of step",
                         "lean counter (TorchDispatchMode) on every step vs off"))  # fmt: skip
        rows.append(_row(f"train {tag}: FLOP-count overhead, loop accountant",
                         loop.seconds_per_step / off.seconds_per_step - 1.0, "fraction of step",
                         f"counted {accountant.counted} of {accountant.steps} steps, rest solved exactly"))  # fmt: skip
    assert smallest_step is not None and data_dataset is not None
    collate, neighbors = data_path_seconds(data_dataset, n_batches=n_steps)
    label, _, step_s = smallest_step
    rows.append(_row("data path: collate per batch", collate * 1e3, "ms", f"cached neighbor lists, {BATCH_SIZE}/batch"))
    rows.append(_row("data path: collate ÷ step of smallest model", collate / step_s, "fraction",
                     f"{label}: {step_s * 1e3:.1f} ms/step; target < 0.10"))  # fmt: skip
    once = f"÷ step of {label}: {neighbors / step_s:.2f} (first epoch only, then cached)"
    rows.append(_row("data path: neighbor lists per batch (once per structure)", neighbors * 1e3, "ms", once))
    return rows


if __name__ == "__main__":
    for r in run():
        print(f"{r['name']:60s} {r['value']:>12.4g} {r['unit']:14s} {r['notes']}")
