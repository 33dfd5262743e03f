"""Annealed scores at FLOP rungs: the compute axis compares models only after a cooldown.

A compute-axis trial (``config.rung_flops``: its FLOP budgets) trains with warmup–stable–decay whose
main run holds the peak LR. When its main-run FLOPs reach a rung, a *cooldown branch* is taken:
the state (weights, AdamW moments, schedule, grad scaler, EMA, every RNG including the model's own
generators, the FLOP accountant) is copied, the branch trains :func:`cooldown_steps` more steps with
the LR ramped down to ``min_lr_factor · peak`` (linear or 1 − √t), the annealed model is scored, and
the copy is put back, so the main run continues bit for bit as if no branch had run. A cooldown of
10–20 % of the steps matches a cosine schedule fitted to that length (Hägele et al. 2024, arXiv 2405.18392).
At the last rung the cooldown is not discarded: it is the trial's own end.

Every rung is one report: ``val_*`` / ``train_*`` of the annealed model (what ASHA's rung decision,
the frontier and the IsoFLOP profiles read), the main run's ``val_loss_unannealed``, the branch's
steps, FLOPs and final LR. The rung's coordinate ``flops_cum`` is the main run's FLOPs at the branch
plus this branch's own (what the annealed model was trained with) and ``epochs_run`` likewise; the
sweep's cost ``flops_spent`` adds every branch so far. After a discarded branch is put back the main
run is checkpointed and only then reported, so a trial paused or killed at a rung resumes from that
point (mid-epoch) exactly; between rungs it checkpoints at epoch ends without reporting, so every
reported point is annealed.

The trial object is duck-typed (:class:`engine.loop.loop.Trial`); this module does not import the loop, and uses
only the trial's public parts: ``trial.state`` (:class:`~engine.loop.state.TrialState`: weights, optimizer,
schedule, scaler, EMA, counters, reports), ``trial.data`` (the training set), ``trial.step_ctx.flops`` (the FLOP
accountant), and its methods ``evaluate_val``, ``feed``, ``train_batch``, ``finish`` and ``record``. A branch reads
its batches as the main run does (``trial.feed``: packed by :class:`~engine.data.graph.EpochBatches`, read by
DataLoader workers for a lazy dataset).
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from engine import metrics as M
from engine.config import TrialConfig
from engine.data.graph import EpochBatches
from engine.errors import ConfigError
from engine.loop import checkpoint as ckpt_io
from engine.loop.loss import ErrorSums
from engine.loop.schedule import cooldown_factor


def cooldown_steps(steps_so_far: int, fraction: float, min_steps: int = 0) -> int:
    """Steps of a branch taken after ``steps_so_far`` main-run steps.

    ``fraction`` of the steps so far (Hägele et al. 2024, arXiv 2405.18392, cool down over 10–20 % of the
    run), but at least ``min_steps`` (``optim.cooldown_min_steps``, 10 by default): the 1 − √t or linear
    ramp needs several updates to act, and at an early rung a large model has taken only a few steps
    where a small one has taken hundreds, so without a floor one is "annealed" by a single step and the
    other by 60, and the rung compares unlike things. Never more than ``steps_so_far`` (a branch longer
    than the run before it is not a cooldown), and at least one step.
    """
    return max(1, min(int(steps_so_far), max(int(min_steps), round(fraction * steps_so_far))))


def planned_flops(config: TrialConfig | dict, flops_per_step: float | None = None) -> float | None:
    """FLOPs a compute-axis trial spends run to its end: its budget plus one cooldown per rung; None without rungs.

    A cooldown is ``cooldown_fraction`` × the main-run FLOPs at its rung, except where the
    ``cooldown_min_steps`` floor lengthens it: rungs under ``min_steps / fraction`` steps (50 by default).
    The config does not say the FLOPs of a step; given ``flops_per_step`` (measured, e.g. from a trial's
    first rung report: :func:`main_flops_per_step`), each rung's cooldown follows :func:`cooldown_steps`
    at that rate, else the floor is left out (it adds at most ``n_rungs · min_steps`` steps' FLOPs, a few %
    of a trial whose last rung is ≥ 1,000 steps, but most of a trial of a few dozen steps).
    """
    cfg = config if isinstance(config, dict) else config.to_dict()
    rungs = [float(r) for r in cfg.get("rung_flops") or []]
    if not rungs:
        return None
    optim = cfg.get("optim") or {}
    fraction = float(optim.get("cooldown_fraction", 0.2))
    budget = float(cfg.get("max_flops") or rungs[-1])
    if not flops_per_step or flops_per_step <= 0:
        return budget + fraction * sum(rungs)
    floor = float(optim.get("cooldown_min_steps", 10)) * flops_per_step
    return budget + sum(max(flops_per_step, min(r, max(floor, fraction * r))) for r in rungs)


def main_flops_per_step(row: dict) -> float | None:
    """The main run's mean FLOPs per optimizer step at a rung report (its ``flops_cum`` minus its own cooldown,
    over its steps); None for other reports."""
    steps, cooldown = row.get(M.STEP), row.get(M.COOLDOWN_FLOPS)
    if cooldown is None or not steps or M.FLOPS_CUM not in row:
        return None
    return (float(row[M.FLOPS_CUM]) - float(cooldown)) / float(steps)


@dataclass
class _Snapshot:
    """Everything a branch changes, copied (not referenced) so it can be put back exactly."""

    model: dict
    optimizer: dict
    scheduler: dict
    scaler: dict | None
    ema: dict | None
    rng: dict
    model_rng: dict  # the model's own generators (EquiformerV2's edge rolls): models.base.Potential.rng_state
    numpy_legacy: tuple
    flops: Any

    @classmethod
    def capture(cls, trial: Any) -> _Snapshot:
        s = trial.state
        return cls(
            model={k: v.detach().clone() for k, v in s.model.state_dict().items()},
            optimizer=copy.deepcopy(s.optimizer.state_dict()),
            scheduler=dict(s.scheduler.state_dict()),
            scaler=copy.deepcopy(s.scaler.state_dict()) if s.scaler is not None else None,
            ema=s.ema.state_dict() if s.ema is not None else None,
            rng=ckpt_io.rng_state(),
            model_rng=s.model.rng_state(),
            numpy_legacy=np.random.get_state(),
            flops=trial.step_ctx.flops,
        )

    def restore(self, trial: Any) -> None:
        s = trial.state
        s.model.load_state_dict(self.model)
        s.optimizer.load_state_dict(self.optimizer)
        s.optimizer.zero_grad(set_to_none=True)
        s.scheduler.load_state_dict(self.scheduler)
        if s.scaler is not None and self.scaler is not None:
            s.scaler.load_state_dict(self.scaler)
        if s.ema is not None and self.ema is not None:
            s.ema.load_state_dict(self.ema)
        ckpt_io.set_rng_state(self.rng)
        s.model.set_rng_state(self.model_rng)
        np.random.set_state(self.numpy_legacy)
        trial.step_ctx.flops = self.flops


class RungCooldowns:
    """The compute-axis hook of one trial: a cooldown branch, scored and reported, at every rung."""

    def __init__(self, config: TrialConfig) -> None:
        if config.optim.schedule != "wsd":
            raise ConfigError(
                "rung_flops (compute axis) needs optim.schedule: wsd, whose stable phase a cooldown can branch "
                f"from; got {config.optim.schedule!r}"
            )
        self.config = config
        self.budgets = [float(b) for b in config.rung_flops or []]
        if not self.budgets or any(b <= 0 for b in self.budgets) or self.budgets != sorted(self.budgets):
            raise ConfigError(f"rung_flops must be increasing positive FLOP budgets, got {config.rung_flops}")

    @classmethod
    def for_config(cls, config: TrialConfig) -> RungCooldowns | None:
        return cls(config) if config.rung_flops else None

    # -- hooks the loop calls ----------------------------------------------------------
    def after_step(self, trial: Any) -> None:
        """Score every rung the main run's FLOPs (branches excluded) have reached and that has no report yet: one
        step of a large model can pass several, and a trial resumed from a rung's checkpoint scores the rest."""
        k = self.next_rung(trial)
        while not trial.state.finished and k < len(self.budgets) and self.budgets[k] <= trial.state.flops_cum:
            self.score_rung(trial, k, final=k == len(self.budgets) - 1)
            k += 1

    @staticmethod
    def next_rung(trial: Any) -> int:
        """Index of the first rung not yet reported (the history survives a resume)."""
        return 1 + max((int(row[M.RUNG]) for row in trial.state.history if M.RUNG in row), default=-1)

    def end_of_epochs(self, trial: Any) -> None:
        """Out of epochs before the last budget: end with a cooldown now, so the trial still ends annealed."""
        if not trial.state.finished:  # its rung budget is what the main run reached, below the last one
            self.score_rung(trial, len(self.budgets) - 1, final=True, budget=float(trial.state.flops_cum))

    # -- the branch --------------------------------------------------------------------
    def score_rung(self, trial: Any, rung: int, final: bool, budget: float | None = None) -> dict:
        """Branch, cool down, score; put the main run back unless ``final``; checkpoint, then report."""
        live = trial.evaluate_val()
        optim = self.config.optim
        n_steps = cooldown_steps(trial.state.step, optim.cooldown_fraction, optim.cooldown_min_steps)
        snapshot = None if final else _Snapshot.capture(trial)
        if snapshot is not None:
            trial.step_ctx.flops = copy.deepcopy(snapshot.flops)  # the branch must not advance the main accountant
        sums, flops, structures, lr_end = self._train_cooldown(trial, n_steps)
        trial.state.flops_cooldown += flops
        metrics = trial.evaluator.metrics(ErrorSums.from_vector(sums), "train")
        metrics.update(trial.evaluate_val())
        metrics.update({
            M.VAL_LOSS_UNANNEALED: live[M.VAL_LOSS],
            M.RUNG: float(rung),
            M.RUNG_FLOPS: float(self.budgets[rung] if budget is None else budget),
            M.COOLDOWN_STEPS: float(n_steps),
            M.COOLDOWN_FLOPS: float(flops),
            M.LR_COOLDOWN_END: lr_end,
        })
        if final:
            metrics = trial.finish(metrics)  # test metrics: the trial ends here
        if snapshot is not None:
            snapshot.restore(trial)
        # the main run (or, at the last rung, the trial's end) is checkpointed before the report, so a trial paused
        # at this rung resumes from here; the coordinate is the main run plus this branch (trial.record)
        return trial.record(metrics, save=True, cooldown_flops=flops, cooldown_structures=structures)

    def _train_cooldown(self, trial: Any, n_steps: int) -> tuple[torch.Tensor, int, int, float]:
        """``n_steps`` optimizer steps with the LR ramped from its current value down to the floor.

        Batches come from a generator of their own, seeded by (seed, main-run step), so the main run's shuffle
        is untouched and a branch depends only on where it was taken.
        Returns the summed train error vector, the branch's FLOPs (all ranks), structures and last LR.
        """
        optim = self.config.optim
        scheduler = trial.state.scheduler
        start = scheduler.factor
        rng = np.random.default_rng([int(self.config.seed), int(trial.state.step)])
        total: torch.Tensor | None = None
        flops = structures = 0
        lr = scheduler.lr
        done = 0
        while done < n_steps:
            sizes = trial.data.train_sizes
            batches = EpochBatches(sizes, self.config.batch_size, self.config.max_atoms_per_batch,
                                   rng.permutation(len(trial.data.train_set)))
            # the main run's data path (DataLoader workers for a lazy dataset), asked for the branch's batches only
            with contextlib.closing(trial.feed(batches[: n_steps - done])) as feed:
                for idx, batch in feed:
                    done += 1
                    lr = scheduler.set_factor(cooldown_factor(done / n_steps, optim.min_lr_factor,
                                                                    optim.cooldown_shape, start))
                    step_sums, step_flops = trial.train_batch(idx, batch)
                    total = step_sums if total is None else total + step_sums
                    flops += step_flops
                    structures += len(idx)
        assert total is not None
        return total, flops, structures, lr
