"""Cooldown branches at FLOP rungs (compute axis): annealed reports, untouched main run, FLOPs, resume."""

from __future__ import annotations

import json

import pytest
import torch

from engine import metrics as M
from engine.config import DataConfig, OptimConfig, TrialConfig
from engine.errors import ConfigError
from engine.loop.checkpoint import load_checkpoint
from engine.loop.cooldown import RungCooldowns, cooldown_steps, main_flops_per_step, planned_flops
from engine.loop.loop import run_trial

RUNGS = [1.0e6, 3.0e6, 9.0e6]  # FLOPs; the tiny fcn spends ~1.05e6 per epoch on 24 structures
LR, MIN_LR_FACTOR = 3e-3, 0.01


class ListReporter:
    def __init__(self, crash_at_rung: int | None = None) -> None:
        self.rows: list[dict] = []
        self.crash_at_rung = crash_at_rung

    def report(self, metrics, checkpoint_dir=None):
        self.rows.append(dict(metrics))
        if self.crash_at_rung is not None and metrics.get(M.RUNG) == self.crash_at_rung:
            raise KeyboardInterrupt("simulated crash right after a rung report")


def _config(rungs, **optim) -> TrialConfig:
    opt = dict(lr=LR, schedule="wsd", cooldown_fraction=0.2, cooldown_shape="sqrt", min_lr_factor=MIN_LR_FACTOR)
    opt.update(optim)
    return TrialConfig(model="fcn", model_config={"hidden": 16, "num_rbf": 8}, epochs=1000, batch_size=4, seed=3,
                       data=DataConfig(max_val=6), optim=OptimConfig(**opt), rung_flops=list(rungs),
                       max_flops=float(rungs[-1]))


@pytest.fixture(scope="module")
def branched(tiny_splits, tmp_path_factory):
    """One trial with three rungs (two discarded branches, then the final cooldown)."""
    torch.set_num_threads(1)
    run_dir = tmp_path_factory.mktemp("branched") / "run"
    rep = ListReporter()
    run_trial(_config(RUNGS), run_dir, reporter=rep, splits=tiny_splits)
    return rep.rows, run_dir


def _volatile_free(row: dict) -> dict:
    return {k: v for k, v in row.items() if k not in (M.WALL_S, M.CHECKPOINT)}


def test_only_annealed_points_are_reported(branched):
    rows, _ = branched
    assert rows[0][M.EPOCH] == 0 and rows[0][M.FLOPS_CUM] == 0.0  # the untrained model
    rung_rows = rows[1:]
    assert [r[M.RUNG] for r in rung_rows] == [0.0, 1.0, 2.0]  # one report per rung, nothing in between
    assert [r[M.REPORT] for r in rows] == [0, 1, 2, 3]
    for r in rung_rows:
        assert r[M.LR_COOLDOWN_END] <= 1.5 * MIN_LR_FACTOR * LR  # annealed: the branch ended at the floor
        assert r[M.LR_COOLDOWN_END] == pytest.approx(MIN_LR_FACTOR * LR)
        steps = int(r[M.STEP])
        assert r[M.COOLDOWN_STEPS] == cooldown_steps(steps, 0.2, 10) == min(steps, max(10, round(0.2 * steps)))
    assert rung_rows[-1][M.VAL_LOSS] < rung_rows[-1][M.VAL_LOSS_UNANNEALED]  # the cooldown helps
    assert rung_rows[0][M.LR] == pytest.approx(LR)  # a discarded branch: the main run is back at the peak
    assert rung_rows[-1][M.LR] == pytest.approx(MIN_LR_FACTOR * LR)  # the last cooldown is the trial's end


