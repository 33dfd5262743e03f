"""A compute-axis trial checkpoints at every rung and resumes from it mid-epoch exactly; samples seen per rung."""

from __future__ import annotations

import pytest
import torch

from engine import metrics as M
from engine.config import DataConfig, OptimConfig, TrialConfig
from engine.loop import loop as loop_mod
from engine.loop.checkpoint import load_checkpoint
from engine.loop.loop import run_trial

# the tiny fcn spends ~1.8e5 FLOPs a step, 6 steps (24 structures, 4 a batch) an epoch: rungs 0 and 1 are both
# passed by step 10 (inside epoch 2), the last one inside epoch 6
RUNGS = [1.6e6, 1.7e6, 6.0e6]
STEPS_PER_EPOCH, BATCH = 6, 4


class _PausedError(Exception):
    """Raised by the reporter right after a rung's report: a scheduler pausing the trial there."""


class Reporter:
    def __init__(self, pause_at_rung: float | None = None) -> None:
        self.rows: list[dict] = []
        self.pause_at_rung = pause_at_rung

    def report(self, metrics, checkpoint_dir=None):
        self.rows.append(dict(metrics))
        if self.pause_at_rung is not None and metrics.get(M.RUNG) == self.pause_at_rung:
            raise _PausedError


def _config(rungs=RUNGS) -> TrialConfig:
    optim = OptimConfig(lr=3e-3, schedule="wsd", cooldown_fraction=0.2, min_lr_factor=0.01)
    return TrialConfig(model="fcn", model_config={"hidden": 16, "num_rbf": 8}, epochs=1000, batch_size=BATCH, seed=3,
                       data=DataConfig(max_val=6), optim=optim, rung_flops=list(rungs), max_flops=float(rungs[-1]))


def _stable(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in (M.WALL_S, M.CHECKPOINT)} for r in rows]


@pytest.fixture(scope="module")
def straight(tiny_splits, tmp_path_factory):
    """The uninterrupted trial: its reports and its final checkpoint."""
    torch.set_num_threads(1)
    run_dir = tmp_path_factory.mktemp("straight") / "run"
    rep = Reporter()
    run_trial(_config(), run_dir, reporter=rep, splits=tiny_splits)
    return rep.rows, load_checkpoint(run_dir / "checkpoint.pt")


def test_rungs_fall_inside_epochs(straight):
    rows, _ = straight
    assert [r[M.RUNG] for r in rows[1:]] == [0.0, 1.0, 2.0]
    assert rows[1][M.STEP] == rows[2][M.STEP]  # one step passed two rungs
    assert all(r[M.STEP] % STEPS_PER_EPOCH for r in rows[1:])  # every rung inside an epoch


@pytest.mark.parametrize("pause_at", [0.0, 1.0])  # 0: the rung passed by the same step is still to score
def test_a_trial_paused_at_a_rung_resumes_mid_epoch_exactly(straight, tiny_splits, tmp_path, monkeypatch, pause_at):
    rows, final_ck = straight
    run_dir = tmp_path / "paused"
    paused = Reporter(pause_at_rung=pause_at)
    with pytest.raises(_PausedError):
        run_trial(_config(), run_dir, reporter=paused, splits=tiny_splits)
    ck = load_checkpoint(run_dir / "checkpoint.pt")  # weights_only=True: the rung's checkpoint, written first
    position = ck["epoch_position"]
    assert ck["metrics_history"][-1][M.RUNG] == pause_at and not ck["finished"]
    assert ck["epoch"] == 2 and 0 < position["batches_done"] < STEPS_PER_EPOCH
    assert ck["structures_seen"] == BATCH * ck["step"]  # the main run's, without the branch's

    streams: list[int] = []  # batches each batch_stream is asked for: the resumed epoch's skip the done ones

    def spy(dataset, index_lists, *args):
        streams.append(len(index_lists))
        return batch_stream(dataset, index_lists, *args)

    batch_stream = loop_mod.batch_stream
    monkeypatch.setattr(loop_mod, "batch_stream", spy)
    resumed = Reporter()
    run_trial(_config(), run_dir, reporter=resumed, splits=tiny_splits)

    assert resumed.rows[0][M.REPORT] == paused.rows[-1][M.REPORT] + 1  # no rung reported twice
    assert _stable(paused.rows + resumed.rows) == _stable(rows)
    assert streams[0] == STEPS_PER_EPOCH - position["batches_done"]  # the first train stream: the rest of epoch 2
    end = load_checkpoint(run_dir / "checkpoint.pt")
    assert end["finished"] and end["epoch"] == final_ck["epoch"] and end["step"] == final_ck["step"]
    assert end["flops_cum"] == final_ck["flops_cum"] and end["flops_cooldown"] == final_ck["flops_cooldown"]
    for key, value in final_ck["model_state"].items():
        assert torch.equal(end["model_state"][key], value), key
    for key, value in final_ck["optimizer_state"]["state"].items():
        for name, tensor in value.items():
            assert torch.equal(end["optimizer_state"]["state"][key][name], tensor), (key, name)


