"""A compute sweep under the frontier policy, interrupted (Ctrl-C) and resumed, makes the cuts of an
uninterrupted one: the policy's state is in the sweep folder and is rebuilt with every rung the trials stored.

No timing: the interrupt follows the engine's own state (the policy has decided rung 0 and some trial has
reported rung 1), delivered as the SIGINT a user's Ctrl-C sends.
"""

from __future__ import annotations

import json
import os
import signal

import pytest
from ray import tune

from engine.sweep.frontier_policy import FrontierPolicy
from engine.sweep.runner import SweepOptions, run_sweep
from engine.sweep.spaces import space_from_dict
from tests.sweep.conftest import TINY_FIXED

pytestmark = pytest.mark.slow
BUDGETS = [2.5e8, 5e8, 1e9, 2e9]


def _space():
    fixed = json.loads(json.dumps(TINY_FIXED))
    fixed["epochs"] = 40
    return space_from_dict({
        "axis": "compute", "model": "transformer", "sizes": ["p0", "p1", "p2"], "train_sizes": [40],
        "seeds": [0], "flop_budgets": BUDGETS, "fixed": fixed,
        # a margin of zero at one rung: a larger size ahead once stops a smaller one, so this tiny ladder has cuts
        "frontier": {"margin_default": 0.0, "consecutive": 1},
        "resources": {"workers": 1, "cpus_per_worker": 1, "gpus_per_worker": 0, "max_concurrent": 2},
    }, source="tiny")


class InterruptAfterRungOne(tune.Callback):
    """Ctrl-C once the policy has decided rung 0 and a trial has reported rung 1."""

    def __init__(self, state) -> None:
        self.state = state
        self.sent = False

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        if self.sent or result.get("rung") != 1.0 or not self.state.exists():
            return
        if json.loads(self.state.read_text())["decided"] >= 0:
            self.sent = True
            os.kill(os.getpid(), signal.SIGINT)


def _policy(sweeps, name) -> FrontierPolicy:
    return FrontierPolicy.from_dict(json.loads((sweeps / name / "frontier_policy.json").read_text()))


def test_an_interrupted_and_an_uninterrupted_sweep_make_the_same_cuts(ray_session, engine_env):
    whole = run_sweep(_space(), SweepOptions(name="whole", report=False, register=False))
    assert not whole.interrupted
    reference = _policy(engine_env["sweeps"], "whole")
    assert reference.stops  # the comparison means something

    first = run_sweep(_space(), SweepOptions(name="cut", report=False, register=False,
                                             callbacks=[InterruptAfterRungOne(engine_env["sweeps"] / "cut" /
                                                                              "frontier_policy.json")]))
    assert first.interrupted
    resumed = run_sweep(_space(), SweepOptions(name="cut", resume=True, report=False, register=False))
    assert not resumed.interrupted
    again = _policy(engine_env["sweeps"], "cut")
    assert again.stopped_at() == reference.stopped_at()
    assert again.losses == reference.losses  # the same rungs reported, with the same annealed losses
    statuses = {k: t["status"] for k, t in whole.trials.items()}
    assert {k: t["status"] for k, t in resumed.trials.items()} == statuses
    assert resumed.flops_used == pytest.approx(whole.flops_used, rel=1e-9)
