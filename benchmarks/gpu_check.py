"""Device check for one GPU: matmul peaks, training throughput and utilisation, precision agreement,
NCCL, one engine sweep on the GPU, peak memory. Run by ``benchmarks/gpu_check.sh`` (≤ 8 min).

    benchmarks/gpu_check.sh                          # writes $OUT/gpu_check.md (or ./gpu_check.md)
    benchmarks/gpu_check.sh --out FILE               # the section to FILE
    benchmarks/gpu_check.sh --into BENCHMARKS.md     # also replace the ``gpu`` section of BENCHMARKS.md
    benchmarks/gpu_check.sh --dry-run                # tiny sizes on CPU, seconds (tests/benchmarks)

What it measures, in order (each part is skipped, and the table says so, once ``--budget-s`` is spent):

1. Matmul peak FLOP/s: fp32 (TF32 off), TF32, bf16, fp16; n×n by n×n (2n³ FLOPs), best of repeats
   timed with CUDA events. The denominators of utilisation (Chowdhery et al. 2022, App. B: measured,
   not quoted).
2. NCCL: a one-rank process group (``init_process_group("nccl")``) and an all-reduce. One GPU cannot
   host two NCCL ranks (NCCL refuses duplicate devices); DDP across GPUs needs a second GPU.
3. Training throughput (structures/s, atoms/s) of real training steps (``engine.loop.train_step``:
   forward, loss, backward, clip, AdamW; GradScaler for fp16) of EquiformerV2 e3, e5, eqV2-S and the
   transformer's largest presets (t6, p6) in fp32, bf16 and fp16 autocast; utilisation = executed
   matmul FLOPs per step (``engine.loop.flops``, forward + backward) ÷ step time ÷ the matmul peak of
   the step's precision (fp32 steps: the fp32 peak with TF32 off); peak GPU memory of the step.
4. Agreement of the precisions: same weights, same batch, eval mode: largest error ÷ float32 RMS
   of forces and stress, energy per atom ÷ the fitted energy scale (tests/models/test_autocast.py
   states the CPU tolerances: fp16 2·10⁻², bf16 8·10⁻²).
5. One engine sweep on the GPU: ``python -m engine.scale`` on a copy of ``search_spaces/compute.yaml``
   (the frontier policy over FLOP rungs) with ``gpus_per_worker: 1`` and ``device: cuda``, two sizes, in a temporary
   folder; exit code, trials, wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
PRECISIONS = ("fp32", "bf16", "fp16")


@dataclass(frozen=True)
class Plan:
    """Sizes of one run: the full check on a GPU, or the dry run on CPU."""

    device: torch.device
    matmul_n: int
    matmul_repeats: int
    cases: tuple[tuple[str, str, str | None, dict], ...]  # (label, family, preset, overrides)
    structures: int  # EMT structures generated for the batches
    batch_size: int  # structures per training step
    warmup_steps: int
    timed_steps: int
    sweep_sizes: str
    sweep_gpus: float
    sweep_epochs: int  # per trial (the compute axis' FLOP rungs may end a trial earlier)


def full_plan() -> Plan:
    return Plan(
        device=torch.device("cuda"),
        matmul_n=8192,
        matmul_repeats=10,
        cases=(
            ("EquiformerV2 e3", "equiformer_v2", "e3", {}),
            ("EquiformerV2 e5", "equiformer_v2", "e5", {}),
            ("EquiformerV2 eqV2-S", "equiformer_v2", "eqV2-S", {}),
            ("transformer t6", "transformer", "t6", {}),
            ("transformer p6", "transformer", "p6", {}),
        ),
        structures=192,
        batch_size=32,
        warmup_steps=3,
        timed_steps=10,
        sweep_sizes="f0,f2",
        sweep_gpus=1.0,
        sweep_epochs=3,
    )


def dry_plan() -> Plan:
    tiny_eqv2 = {"cutoff": 4.0, "max_neighbors": 6, "grid_resolution": 8, "num_layers": 1, "lmax": 1, "mmax": 1}
    return Plan(
        device=torch.device("cpu"),
        matmul_n=128,
        matmul_repeats=2,
        cases=(
            ("EquiformerV2 e0 (dry run)", "equiformer_v2", "e0", tiny_eqv2),
            ("transformer t0 (dry run)", "transformer", "t0", {}),
        ),
        structures=4,
        batch_size=2,
        warmup_steps=1,
        timed_steps=1,
        sweep_sizes="f0",
        sweep_gpus=0.0,
        sweep_epochs=1,
    )


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _Clock:
    """Wall seconds of a block, synchronized with the device."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.seconds = 0.0

    def __enter__(self) -> _Clock:
        _sync(self.device)
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        _sync(self.device)
        self.seconds = time.perf_counter() - self._t0