def test_epochs_run_counts_the_main_run_and_the_rungs_own_cooldown(straight):
    rows, final_ck = straight
    for r in rows[1:]:
        # every batch holds 4 structures: main run's steps + this branch's, not the earlier branches'
        assert r[M.EPOCHS_RUN] * r[M.TRAIN_SIZE] == pytest.approx(BATCH * (r[M.STEP] + r[M.COOLDOWN_STEPS]))
    assert final_ck["structures_seen"] == BATCH * final_ck["step"]


def test_without_rungs_flops_spent_is_flops_cum(tiny_splits, tmp_path):
    rep = Reporter()
    cfg = TrialConfig(model="fcn", model_config={"hidden": 16, "num_rbf": 8}, epochs=2, batch_size=BATCH, seed=3,
                      data=DataConfig(max_val=6))
    run_trial(cfg, tmp_path / "run", reporter=rep, splits=tiny_splits)
    assert [r[M.FLOPS_SPENT] for r in rep.rows] == [r[M.FLOPS_CUM] for r in rep.rows]
    assert rep.rows[-1][M.FLOPS_CUM] > 0 and rep.rows[-1][M.EPOCHS_RUN] == 2.0


def test_a_lazy_trial_with_workers_resumes_mid_epoch_exactly(tmp_path):
    """DataLoader workers read .aselmdb rows: the resumed epoch's loader is asked for the undone batches only."""
    from engine.data.dataset import load_splits
    from engine.data.lazy import close_environments
    from engine.data.store import write_aselmdb
    from tests.loop.conftest import emt_records

    write_aselmdb(emt_records(40, seed=4), tmp_path / "data" / "part-0.aselmdb")
    cfg = _config([1.6e6, 4.0e6])
    cfg.data = DataConfig(path=str(tmp_path / "data"), val_fraction=0.2, test_fraction=0.1, max_val=None,
                          normalization_size=16, cache_dir=str(tmp_path / "cache"), lazy=True, num_workers=2,
                          prefetch_factor=2)
    try:
        straight_rep = Reporter()
        run_trial(cfg, tmp_path / "straight", reporter=straight_rep, splits=load_splits(cfg.data, progress=False))
        paused = Reporter(pause_at_rung=0.0)
        with pytest.raises(_PausedError):
            run_trial(cfg, tmp_path / "paused", reporter=paused, splits=load_splits(cfg.data, progress=False))
        position = load_checkpoint(tmp_path / "paused" / "checkpoint.pt")["epoch_position"]
        assert position["batches_done"] > 0 and position["structures"] < straight_rep.rows[0][M.TRAIN_SIZE]
        resumed = Reporter()
        run_trial(cfg, tmp_path / "paused", reporter=resumed, splits=load_splits(cfg.data, progress=False))
    finally:
        close_environments()
    assert _stable(paused.rows + resumed.rows) == _stable(straight_rep.rows)
    a = load_checkpoint(tmp_path / "straight" / "checkpoint.pt")
    b = load_checkpoint(tmp_path / "paused" / "checkpoint.pt")
    assert a["step"] == b["step"] and all(torch.equal(v, b["model_state"][k]) for k, v in a["model_state"].items())