def test_a_rung_is_placed_at_its_main_run_plus_its_own_cooldown(branched):
    """flops_cum (the frontier's x) = main run at the branch + this branch; flops_spent adds every branch."""
    rows, run_dir = branched
    ck = load_checkpoint(run_dir / "checkpoint.pt")
    cooldown = [r[M.COOLDOWN_FLOPS] for r in rows[1:]]
    assert all(c > 0 for c in cooldown)
    assert ck["flops_cooldown"] == sum(cooldown)
    assert rows[-1][M.FLOPS_SPENT] == ck["flops_cum"] + sum(cooldown)  # main run + every branch: the cost
    assert rows[-1][M.FLOPS_CUM] == ck["flops_cum"] + cooldown[-1]  # the trial's end keeps its own cooldown
    assert rows[0][M.FLOPS_SPENT] == rows[0][M.FLOPS_CUM] == 0.0
    spent_before = 0.0
    for r, c in zip(rows[1:], cooldown, strict=True):
        spent_before += c
        main = r[M.FLOPS_SPENT] - spent_before  # the main run's FLOPs when the branch was taken
        assert r[M.FLOPS_CUM] == main + c
        assert main >= r[M.RUNG_FLOPS]
        assert c <= main  # never longer than the run before it
        if 0.2 * r[M.STEP] >= 10:  # past the floor: 20 % of the steps so far ≈ 20 % of the FLOPs
            assert 0.1 * main < c < 0.4 * main
    assert planned_flops(_config(RUNGS)) == pytest.approx(RUNGS[-1] + 0.2 * sum(RUNGS))  # floor left out
    # with the FLOPs per step seen at the first rung, the floor (10 steps of the 6-51 here) is in the estimate
    per_step = main_flops_per_step(rows[1])
    assert per_step == pytest.approx(ck["flops_cum"] / ck["step"], rel=0.05)
    assert planned_flops(_config(RUNGS), per_step) == pytest.approx(rows[-1][M.FLOPS_SPENT], rel=0.1)
    assert planned_flops(_config(RUNGS, cooldown_min_steps=0), per_step) == pytest.approx(
        RUNGS[-1] + 0.2 * sum(RUNGS))
    assert main_flops_per_step(rows[0]) is None  # not a rung


def test_branches_leave_the_main_run_untouched(branched, tiny_splits, tmp_path):
    """The same trial with only the last rung (no discarded branch) ends bit for bit the same."""
    rows, run_dir = branched
    rep = ListReporter()
    run_trial(_config(RUNGS[-1:]), tmp_path / "plain", reporter=rep, splits=tiny_splits)
    plain, last = rep.rows[-1], rows[-1]
    same = (M.EPOCH, M.STEP, M.LR, M.VAL_LOSS, M.VAL_LOSS_UNANNEALED, M.COOLDOWN_STEPS, M.COOLDOWN_FLOPS,
            M.split_key("train", M.LOSS), M.split_key("val", M.FORCES_MAE), M.split_key("val", M.ENERGY_MAE),
            M.FLOPS_CUM, M.EPOCHS_RUN)  # the discarded branches do not move the last rung's coordinate
    assert {k: plain[k] for k in same} == {k: last[k] for k in same}
    assert last[M.FLOPS_SPENT] - plain[M.FLOPS_SPENT] == sum(r[M.COOLDOWN_FLOPS] for r in rows[1:-1])
    a = load_checkpoint(run_dir / "checkpoint.pt")
    b = load_checkpoint(tmp_path / "plain" / "checkpoint.pt")
    assert a["flops_cum"] == b["flops_cum"] and a["step"] == b["step"]
    for key, value in a["model_state"].items():
        assert torch.equal(value, b["model_state"][key]), key
    for key, value in a["optimizer_state"]["state"].items():
        for name, tensor in value.items():
            assert torch.equal(tensor, b["optimizer_state"]["state"][key][name]), (key, name)