def row(name: str, value: float | str, unit: str = "", notes: str = "") -> dict:
    return {"name": name, "value": value, "unit": unit, "notes": notes}


# -- 1. matmul peaks ------------------------------------------------------------------------------


def matmul_peak(plan: Plan, dtype: torch.dtype, tf32: bool = False) -> float:
    """Best FLOP/s of an n×n by n×n product (2n³ FLOPs) in ``dtype``."""
    n = plan.matmul_n
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    try:
        a = torch.randn(n, n, device=plan.device).to(dtype)
        b = torch.randn(n, n, device=plan.device).to(dtype)
        torch.mm(a, b)
        best = float("inf")
        for _ in range(plan.matmul_repeats):
            with _Clock(plan.device) as clock:
                torch.mm(a, b)
            best = min(best, clock.seconds)
        return 2.0 * n**3 / best
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old


# -- 2. NCCL ------------------------------------------------------------------------------------


def collective_check(device: torch.device) -> dict:
    """A one-rank process group (NCCL on CUDA, gloo on CPU) and an all-reduce of a known tensor."""
    import torch.distributed as dist

    backend = "nccl" if device.type == "cuda" else "gloo"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.perf_counter()
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        x = torch.arange(4, dtype=torch.float32, device=device)
        dist.all_reduce(x)
        ok = bool(torch.equal(x.cpu(), torch.arange(4, dtype=torch.float32)))
    finally:
        dist.destroy_process_group()
    note = "one rank (one GPU cannot host two NCCL ranks)" if backend == "nccl" else "CPU dry run"
    return row(f"{backend} init + all-reduce", "ok" if ok else "WRONG", "", f"{time.perf_counter() - t0:.2f} s; {note}")


# -- 3./4. training throughput, utilisation, memory, agreement -------------------------------------


def _amp(precision: str) -> bool | str:
    return {"fp32": False, "bf16": "bf16", "fp16": "fp16"}[precision]


def _setup(plan: Plan, family: str, preset: str | None, overrides: dict, records: list, precision: str):
    import models
    from engine.config import TrialConfig
    from engine.data.graph import GraphDataset, GraphSpec
    from engine.data.normalize import fit_normalization
    from engine.loop import precision as prec
    from engine.loop.loop import StepContext
    from engine.loop.schedule import WarmupCosine

    torch.manual_seed(0)
    model = models.build(family, dict(overrides), preset=preset)
    model.set_normalization(fit_normalization(records))
    model.to(plan.device)
    c = model.config
    dataset = GraphDataset(records, GraphSpec(c.cutoff, c.max_neighbors, c.strict_neighbors))
    config = TrialConfig(model=family, amp=_amp(precision), batch_size=plan.batch_size, device=plan.device.type)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-3)
    WarmupCosine(optimizer, config.optim).set_progress(0.5)
    ctx = StepContext(model=model, module=model, optimizer=optimizer, config=config, device=plan.device,
                      dtype=torch.float32, scaler=prec.make_grad_scaler(config.amp, plan.device))  # fmt: skip
    return ctx, dataset


