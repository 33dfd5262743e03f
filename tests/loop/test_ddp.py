"""Data parallelism: one step on 2 gloo ranks equals one step on 1 rank with the same global batch."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as tdist
import torch.multiprocessing as mp

from engine import metrics as M
from engine.config import DataConfig, TrialConfig
from engine.loop.checkpoint import load_checkpoint
from engine.loop.loop import DistContext, run_trial

from .conftest import TinySplits, emt_records


def _splits(n_train: int = 10) -> TinySplits:
    recs = emt_records(14, seed=5)
    return TinySplits(train=recs[:n_train], val=recs[10:])


def _config(model: str, max_flops: float | None = None) -> TrialConfig:
    mc = {"fcn": {"hidden": 16, "num_rbf": 8}, "transformer": {"d_model": 16, "depth": 1, "heads": 2}}[model]
    # one global batch holds the whole training set: epoch 1 is exactly one optimizer step
    return TrialConfig(model=model, model_config=mc, epochs=1, batch_size=64, max_atoms_per_batch=4096, seed=7,
                       data=DataConfig(max_val=4), max_flops=max_flops)  # fmt: skip


# conservative (double backward through DDP), direct, and a one-structure batch (rank 1 gets a masked stand-in);
# FLOPs summed at the report (no budget) and every step (a FLOP budget reads them: engine.loop.flop_tally)
RUNS = {"fcn": ("fcn", 10, None), "transformer": ("transformer", 10, None), "fcn-one": ("fcn", 1, None),
        "fcn-budget": ("fcn", 10, 1e15)}


def _worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    tdist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        for name, (model, n_train, budget) in RUNS.items():
            dist = DistContext(rank, world, "cpu")
            run_trial(_config(model, budget), f"{out_dir}/{name}", dist=dist, splits=_splits(n_train),
                      dtype=torch.float64)
    finally:
        tdist.destroy_process_group()


@pytest.mark.slow
def test_two_ranks_take_the_same_step_as_one(tmp_path, monkeypatch):
    monkeypatch.setenv("ENGINE_CACHE", str(tmp_path / "cache"))
    # fork: the children inherit the imports (spawn would re-import torch, ase, ... in each)
    mp.start_processes(_worker, args=(2, str(tmp_path / "pg"), str(tmp_path / "ddp")), nprocs=2, start_method="fork")
    for name, (model, n_train, budget) in RUNS.items():
        single = run_trial(_config(model, budget), tmp_path / "single" / name, splits=_splits(n_train),
                           dtype=torch.float64)
        a = load_checkpoint(tmp_path / "single" / name / "checkpoint.pt")
        b = load_checkpoint(tmp_path / "ddp" / name / "checkpoint.pt")
        assert a["step"] == b["step"] == 1
        for key, value in a["model_state"].items():
            assert torch.allclose(value, b["model_state"][key], rtol=1e-9, atol=1e-12), (model, key)
        history = b["metrics_history"]
        assert history[1][M.VAL_LOSS] != history[0][M.VAL_LOSS]  # the step moved the weights
        for key in (M.VAL_LOSS, "train_loss", "val_forces_l2mae_mev_per_a", "train_stress_mae_mev_per_a3"):
            assert history[-1][key] == pytest.approx(single[key], rel=1e-9), (model, key)
        if name in ("fcn", "fcn-budget"):  # cost linear in atoms and edges: the ranks' FLOPs add up to the single run's
            assert history[-1][M.FLOPS_CUM] == single[M.FLOPS_CUM]


def _preempt_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    """Rank 1 alone gets the SIGTERM (its node is preempted); both ranks must save at the same step and stop."""
    from engine.errors import Preempted
    from engine.loop import preemption

    torch.set_num_threads(1)
    tdist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    cfg = _config("fcn")
    cfg.epochs, cfg.batch_size = 4, 2  # 5 steps an epoch: the ranks agree at step 16, inside epoch 4
    try:
        run_trial(cfg, f"{out_dir}/straight", dist=DistContext(rank, world, "cpu"), splits=_splits(10),
                  dtype=torch.float64)
        enter = preemption.SigtermWatch.__enter__
        if rank == 1:
            def signalled(self):
                out = enter(self)
                self.requested.set()
                return out

            preemption.SigtermWatch.__enter__ = signalled
        stopped_at = None
        try:
            run_trial(cfg, f"{out_dir}/stopped", dist=DistContext(rank, world, "cpu"), splits=_splits(10),
                      dtype=torch.float64)
        except Preempted as exc:
            stopped_at = str(exc)
        preemption.SigtermWatch.__enter__ = enter
        with open(f"{out_dir}/rank{rank}.txt", "w") as fh:
            fh.write(str(stopped_at))
        run_trial(cfg, f"{out_dir}/stopped", dist=DistContext(rank, world, "cpu"), splits=_splits(10),
                  dtype=torch.float64)
    finally:
        tdist.destroy_process_group()


@pytest.mark.slow
def test_a_sigterm_on_one_rank_stops_every_rank_at_the_same_step(tmp_path, monkeypatch):
    monkeypatch.setenv("ENGINE_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "ddp"
    out.mkdir()
    mp.start_processes(_preempt_worker, args=(2, str(tmp_path / "pg"), str(out)), nprocs=2, start_method="fork")
    for rank in (0, 1):
        assert "checkpoint saved at step 16 (epoch 4)" in (out / f"rank{rank}.txt").read_text()
    a = load_checkpoint(out / "straight" / "checkpoint.pt")
    b = load_checkpoint(out / "stopped" / "checkpoint.pt")  # resumed from step 16 and finished
    assert a["finished"] and b["finished"] and a["step"] == b["step"] == 20
    for key, value in a["model_state"].items():
        assert torch.equal(value, b["model_state"][key]), key
