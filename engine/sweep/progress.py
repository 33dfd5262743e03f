"""Driver-side bookkeeping of a sweep: live progress line, FLOP ledger, ASHA stop record, MLflow logging.

All three callbacks run in the Ray driver (Tune calls them on every result), so nothing here
touches the workers. The trial identity is our deterministic ``trial_id`` taken from the trial's
config, not Tune's random one.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from ray.tune import Callback
from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from engine import metrics as M
from engine.sweep.trial import DONE_FILE, resolve_spec


def trial_key(trial: Any) -> str:
    """Our deterministic trial id of a Tune trial."""
    return resolve_spec(trial.config)["trial_id"]


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


@dataclass
class TrialState:
    """What the driver knows about one trial."""

    status: str = "pending"  # pending | running | completed | stopped | failed
    epochs: int = 0  # configured
    max_flops: float | None = None
    flops_cum: float = 0.0
    flops_per_epoch: float | None = None  # from the first full epoch
    wall_s: float = 0.0  # seconds inside the training loop
    last: dict = field(default_factory=dict)  # last reported metrics
    attempts: int = 0

    def full_flops(self) -> float | None:
        """FLOPs this trial would spend trained to its end: all epochs, capped by its FLOP budget."""
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
        scheduler: RecordingASHA | None = None,
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
        self.print_line(force=True)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        st = self.states.setdefault(trial_key(trial), TrialState(status="running"))
        flops = float(result.get(M.FLOPS_CUM, st.flops_cum))
        epoch = int(result.get(M.EPOCH, 0))
        if epoch >= 1 and st.flops_per_epoch is None and epoch == 1:
            st.flops_per_epoch = flops
        st.flops_cum = max(st.flops_cum, flops)
        st.wall_s = float(result.get(M.WALL_S, st.wall_s))
        st.last = {k: v for k, v in result.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        val = result.get(M.VAL_LOSS)
        finite = isinstance(val, (int, float)) and math.isfinite(val)
        if epoch >= 1 and finite and (self.best is None or val < self.best[0]):
            self.best = (float(val), trial_key(trial))
        self.print_line()

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        key = trial_key(trial)
        st = self.states.setdefault(key, TrialState())
        stopped = self.scheduler is not None and trial.trial_id in self.scheduler.stopped_early
        st.status = "stopped" if stopped else "completed"
        run_dir = Path(resolve_spec(trial.config)["run_dir"])
        if run_dir.is_dir():
            (run_dir / DONE_FILE).write_text(json.dumps({"status": st.status, "flops_cum": st.flops_cum}) + "\n")
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


class MlflowCallback(Callback):
    """Logs every trial to its MLflow child run from the driver (no trial logged twice)."""

    def __init__(self, tracker: Any, ledger: SweepLedger) -> None:
        from engine.sweep.tracking import trial_params

        self.tracker = tracker
        self.ledger = ledger
        self._params = trial_params

    def _ensure(self, trial: Any) -> str:
        spec = resolve_spec(trial.config)
        key = spec["trial_id"]
        if key not in self.tracker._children:
            self.tracker.start_trial(
                key,
                self._params(key, spec["config"]),
                checkpoint_path=str(Path(spec["run_dir"]) / "checkpoint.pt"),
            )
        return key

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        spec = resolve_spec(trial.config)
        key = spec["trial_id"]
        self.tracker.start_trial(
            key, self._params(key, spec["config"]), checkpoint_path=str(Path(spec["run_dir"]) / "checkpoint.pt")
        )

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        key = self._ensure(trial)
        epoch = int(result.get(M.EPOCH, 0))
        if epoch > self.tracker.last_epoch(key) + 1:
            self._backfill(key, Path(resolve_spec(trial.config)["run_dir"]), before=epoch)
        self.tracker.log_trial(key, result)

    def _backfill(self, key: str, run_dir: Path, before: int) -> None:
        """Log epochs the driver never received (an interrupted driver or a killed worker lost them in
        flight; the resumed loop does not report them again) from the loop's own ``metrics.jsonl``."""
        path = run_dir / "metrics.jsonl"
        if not path.exists():
            return
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if self.tracker.last_epoch(key) < int(row.get(M.EPOCH, -1)) < before:
                self.tracker.log_trial(key, row)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        key = self._ensure(trial)
        # a trial interrupted after its last checkpoint resumes with nothing left to train and reports nothing
        self._backfill(key, Path(resolve_spec(trial.config)["run_dir"]), before=2**62)
        status = self.ledger.states.get(key, TrialState()).status
        self.tracker.end_trial(key, "FINISHED", "stopped" if status == "stopped" else "completed")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        key = self._ensure(trial)
        error = None
        if getattr(trial, "error_file", None) and Path(trial.error_file).exists():
            error = Path(trial.error_file).read_text()[-2000:]
        self.tracker.end_trial(key, "FAILED", "failed", error=error)
