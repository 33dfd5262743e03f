"""Warmup-cosine schedule values, atom-balanced sharding, EMA arithmetic."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from engine.config import OptimConfig
from engine.loop.ema import EMA
from engine.loop.sampler import shard_by_atoms
from engine.loop.schedule import WarmupCosine, lr_factor


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
