"""The frontier policy (engine.sweep.frontier_policy) as a Ray Tune ``TrialScheduler``: a thin adapter.

Each compute-axis trial reports only at FLOP rungs (annealed, engine.loop.cooldown), after saving its
checkpoint. On each report the adapter hands the rung's loss to the policy and answers:

- CONTINUE when the rung is decided and the trial is kept (or it was the trial's last rung);
- STOP when the policy stopped the trial;
- PAUSE while other live trials have not reported that rung yet (the barrier). Tune saves nothing of a
  function trainable worth keeping, so a paused trial restarts later from the checkpoint it wrote at the rung.

When a rung is decided, trials paused at it are stopped or become runnable again. ``choose_trial_to_run``
starts the runnable trial at the lowest rung first (then by size and id) and holds any trial whose last rung
is undecided, so the decisions and the FLOPs spent depend on the rung table only, not on the order in which
trials start or finish. Concurrency is enforced here (``max_running``) rather than by Tune's
``max_concurrent_trials``, whose limiter counts paused trials as live and would never start the trials a
barrier waits for.

The policy's state is written to ``state_path`` (JSON) after every change; a resumed sweep loads it and
merges the rung reports its trials stored (:func:`load_policy`), so ``--resume`` continues with the same
decisions.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from ray.tune.experiment import Trial
from ray.tune.schedulers import TrialScheduler

from engine import metrics as M
from engine.sweep.frontier_policy import Arm, FrontierPolicy, PolicyConfig
from engine.sweep.trial import resolve_spec

STATE_FILE = "frontier_policy.json"


def _key(trial: Any) -> str:
    return resolve_spec(trial.config)["trial_id"]


def size_key(config: dict) -> str:
    """Trials of one size differ only by seed: the preset (or model config) and the training-set size."""
    preset = config.get("preset") or json.dumps(config.get("model_config") or {}, sort_keys=True)
    return f"{config.get('model')}-{preset}-n{(config.get('data') or {}).get('train_size') or 'all'}"


def count_parameters(config: dict) -> int:
    """Trainable parameters of a trial's model, built in the driver (no data, no training)."""
    import models

    model = models.build(config["model"], config.get("model_config") or None, preset=config.get("preset"))
    return int(model.num_parameters())


def arms_for(configs: dict[str, dict]) -> list[Arm]:
    """One arm per trial (trial id → resolved TrialConfig dict), its size ordered by parameter count."""
    counts: dict[str, int] = {}
    arms = []
    for trial_id, config in configs.items():
        size = size_key(config)
        if size not in counts:
            counts[size] = count_parameters(config)
        arms.append(Arm(trial_id, size, float(counts[size]), int(config.get("seed", 0))))
    return arms


def load_policy(state_path: Path, arms: list[Arm], config: PolicyConfig,
                stored: dict[str, list[dict]]) -> FrontierPolicy:
    """The policy of a sweep: its saved state when there is one, plus every rung report its trials stored
    (``stored``: trial id → metrics rows), decided again rung by rung. Decisions are a function of the rung
    table, so rebuilding gives the ones an uninterrupted sweep made."""
    if state_path.is_file():
        policy = FrontierPolicy.from_dict(json.loads(state_path.read_text()))
        known = {a.trial_id for a in policy.arms}
        missing = [a for a in arms if a.trial_id not in known]
        if missing:
            raise ValueError(f"{state_path} does not know trial(s) {', '.join(a.trial_id for a in missing[:3])}")
    else:
        policy = FrontierPolicy(arms, config)
    rows = {t: sorted((r for r in rs if _is_rung(r)), key=lambda r: int(r[M.RUNG])) for t, rs in stored.items()}
    for rung in range(policy.n_rungs):
        for trial_id, rs in rows.items():
            for r in rs:
                if int(r[M.RUNG]) == rung and trial_id in policy.losses and policy.status(trial_id) == "running":
                    policy.report(trial_id, rung, float(r.get(M.VAL_LOSS, math.nan)))
        policy.advance()
    return policy


def _is_rung(row: dict) -> bool:
    v = row.get(M.RUNG)
    return isinstance(v, (int, float)) and not (isinstance(v, float) and math.isnan(v))


