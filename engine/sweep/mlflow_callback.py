"""The Tune callback that logs every trial to its MLflow child run from the driver, and only then marks it done.

Order of a trial's end (so a driver killed at any instant loses and duplicates nothing): the run is
backfilled from the trial's stored ``metrics.jsonl``, its artifacts are logged, the run is closed,
and only then the completion marker is written to the trial's storage folder. A marker therefore
always means a closed run; a closed run without a marker is reconciled by ``--resume``.
"""

from __future__ import annotations

import json
import tempfile
from typing import Any

from ray.tune import Callback

from engine import metrics as M
from engine.sweep.progress import SweepLedger, TrialState, trial_key
from engine.sweep.storage import TrialStorage
from engine.sweep.tracking import report_step
from engine.sweep.trial import DONE_FILE, resolve_spec


def write_marker(storage: TrialStorage, trial_id: str, status: str, flops_spent: float) -> None:
    """The driver's completion marker of a trial (written after its MLflow run is closed), with the FLOPs it cost
    (``flops_spent``: cooldown branches included; see :func:`~engine.sweep.progress.spent_flops`)."""
    text = json.dumps({"status": status, "flops_spent": flops_spent}) + "\n"
    storage.write_text(f"trials/{trial_id}/{DONE_FILE}", text)


def stored_metrics(storage: TrialStorage, trial_id: str) -> list[dict]:
    """The rows of a trial's stored ``metrics.jsonl`` (empty when it has none yet)."""
    text = storage.read_text(f"trials/{trial_id}/metrics.jsonl") or ""
    rows = []
    for line in text.splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue
    return rows


def backfill(tracker: Any, storage: TrialStorage, trial_id: str, before: int = 2**62) -> None:
    """Log epochs the driver never received (an interrupted driver or a lost node dropped them in
    flight; the resumed loop does not report them again) from the trial's stored ``metrics.jsonl``."""
    for row in stored_metrics(storage, trial_id):
        if tracker.last_epoch(trial_id) < report_step(row) < before:
            tracker.log_trial(trial_id, row)


def close_trial(tracker: Any, storage: TrialStorage, trial_id: str, status: str, engine_status: str,
                flops_spent: float, error: str | None = None) -> None:
    """Close a trial's run (artifacts first, from storage) and then, for a finished one, write its marker."""
    if storage.remote:  # the driver sees storage, not the node's scratch folder: bring the files here first
        with tempfile.TemporaryDirectory(prefix="engine-artifacts-") as local:
            storage.pull(trial_id, local, names=("config.json", "metrics.jsonl", "checkpoint.pt"))
            tracker.log_trial_artifacts(trial_id, local)
            tracker.end_trial(trial_id, status, engine_status, error=error, artifacts=False)
    else:
        tracker.log_trial_artifacts(trial_id, storage.trial_dir(trial_id))
        tracker.end_trial(trial_id, status, engine_status, error=error, artifacts=False)
    if status == "FINISHED":
        write_marker(storage, trial_id, engine_status, flops_spent)


class MlflowCallback(Callback):
    """Logs every trial to its MLflow child run from the driver (no trial logged twice)."""

    def __init__(self, tracker: Any, ledger: SweepLedger, storage: TrialStorage) -> None:
        from engine.sweep.tracking import trial_params

        self.tracker = tracker
        self.ledger = ledger
        self.storage = storage
        self._params = trial_params

    def _start(self, trial: Any) -> str:
        spec = resolve_spec(trial.config)
        key = spec["trial_id"]
        self.tracker.start_trial(
            key, self._params(key, spec["config"]), checkpoint_path=self.storage.uri(f"trials/{key}/checkpoint.pt")
        )
        return key

    def _ensure(self, trial: Any) -> str:
        key = trial_key(trial)
        return key if key in self.tracker._children else self._start(trial)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._start(trial)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        key = self._ensure(trial)
        epoch = report_step(result, 0)  # the report index (= epoch for epoch-wise trials)
        if epoch > self.tracker.last_epoch(key) + 1:
            backfill(self.tracker, self.storage, key, before=epoch)
        self.tracker.log_trial(key, result)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        key = self._ensure(trial)
        # a trial interrupted after its last checkpoint resumes with nothing left to train and reports nothing
        backfill(self.tracker, self.storage, key)
        st = self.ledger.states.get(key, TrialState())
        engine_status = st.status if st.status in ("stopped", M.STATUS_DIVERGED) else "completed"
        close_trial(self.tracker, self.storage, key, "FINISHED", engine_status, st.flops_cum)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        key = self._ensure(trial)
        error = None
        error_file = getattr(trial, "error_file", None)
        if error_file:
            try:
                with open(error_file) as fh:
                    error = fh.read()[-2000:]
            except OSError:
                error = None
        close_trial(self.tracker, self.storage, key, "FAILED", "failed", 0.0, error=error)
