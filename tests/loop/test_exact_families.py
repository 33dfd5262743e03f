"""Exact resume and exact cooldown branches for every family (EquiformerV2's edge-roll generator included).

Two promises of the loop, per family: a discarded cooldown branch leaves the main run bit for bit the same
(engine.loop.cooldown), and a trial stopped at a rung (mid-epoch) or at an epoch's end and resumed from its
checkpoint ends bit for bit like an uninterrupted one (engine.loop.loop). Tiny models, 24 structures.
"""

from __future__ import annotations

import pytest
import torch

from engine import metrics as M
from engine.config import DataConfig, OptimConfig, TrialConfig
from engine.loop.checkpoint import load_checkpoint
from engine.loop.loop import run_trial

FAMILIES = {  # (preset, model_config): each a few seconds here
    "fcn": (None, {"hidden": 16, "num_rbf": 8}),
    "transformer": (None, {"d_model": 16, "depth": 1, "heads": 2}),
    "schnet": ("s0", {}),
    "equiformer_v2": ("e0", {}),  # edge_roll: random (the default): a generator of the model's own
    "mace": ("m0", {}),  # owns no generator
}
BATCH, STEPS_PER_EPOCH = 4, 6  # 24 training structures


class _StopError(Exception):
    """Raised by the reporter right after a chosen report: a pause, a preemption."""


class Reporter:
    def __init__(self, stop=None) -> None:
        self.rows: list[dict] = []
        self.stop = stop

    def report(self, metrics, checkpoint_dir=None):
        self.rows.append(dict(metrics))
        if self.stop is not None and self.stop(metrics):
            raise _StopError


def _config(family: str, **kw) -> TrialConfig:
    preset, mc = FAMILIES[family]
    base = dict(model=family, preset=preset, model_config=dict(mc), epochs=3, batch_size=BATCH, seed=3,
                data=DataConfig(max_val=6), optim=OptimConfig(lr=3e-3, schedule="wsd", min_lr_factor=0.01))
    base.update(kw)
    return TrialConfig(**base)


def _rung_config(family: str, per_step: float, rungs=(3.5, 9.5, 16.5)) -> TrialConfig:
    """Rungs at about steps 4, 10 and 17 (inside epochs 1, 2 and 3) of the family's measured step FLOPs."""
    budgets = [r * per_step for r in rungs]
    return _config(family, epochs=1000, rung_flops=budgets, max_flops=budgets[-1])


def _stable(rows: list[dict]) -> list[dict]:
    volatile = {M.WALL_S, M.CHECKPOINT, M.THROUGHPUT_STRUCT_S, M.THROUGHPUT_ATOMS_S}
    return [{k: v for k, v in r.items() if k not in volatile} for r in rows]


def _assert_same_state(a: dict, b: dict) -> None:
    assert a["step"] == b["step"] and a["flops_cum"] == b["flops_cum"]
    for key, value in a["model_state"].items():
        assert torch.equal(value, b["model_state"][key]), key
    for key, value in a["optimizer_state"]["state"].items():
        for name, tensor in value.items():
            assert torch.equal(tensor, b["optimizer_state"]["state"][key][name]), (key, name)
    assert a["model_rng"].keys() == b["model_rng"].keys()
    for key, value in a["model_rng"].items():
        assert torch.equal(value, b["model_rng"][key]), key


@pytest.fixture(scope="module")
def step_flops(tiny_splits, tmp_path_factory):
    """Mean FLOPs of one optimizer step of each family (one 1-step trial each, cached per module)."""
    cache: dict[str, float] = {}

    def get(family: str) -> float:
        if family not in cache:
            run_dir = tmp_path_factory.mktemp(f"flops-{family}")
            final = run_trial(_config(family, max_flops=1.0), run_dir, splits=tiny_splits)
            cache[family] = final[M.FLOPS_CUM] / final[M.STEP]
        return cache[family]

    return get


@pytest.mark.parametrize("family", list(FAMILIES))
def test_branches_leave_the_main_run_unchanged(family, tiny_splits, step_flops, tmp_path):
    """Two discarded branches (each trains and evaluates) then the last rung, against the last rung alone."""
    branched_cfg = _rung_config(family, step_flops(family))
    plain_cfg = _rung_config(family, step_flops(family))
    plain_cfg.rung_flops = plain_cfg.rung_flops[-1:]
    branched, plain = Reporter(), Reporter()
    run_trial(branched_cfg, tmp_path / "branched", reporter=branched, splits=tiny_splits)
    run_trial(plain_cfg, tmp_path / "plain", reporter=plain, splits=tiny_splits)
    assert [r[M.RUNG] for r in branched.rows[1:]] == [0.0, 1.0, 2.0]
    same = (M.STEP, M.EPOCH, M.FLOPS_CUM, M.VAL_LOSS, M.VAL_LOSS_UNANNEALED, M.split_key("train", M.LOSS))
    assert {k: branched.rows[-1][k] for k in same} == {k: plain.rows[-1][k] for k in same}
    _assert_same_state(load_checkpoint(tmp_path / "branched" / "checkpoint.pt"),
                       load_checkpoint(tmp_path / "plain" / "checkpoint.pt"))


@pytest.mark.parametrize("family", list(FAMILIES))
def test_a_trial_stopped_at_a_rung_or_an_epoch_end_resumes_exactly(family, tiny_splits, step_flops, tmp_path):
    cfg = _rung_config(family, step_flops(family))
    straight = Reporter()
    run_trial(cfg, tmp_path / "straight", reporter=straight, splits=tiny_splits)
    final = load_checkpoint(tmp_path / "straight" / "checkpoint.pt")
    if family == "equiformer_v2":
        assert final["model_rng"]  # the edge-roll generator is in the checkpoint

    # at a rung, mid-epoch (a scheduler's pause; the rung's checkpoint is written before its report)
    paused = Reporter(stop=lambda row: row.get(M.RUNG) == 1.0)
    with pytest.raises(_StopError):
        run_trial(cfg, tmp_path / "paused", reporter=paused, splits=tiny_splits)
    position = load_checkpoint(tmp_path / "paused" / "checkpoint.pt")["epoch_position"]
    assert position is not None and 0 < position["batches_done"] < STEPS_PER_EPOCH
    resumed = Reporter()
    run_trial(cfg, tmp_path / "paused", reporter=resumed, splits=tiny_splits)
    assert _stable(paused.rows + resumed.rows) == _stable(straight.rows)
    _assert_same_state(load_checkpoint(tmp_path / "paused" / "checkpoint.pt"), final)

    # at an epoch's end, without rungs (every epoch reports: validation runs between the training epochs)
    plain_cfg = _config(family)
    plain = Reporter()
    run_trial(plain_cfg, tmp_path / "plain", reporter=plain, splits=tiny_splits)
    crashed = Reporter(stop=lambda row: row[M.EPOCH] == 1)
    with pytest.raises(_StopError):
        run_trial(plain_cfg, tmp_path / "crashed", reporter=crashed, splits=tiny_splits)
    again = Reporter()
    run_trial(plain_cfg, tmp_path / "crashed", reporter=again, splits=tiny_splits)
    assert _stable(crashed.rows + again.rows) == _stable(plain.rows)
    _assert_same_state(load_checkpoint(tmp_path / "crashed" / "checkpoint.pt"),
                       load_checkpoint(tmp_path / "plain" / "checkpoint.pt"))