class FrontierScheduler(TrialScheduler):
    """Rung barrier + the frontier policy (module docstring)."""

    def __init__(self, policy: FrontierPolicy, state_path: Path | None = None, max_running: int | None = None,
                 metric: str = M.VAL_LOSS) -> None:
        super().__init__()
        self.policy = policy
        self.state_path = state_path
        self.max_running = max_running
        self._metric = metric
        self.stopped_early: set[str] = set()  # Tune trial ids the policy stopped (the ledger reads it)
        self._save()

    # -- Tune's interface --------------------------------------------------------------------
    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        return True

    def on_trial_add(self, tune_controller: Any, trial: Trial) -> None:
        pass

    def on_trial_result(self, tune_controller: Any, trial: Trial, result: dict) -> str:
        if not _is_rung(result):
            return TrialScheduler.CONTINUE  # the untrained model's report (epoch 0)
        key, rung = _key(trial), int(result[M.RUNG])
        if self.policy.status(key) == "stopped":
            self.stopped_early.add(trial.trial_id)
            return TrialScheduler.STOP
        self.policy.report(key, rung, float(result.get(self._metric, math.nan)))
        made = self.policy.advance()
        self._save()
        self._apply(tune_controller, made, current=trial)
        go = self.policy.may_continue(key, rung)
        if go is None:
            return TrialScheduler.PAUSE
        if not go:
            self.stopped_early.add(trial.trial_id)
            return TrialScheduler.STOP
        return TrialScheduler.CONTINUE

    def on_trial_complete(self, tune_controller: Any, trial: Trial, result: dict) -> None:
        self._ended(tune_controller, trial)

    def on_trial_error(self, tune_controller: Any, trial: Trial) -> None:
        self._ended(tune_controller, trial)

    def on_trial_remove(self, tune_controller: Any, trial: Trial) -> None:
        self._ended(tune_controller, trial)

    def choose_trial_to_run(self, tune_controller: Any) -> Trial | None:
        trials = tune_controller.get_trials()
        running = sum(1 for t in trials if t.status == Trial.RUNNING)
        if self.max_running is not None and running >= self.max_running:
            return None
        ready = []
        for t in trials:
            if t.status not in (Trial.PENDING, Trial.PAUSED):
                continue
            key = _key(t)
            if key not in self.policy.losses or self.policy.status(key) in ("stopped", "failed"):
                continue
            last = max(self.policy.losses[key], default=-1)
            if last >= 0 and self.policy.may_continue(key, last) is None:
                continue  # waiting at an undecided rung
            order = next(a.order for a in self.policy.arms if a.trial_id == key)
            ready.append((last, order, key, t))
        if not ready:
            return None
        return min(ready, key=lambda x: x[:3])[3]

    def debug_string(self) -> str:
        return (f"Frontier policy: rungs decided {self.policy.decided + 1}/{self.policy.n_rungs - 1}, "
                f"{len(self.policy.stops)} trial(s) stopped")

    def save(self, checkpoint_path: str) -> None:
        Path(checkpoint_path).write_text(json.dumps(self.policy.to_dict()))

    def restore(self, checkpoint_path: str) -> None:
        self.policy = FrontierPolicy.from_dict(json.loads(Path(checkpoint_path).read_text()))

    # -- helpers -----------------------------------------------------------------------------
    def _ended(self, tune_controller: Any, trial: Trial) -> None:
        key = _key(trial)
        if key in self.policy.losses and self.policy.status(key) == "running":
            self.policy.fail(key)  # ended before its last rung and not by the policy: an error
            made = self.policy.advance()
            self._save()
            self._apply(tune_controller, made, current=trial)

    def _apply(self, tune_controller: Any, made: list, current: Trial) -> None:
        """Stop the trials the policy just stopped that are paused (or pausing) at a rung."""
        stopped = {d.trial_id for d in made}
        if not stopped:
            return
        for t in tune_controller.get_trials():
            if t is current or _key(t) not in stopped:
                continue
            self.stopped_early.add(t.trial_id)
            pausing = t.status == Trial.RUNNING and getattr(t, "is_saving", False)
            if t.status in (Trial.PAUSED, Trial.PENDING) or pausing:
                tune_controller.stop_trial(t)

    def _save(self) -> None:
        if self.state_path is None:
            return
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.policy.to_dict(), indent=1, sort_keys=True) + "\n")
        os.replace(tmp, self.state_path)