def _batches(plan: Plan, dataset) -> list:
    order = np.random.default_rng(0).permutation(len(dataset))
    k = plan.batch_size
    chunks = [order[i : i + k].tolist() for i in range(0, len(order) - k + 1, k)] or [order.tolist()]
    return [dataset.batch(idx).to(plan.device) for idx in chunks]


def train_case(plan: Plan, label: str, family: str, preset, overrides, records, precision: str, peaks: dict) -> list:
    """Throughput, utilisation and peak memory of training steps of one model in one precision."""
    from engine.loop.loop import train_step

    ctx, dataset = _setup(plan, family, preset, overrides, records, precision)
    batches = _batches(plan, dataset)
    n_params = ctx.module.num_parameters()
    ctx.config.count_flops = False
    for k in range(plan.warmup_steps):
        train_step(ctx, batches[k % len(batches)])
    if plan.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(plan.device)
    structures = atoms = 0
    with _Clock(plan.device) as clock:
        for k in range(plan.timed_steps):
            batch = batches[k % len(batches)]
            train_step(ctx, batch)
            structures += batch.num_graphs
            atoms += batch.num_atoms
    step_s = clock.seconds / plan.timed_steps
    memory = torch.cuda.max_memory_allocated(plan.device) / 2**30 if plan.device.type == "cuda" else float("nan")
    # executed matmul FLOPs (forward + backward) of the timed steps: each distinct batch counted once
    ctx.config.count_flops = True
    used = [k % len(batches) for k in range(plan.timed_steps)]
    counted = {k: train_step(ctx, batches[k])[1] for k in sorted(set(used))}
    flops_per_step = sum(counted[k] for k in used) / plan.timed_steps
    peak = peaks["fp32"] if precision == "fp32" else peaks[precision]
    tag = f"{label} {precision}"
    note = f"{n_params:,} params, {plan.batch_size} structures/step, {step_s * 1e3:.1f} ms/step"
    rows = [
        row(f"train {tag}: structures/s", structures / clock.seconds, "structures/s", note),
        row(f"train {tag}: atoms/s", atoms / clock.seconds, "atoms/s", note),
    ]
    achieved = f"{flops_per_step / step_s / 1e12:.3g} TFLOP/s achieved, {flops_per_step / 1e9:.3g} GFLOP/step"
    rows.append(row(f"train {tag}: utilisation", flops_per_step / step_s / peak, "fraction of matmul peak",
                    f"{achieved}; against the {precision} matmul peak"))  # fmt: skip
    if plan.device.type == "cuda":
        rows.append(row(f"train {tag}: peak memory", memory, "GiB", "torch.cuda.max_memory_allocated over timed steps"))
    del ctx, dataset, batches
    if plan.device.type == "cuda":
        torch.cuda.empty_cache()
    return rows


def _relative(half: torch.Tensor, full: torch.Tensor) -> float:
    rms = full.detach().double().pow(2).mean().sqrt().clamp_min(1e-30)
    return float((half.detach().double() - full.detach().double()).abs().max() / rms)


def agreement_case(plan: Plan, label: str, family: str, preset, overrides, records) -> list:
    """bf16 and fp16 autocast outputs against float32 on one batch, same weights, eval mode."""
    ctx, dataset = _setup(plan, family, preset, overrides, records, "fp32")
    model = ctx.module.eval()
    batch = _batches(plan, dataset)[0]
    scale = float(model.energy_scale)
    full = model(batch)
    rows = []
    for precision, dtype in (("bf16", torch.bfloat16), ("fp16", torch.float16)):
        with torch.autocast(plan.device.type, dtype=dtype):
            half = model(batch)
        n = batch.n_atoms.to(torch.float64)
        e = float(((half.energy - full.energy).detach().double() / n).abs().max()) / scale
        parts = [f"energy/atom {e:.1e} (of energy scale)", f"forces {_relative(half.forces, full.forces):.1e}"]
        worst = max(e, _relative(half.forces, full.forces))
        if full.stress is not None:
            s = _relative(half.stress, full.stress)
            parts.append(f"stress {s:.1e}")
            worst = max(worst, s)
        finite = all(torch.isfinite(t).all() for t in (half.energy, half.forces))
        rows.append(row(f"agreement {label} {precision} vs fp32", worst, "max error ÷ fp32 RMS",
                        ", ".join(parts) + ("" if finite else "; NON-FINITE outputs")))  # fmt: skip
    return rows


