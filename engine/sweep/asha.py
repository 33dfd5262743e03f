"""ASHA that records which trials it stopped at a rung, so the ledger can tell them from completed ones."""

from __future__ import annotations

import math
from typing import Any

from ray.tune.schedulers import ASHAScheduler, TrialScheduler


class RecordingASHA(ASHAScheduler):
    """ASHA that remembers which trials it stopped at a rung (before their full budget)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.stopped_early: set[str] = set()

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        action = super().on_trial_result(tune_controller, trial, result)
        if action == TrialScheduler.STOP and result.get(self._time_attr, math.inf) < self._max_t:
            self.stopped_early.add(trial.trial_id)
        return action
