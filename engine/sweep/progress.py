"""The sweep's progress ledger: what the driver knows of each trial, and the live progress line.

A Tune callback in the Ray driver (Tune calls it on every result), so nothing here touches the
workers. The trial identity is our deterministic ``trial_id`` taken from the trial's config, not
Tune's random one. Neighbours: ``asha`` (which trials a rung stopped), ``mlflow_callback`` (the
MLflow runs and the completion markers).
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from typing import Any, TextIO

from ray.tune import Callback

from engine import metrics as M
from engine.loop.cooldown import main_flops_per_step, planned_flops
from engine.sweep.trial import resolve_spec


def spent_flops(row: dict, default: float = 0.0) -> float:
    """What a trial has cost up to a report: ``flops_spent`` (main run + every cooldown branch), or ``flops_cum``
    in rows written before it existed (equal for trials without rungs); ``default`` when the row has neither."""
    value = row.get(M.FLOPS_SPENT, row.get(M.FLOPS_CUM))
    return default if value is None else float(value)


def trial_key(trial: Any) -> str:
    """Our deterministic trial id of a Tune trial."""
    return resolve_spec(trial.config)["trial_id"]


@dataclass
class TrialState:
    """What the driver knows about one trial."""

    status: str = "pending"  # pending | running | completed | stopped | diverged | failed
    epochs: int = 0  # configured
    max_flops: float | None = None
    flops_cum: float = 0.0  # FLOPs spent so far (spent_flops: cooldown branches included), the sweep's cost
    flops_per_epoch: float | None = None  # from the first full epoch
    # compute axis: budget + rung cooldowns (engine.loop.cooldown), at the FLOPs per step of its latest rung report
    planned_flops: float | None = None
    wall_s: float = 0.0  # seconds inside the training loop
    last: dict = field(default_factory=dict)  # last reported metrics
    attempts: int = 0

    def full_flops(self) -> float | None:
        """FLOPs this trial would spend trained to its end: all epochs, capped by its FLOP budget."""
        if self.planned_flops:
            return self.planned_flops
        if not self.flops_per_epoch:
            return None
        full = self.epochs * self.flops_per_epoch
        return min(full, self.max_flops) if self.max_flops else full


class SweepLedger(Callback):
    """Live progress (trials done/running/stopped, best val_loss, FLOPs used) and per-trial state."""

    def __init__(
        self,
        sweep: str,
        states: dict[str, TrialState],
        scheduler: Any = None,  # the scheduler that stops trials early (FrontierScheduler or RecordingASHA), if any
        interval_s: float = 10.0,
        stream: TextIO | None = None,
    ) -> None:
        self.sweep = sweep
        self.states = states
        self.scheduler = scheduler
        self.interval_s = interval_s
        self.stream = stream
        self.best: tuple[float, str] | None = None
        self._last_print = 0.0
        self.started = time.time()

    def __getstate__(self) -> dict:
        # Tune pickles its callbacks with the experiment state; an open stream does not pickle
        return {**self.__dict__, "stream": None}

    # -- Tune hooks --------------------------------------------------------------------
    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        spec = resolve_spec(trial.config)
        st = self.states.setdefault(spec["trial_id"], TrialState())
        st.status = "running"
        st.attempts += 1
        st.epochs = int(spec["config"].get("epochs", 0))
        st.max_flops = spec["config"].get("max_flops")
        st.planned_flops = planned_flops(spec["config"])
        self.print_line(force=True)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        spec = resolve_spec(trial.config)
        st = self.states.setdefault(spec["trial_id"], TrialState(status="running"))
        flops = spent_flops(result, st.flops_cum)
        per_step = main_flops_per_step(result)
        if per_step is not None:  # a rung: its cooldowns' length (the cooldown_min_steps floor) is known now
            st.planned_flops = planned_flops(spec["config"], per_step)
        epoch = int(result.get(M.EPOCH, 0))
        if epoch >= 1 and st.flops_per_epoch is None and epoch == 1:
            st.flops_per_epoch = flops
        st.flops_cum = max(st.flops_cum, flops)
        st.wall_s = float(result.get(M.WALL_S, st.wall_s))
        st.last = {k: v for k, v in result.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        val = result.get(M.VAL_LOSS)
        finite = isinstance(val, (int, float)) and math.isfinite(val)
        if epoch >= 1 and finite and (self.best is None or val < self.best[0]):
            self.best = (float(val), spec["trial_id"])
        self.print_line()

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        key = trial_key(trial)
        st = self.states.setdefault(key, TrialState())
        stopped = self.scheduler is not None and trial.trial_id in self.scheduler.stopped_early
        st.status = "stopped" if stopped else "completed"  # the marker follows once MLflow has the run closed
        if M.DIVERGED_EPOCH in st.last:  # the loop stopped on a NaN/inf loss: excluded from every fit
            st.status = M.STATUS_DIVERGED
        self.print_line(force=True)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.states.setdefault(trial_key(trial), TrialState()).status = "failed"
        self.print_line(force=True)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self.print_line(force=True)

    # -- summaries ---------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        out = {k: 0 for k in ("pending", "running", "completed", "stopped", "failed")}
        for st in self.states.values():
            out[st.status] = out.get(st.status, 0) + 1
        return out

    def flops_used(self) -> float:
        return sum(st.flops_cum for st in self.states.values())

    def print_line(self, force: bool = False) -> None:
        now = time.time()
        if not force and now - self._last_print < self.interval_s:
            return
        self._last_print = now
        c = self.counts()
        best = f"{self.best[0]:.4g} ({self.best[1]})" if self.best else "-"
        print(
            f"[{self.sweep} {now - self.started:6.0f}s] done {c['completed']}/{len(self.states)}  "
            f"running {c['running']}  stopped {c['stopped']}  failed {c['failed']}  |  "
            f"best val_loss {best}  |  FLOPs used {self.flops_used():.3e}",
            file=self.stream or sys.stdout,
            flush=True,
        )