# -- 5. one engine sweep on the GPU ---------------------------------------------------------------


def sweep_check(plan: Plan, timeout_s: float) -> list:
    """``python -m engine.scale`` on a copy of ``search_spaces/compute.yaml`` (the frontier policy over FLOP rungs)
    whose trials must run on ``plan.device`` (``device: cuda`` fails loudly where no GPU is visible). A CPU dry
    run trains on a small slice of the embedded dataset, so it stays a smoke test."""
    import yaml

    space = yaml.safe_load((ROOT / "search_spaces" / "compute.yaml").read_text())
    space["sizes"] = plan.sweep_sizes.split(",")
    space["seeds"] = [0]
    space["fixed"].update(epochs=plan.sweep_epochs, device=plan.device.type)
    space["resources"] = {"workers": 1, "cpus_per_worker": 1, "gpus_per_worker": plan.sweep_gpus}
    if plan.device.type == "cpu":  # dry run: seconds, not the default space's 2,400 structures
        space["train_sizes"] = [200]
        space["fixed"].setdefault("data", {})["emt_size"] = 400
    # Ray's socket paths must stay under 107 bytes: its temporary folder is a short one under /tmp
    with (
        tempfile.TemporaryDirectory(prefix="gpu-check-", ignore_cleanup_errors=True) as tmp,
        tempfile.TemporaryDirectory(prefix="gcray", dir="/tmp", ignore_cleanup_errors=True) as ray_tmp,
    ):
        Path(tmp, "space.yaml").write_text(yaml.safe_dump(space))
        env = dict(os.environ, ENGINE_SWEEPS=f"{tmp}/sweeps", ENGINE_CACHE=f"{tmp}/cache", ENGINE_REPORTS=f"{tmp}/r",
                   MLFLOW_TRACKING_URI=f"sqlite:///{tmp}/mlflow.db", RAY_TMPDIR=ray_tmp, TMPDIR=ray_tmp,
                   PYTHONPATH=str(ROOT))  # fmt: skip
        cmd = [sys.executable, "-m", "engine.scale", "--space", f"{tmp}/space.yaml", "--name", "gpu-check",
               "--no-report"]  # fmt: skip
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=timeout_s)
            rc = proc.returncode
            lines = [x for x in (proc.stdout if rc == 0 else proc.stderr).splitlines() if x.strip()]
            tail = lines[-1:] if lines else []
        except subprocess.TimeoutExpired:
            rc, tail = -1, [f"timed out after {timeout_s:.0f} s"]
        wall = time.perf_counter() - t0
        trials = [json.loads(p.read_text().splitlines()[-1]) for p in Path(tmp, "sweeps").rglob("metrics.jsonl")]
    what = (f"engine.scale on compute.yaml (frontier policy) with sizes {plan.sweep_sizes}, "
            f"{plan.sweep_epochs} epoch(s), device {plan.device.type}, gpus_per_worker {plan.sweep_gpus:g}")
    note = f"{what}; {len(trials)} trial(s) reported; {wall:.0f} s; " + " ".join(tail)[:160]
    return [row("engine sweep on the device", "ok" if rc == 0 and trials else f"exit {rc}", "", note.replace("|", "/"))]


# -- the whole check ------------------------------------------------------------------------------


def machine(device: torch.device) -> str:
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (dry run)"
    cuda = f", CUDA {torch.version.cuda}" if device.type == "cuda" else ""
    return f"{gpu}{cuda}, torch {torch.__version__}, Python {platform.python_version()}, {os.cpu_count()} CPU cores"