def test_resume_after_a_rung_continues_exactly(branched, tiny_splits, tmp_path):
    rows, _ = branched
    crashed = ListReporter(crash_at_rung=1.0)
    with pytest.raises(KeyboardInterrupt):
        run_trial(_config(RUNGS), tmp_path / "b", reporter=crashed, splits=tiny_splits)
    resumed = ListReporter()
    run_trial(_config(RUNGS), tmp_path / "b", reporter=resumed, splits=tiny_splits)
    # the rung was checkpointed before its report: the resumed run goes on with the next one
    assert resumed.rows[0][M.REPORT] == crashed.rows[-1][M.REPORT] + 1
    merged = {r[M.REPORT]: _volatile_free(r) for r in crashed.rows + resumed.rows}
    assert list(merged.values()) == [_volatile_free(r) for r in rows]
    lines = [json.loads(x) for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [x[M.REPORT] for x in lines] == [0, 1, 2, 3]


def test_rungs_need_a_wsd_schedule_and_valid_settings():
    with pytest.raises(ConfigError, match=r"needs optim\.schedule: wsd"):
        RungCooldowns(_config(RUNGS, schedule="cosine"))
    with pytest.raises(ConfigError, match="increasing"):
        RungCooldowns(_config([3e6, 1e6]))
    with pytest.raises(ConfigError, match="cooldown_fraction"):
        OptimConfig(cooldown_fraction=1.5)
    with pytest.raises(ConfigError, match="cooldown_shape"):
        OptimConfig(cooldown_shape="cosine")
    with pytest.raises(ConfigError, match="cooldown_min_steps"):
        OptimConfig(cooldown_min_steps=-1)
    assert OptimConfig().cooldown_min_steps == 10 and OptimConfig(cooldown_min_steps=0).cooldown_min_steps == 0
    with pytest.raises(ConfigError, match=r"optim\.schedule"):
        OptimConfig(schedule="linear")
    assert RungCooldowns.for_config(TrialConfig()) is None
    assert cooldown_steps(0, 0.2) == 1 and cooldown_steps(100, 0.2) == 20 and cooldown_steps(7, 0.1) == 1


def test_cooldowns_have_a_floor_but_never_outrun_the_main_run():
    """Early rungs of every size are annealed over a comparable number of updates (optim.cooldown_min_steps)."""
    assert [cooldown_steps(s, 0.2, 10) for s in (1, 3, 10, 20, 50, 60, 1000)] == [1, 3, 10, 10, 10, 12, 200]
    assert cooldown_steps(0, 0.2, 10) == 1  # a branch trains at least one step
    assert cooldown_steps(7, 0.1, 0) == 1 and cooldown_steps(40, 0.1, 5) == 5  # no floor / a floor of 5


def test_epoch_cap_before_the_last_budget_still_ends_annealed(tiny_splits, tmp_path):
    cfg = _config([1.0e9, 3.0e9])  # far beyond what 3 epochs spend
    cfg.epochs = 3
    rep = ListReporter()
    run_trial(cfg, tmp_path / "run", reporter=rep, splits=tiny_splits)
    assert len(rep.rows) == 2  # the untrained model, then the cooldown that ends the trial
    last = rep.rows[-1]
    assert last[M.EPOCH] == 3 and last[M.RUNG] == 1.0 and last[M.LR_COOLDOWN_END] <= 1.5 * MIN_LR_FACTOR * LR
    assert last[M.RUNG_FLOPS] == last[M.FLOPS_CUM] - last[M.COOLDOWN_FLOPS] < 1.0e9  # the budget it reached


def test_a_branch_reads_its_batches_through_the_main_runs_data_path(tiny_splits, tmp_path, monkeypatch):
    """Each cooldown asks batch_stream (DataLoader workers for a lazy dataset) for exactly its own steps' batches."""
    import numpy as np

    from engine.data.graph import EpochBatches
    from engine.loop import loop as loop_mod

    asked: list[list[list[int]]] = []
    batch_stream = loop_mod.batch_stream

    def spy(dataset, index_lists, *args):
        asked.append([list(idx) for idx in index_lists])
        return batch_stream(dataset, index_lists, *args)

    monkeypatch.setattr(loop_mod, "batch_stream", spy)
    rep = ListReporter()
    run_trial(_config(RUNGS[:1]), tmp_path / "run", reporter=rep, splits=tiny_splits)
    rung = rep.rows[-1]
    n_steps = int(rung[M.COOLDOWN_STEPS])
    rng = np.random.default_rng([3, int(rung[M.STEP])])  # the branch's own shuffle: (seed, main-run step)
    sizes = np.array([r.n_atoms for r in tiny_splits.train])
    want = [b.tolist() for b in EpochBatches(sizes, 4, 1024, rng.permutation(len(sizes)))][:n_steps]
    assert want in asked
