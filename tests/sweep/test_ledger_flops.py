"""The sweep's FLOP accounting reads what a trial cost (flops_spent), not a rung's coordinate (flops_cum)."""

from __future__ import annotations

import io
import json
from types import SimpleNamespace

import pytest

from engine import metrics as M
from engine.loop.cooldown import planned_flops
from engine.sweep.mlflow_callback import write_marker
from engine.sweep.progress import SweepLedger, TrialState, spent_flops
from engine.sweep.storage import TrialStorage
from engine.sweep.trial import DONE_FILE


def _trial(trial_id: str, config: dict | None = None) -> SimpleNamespace:
    return SimpleNamespace(config={"trial": {"trial_id": trial_id, "config": config or {}}}, trial_id=trial_id)


def test_spent_flops_falls_back_to_flops_cum():
    assert spent_flops({M.FLOPS_CUM: 5.0, M.FLOPS_SPENT: 8.0}) == 8.0
    assert spent_flops({M.FLOPS_CUM: 5.0}) == 5.0  # rows written before flops_spent existed
    assert spent_flops({}, 3.0) == 3.0


def test_the_ledger_counts_every_cooldown_branch():
    ledger = SweepLedger("s", {"t": TrialState(status="running")}, stream=io.StringIO())
    rung = {M.EPOCH: 2, M.RUNG: 1.0, M.FLOPS_CUM: 4.0e6, M.FLOPS_SPENT: 5.5e6}  # two branches, the first discarded
    ledger.on_trial_result(0, [], _trial("t"), rung)
    assert ledger.states["t"].flops_cum == 5.5e6 and ledger.flops_used() == 5.5e6
    ledger.on_trial_result(0, [], _trial("t"), {M.EPOCH: 3, M.FLOPS_CUM: 6.0e6})  # an old row: flops_cum
    assert ledger.flops_used() == 6.0e6


def test_the_completion_marker_carries_the_flops_spent(tmp_path):
    storage = TrialStorage(str(tmp_path))
    write_marker(storage, "t", "completed", 5.5e6)
    marker = json.loads((tmp_path / "trials" / "t" / DONE_FILE).read_text())
    assert marker == {"status": "completed", "flops_spent": 5.5e6}


def test_the_full_trial_estimate_takes_the_cooldown_floor_from_a_rung():
    config = {"rung_flops": [1.0e6, 3.0e6], "max_flops": 3.0e6,
              "optim": {"cooldown_fraction": 0.2, "cooldown_min_steps": 10}}
    state = TrialState(status="running", planned_flops=planned_flops(config))
    ledger = SweepLedger("s", {"t": state}, stream=io.StringIO())
    assert state.full_flops() == pytest.approx(3.0e6 + 0.2 * 4.0e6)  # before any rung: the fraction only
    # rung 0 after 5 steps of 2e5 FLOPs: each cooldown is 10 steps, capped by the steps so far (5, then 15)
    row = {M.EPOCH: 1, M.STEP: 5, M.RUNG: 0.0, M.COOLDOWN_FLOPS: 1.0e6, M.FLOPS_CUM: 2.0e6, M.FLOPS_SPENT: 2.0e6}
    ledger.on_trial_result(0, [], _trial("t", config), row)
    assert state.full_flops() == pytest.approx(3.0e6 + 1.0e6 + 10 * 2.0e5)