def run_check(plan: Plan, budget_s: float, skip_sweep: bool = False) -> list[dict]:
    from engine.data.emt import generate_records

    start = time.perf_counter()

    def left() -> float:
        return budget_s - (time.perf_counter() - start)

    rows = []
    peaks = {
        "fp32": matmul_peak(plan, torch.float32),
        "tf32": matmul_peak(plan, torch.float32, tf32=True),
        "bf16": matmul_peak(plan, torch.bfloat16),
        "fp16": matmul_peak(plan, torch.float16),
    }
    n = plan.matmul_n
    for name, value in peaks.items():
        rows.append(row(f"matmul peak {name} {n}³", value / 1e12, "TFLOP/s", f"best of {plan.matmul_repeats}"))
    rows.append(collective_check(plan.device))
    records = generate_records(seed=4242, size=plan.structures, progress=False)
    for label, family, preset, overrides in plan.cases:
        for precision in PRECISIONS:
            if left() < 60 and plan.device.type == "cuda":
                rows.append(row(f"train {label} {precision}", "skipped", "", "time budget spent"))
                continue
            try:
                rows += train_case(plan, label, family, preset, overrides, records, precision, peaks)
            except torch.cuda.OutOfMemoryError as exc:
                rows.append(row(f"train {label} {precision}", "OOM", "", str(exc).splitlines()[0][:120]))
                torch.cuda.empty_cache()
        rows += agreement_case(plan, label, family, preset, overrides, records)
    if skip_sweep:
        rows.append(row("engine sweep on the device", "skipped", "", "--skip-sweep"))
    elif left() < 30:
        rows.append(row("engine sweep on the device", "skipped", "", "time budget spent"))
    else:
        rows += sweep_check(plan, timeout_s=left())
    return rows


def section(rows: list[dict], plan: Plan, seconds: float, argv: list[str]) -> str:
    cmd = " ".join(["benchmarks/gpu_check.sh", *argv])
    lines = [
        "<!-- bench:gpu -->",
        f"`{cmd}` — {time.strftime('%Y-%m-%d')}, {machine(plan.device)}, took {seconds:.0f} s",
        "",
        "| check | value | unit | notes |",
        "|---|---:|---|---|",
    ]
    for r in rows:
        v = r["value"]
        vs = f"{v:.4g}" if isinstance(v, float) else str(v)
        lines.append(f"| {r['name']} | {vs} | {r['unit']} | {r['notes']} |")
    lines.append("<!-- /bench:gpu -->")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(prog="benchmarks/gpu_check.sh", description=__doc__.splitlines()[0])
    p.add_argument("--dry-run", action="store_true", help="tiny sizes on CPU (no GPU needed)")
    p.add_argument("--out", type=Path, help="write the section here (default: $OUT/gpu_check.md or ./gpu_check.md)")
    p.add_argument("--into", type=Path, help="also replace the <!-- bench:gpu --> section of this BENCHMARKS.md")
    p.add_argument("--budget-s", type=float, default=450.0, help="stop starting new parts after this many seconds")
    p.add_argument("--skip-sweep", action="store_true", help="leave out the engine sweep (part 5)")
    args = p.parse_args(argv)
    if not args.dry_run and not torch.cuda.is_available():
        print("error: no CUDA GPU visible; run on a GPU node, or use --dry-run for the CPU rehearsal", file=sys.stderr)
        return 2
    plan = dry_plan() if args.dry_run else full_plan()
    out = args.out or Path(os.environ.get("OUT", ".")) / "gpu_check.md"
    if args.into is not None and not args.into.is_file():
        print(f"error: --into {args.into} does not exist; give the path of BENCHMARKS.md", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    rows = run_check(plan, args.budget_s, skip_sweep=args.skip_sweep)
    text = section(rows, plan, time.perf_counter() - t0, argv)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    if args.into is not None:
        from benchmarks.run import update

        body = text.strip()
        args.into.write_text(update(args.into.read_text(), "gpu", body))
    print(text)
    print(f"wrote {out}" + (f" and the gpu section of {args.into}" if args.into else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
