"""Schedule values (warmup–cosine, warmup–stable–decay), atom-balanced sharding, EMA arithmetic."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from engine.config import OptimConfig
from engine.loop.ema import EMA
from engine.loop.sampler import shard_by_atoms
from engine.loop.schedule import LRSchedule, WarmupCosine, cooldown_factor, lr_factor, schedule_factor, trial_progress


def test_schedule_warmup_peak_and_floor():
    w, wf, floor = 0.01, 0.2, 0.01
    assert lr_factor(0.0, w, wf, floor) == pytest.approx(0.2)
    assert lr_factor(0.005, w, wf, floor) == pytest.approx(0.6)
    assert lr_factor(0.01, w, wf, floor) == pytest.approx(1.0)
    mid = 0.01 + 0.99 / 2
    assert lr_factor(mid, w, wf, floor) == pytest.approx(floor + (1 - floor) * 0.5)
    assert lr_factor(1.0, w, wf, floor) == pytest.approx(floor)
    values = [lr_factor(p, w, wf, floor) for p in np.linspace(0.01, 1.0, 50)]
    assert all(a >= b for a, b in itertools.pairwise(values))


def test_scheduler_sets_every_group_and_restores_from_state():
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = WarmupCosine(opt, OptimConfig(lr=2e-3))
    lr = sched.set_progress(0.3)
    assert opt.param_groups[0]["lr"] == pytest.approx(lr) and lr < 2e-3
    other = WarmupCosine(torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0), OptimConfig(lr=2e-3))
    other.load_state_dict(sched.state_dict())
    assert other.lr == pytest.approx(lr)



@pytest.mark.parametrize("shape", ["linear", "sqrt"])
def test_wsd_warms_up_holds_the_peak_then_cools_down_to_the_floor(shape):
    cfg = OptimConfig(schedule="wsd", warmup_fraction=0.01, warmup_factor=0.2, min_lr_factor=0.01,
                      cooldown_fraction=0.2, cooldown_shape=shape)
    assert schedule_factor(0.0, cfg) == pytest.approx(0.2)
    assert schedule_factor(0.005, cfg) == pytest.approx(0.6)
    assert all(schedule_factor(p, cfg) == 1.0 for p in np.linspace(0.01, 0.8, 40))  # stable phase
    assert schedule_factor(1.0, cfg) == pytest.approx(0.01)  # ends on min_lr_factor × peak
    assert schedule_factor(1.0, cfg) <= 1.5 * cfg.min_lr_factor
    tail = [schedule_factor(p, cfg) for p in np.linspace(0.8, 1.0, 50)]
    assert all(a >= b for a, b in itertools.pairwise(tail)) and tail[0] == 1.0
    t = 0.25  # a quarter into the cooldown
    expected = 1 - 0.99 * t if shape == "linear" else 0.01 + 0.99 * (1 - math.sqrt(t))
    assert schedule_factor(0.8 + 0.2 * t, cfg) == pytest.approx(expected)
    # hold: the compute axis's main run stays at the peak; its cooldowns are branches
    assert schedule_factor(0.99, cfg, hold=True) == 1.0


def test_cooldown_ramp_and_sqrt_below_linear():
    assert cooldown_factor(0.0, 0.01, "sqrt", start=0.7) == pytest.approx(0.7)
    assert cooldown_factor(1.0, 0.01, "sqrt", start=0.7) == pytest.approx(0.01)
    assert cooldown_factor(1.0, 0.01, "linear") == pytest.approx(0.01)
    # 1 − √t drops faster early (Hägele et al. 2024): below the linear ramp inside the cooldown
    assert all(cooldown_factor(t, 0.01, "sqrt") < cooldown_factor(t, 0.01, "linear") for t in (0.1, 0.5, 0.9))
    with pytest.raises(ValueError, match="cooldown shape"):
        cooldown_factor(0.5, 0.01, "cosine")


def test_progress_follows_the_flop_budget_not_the_epoch_cap():
    assert trial_progress(0.001, 5e8, 1e9) == pytest.approx(0.5)  # epochs: 1000 is only a cap
    assert trial_progress(0.3, 0.0, None) == pytest.approx(0.3)  # no FLOP budget: epochs drive it
    assert trial_progress(1.0, 2e8, 1e9) == pytest.approx(1.0)  # the epoch cap first: still ends annealed
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = LRSchedule(opt, OptimConfig(lr=1e-3, schedule="wsd"), hold=True)
    assert sched.set_progress(0.95) == pytest.approx(1e-3) and sched.factor == pytest.approx(1.0)
    assert sched.set_factor(0.5) == pytest.approx(5e-4) and opt.param_groups[0]["lr"] == pytest.approx(5e-4)


def test_shards_are_balanced_complete_and_deterministic():
    rng = np.random.default_rng(0)
    sizes = rng.integers(4, 65, size=37).tolist()
    shards = shard_by_atoms(sizes, 4)
    assert sorted(k for s in shards for k in s) == list(range(37))
    loads = [sum(sizes[k] for k in s) for s in shards]
    assert max(loads) - min(loads) <= max(sizes)  # greedy LPT bound
    assert shards == shard_by_atoms(sizes, 4)
    assert shard_by_atoms([5, 3], 3)[2] == []  # fewer structures than ranks: an empty shard
    assert shard_by_atoms([64, 4, 4, 4, 4], 2) == [[0], [1, 2, 3, 4]]


def test_ema_is_the_exponential_average_and_swaps_back():
    lin = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        lin.weight.fill_(1.0)
    ema = EMA(lin, decay=0.9)
    with torch.no_grad():
        lin.weight.fill_(2.0)
    ema.update(lin)  # 0.9·1 + 0.1·2
    with ema.swapped(lin):
        assert torch.allclose(lin.weight, torch.full_like(lin.weight, 1.1))
    assert torch.allclose(lin.weight, torch.full_like(lin.weight, 2.0))
    assert math.isclose(float(ema.state_dict()["weight"][0, 0]), 1.1, rel_tol=1e-6)
