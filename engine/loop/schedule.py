"""Learning-rate schedules: warmup then cosine decay, or warmup–stable–decay (WSD) with a cooldown.

The factor (multiplier of the peak LR) is a pure function of training *progress* p ∈ [0, 1]. An
ordinary trial measures progress in epochs: batches are packed by an atom budget, so the number of
steps per epoch depends on the shuffle, and progress within an epoch is measured against that
epoch's own step count (exact and resumable without knowing future epochs' packing). A trial with a
FLOP budget (``max_flops``: the compute axis) measures progress as the fraction of its budget spent,
so its schedule ends where its budget does, not at an epoch cap (:func:`trial_progress`).

    warmup, p < w:   f = warmup_factor + (1 − warmup_factor) · p / w
    cosine, p ≥ w:   f = m + (1 − m) · ½ · (1 + cos(π · (p − w) / (1 − w)))
    wsd:             f = 1 up to p = 1 − c, then the cooldown over the last fraction c:
                     t = (p − (1 − c)) / c,  linear: f = 1 − (1 − m) · t,  sqrt: f = m + (1 − m) · (1 − √t)

(cosine: Loshchilov & Hutter 2017, arXiv 1608.03983, Eq. 5, without restarts; WSD and the 1 − √
cooldown: Hägele et al. 2024, arXiv 2405.18392, §3; w = warmup fraction, m = min LR factor,
c = cooldown fraction.) On the compute axis the main run only warms up and holds the peak
(``hold=True``); its cooldowns are taken as branches (:mod:`engine.loop.cooldown`), each a
:func:`cooldown_factor` ramp of an exact number of steps that ends on m.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from engine.config import OptimConfig

SCHEDULES = ("cosine", "wsd")
COOLDOWN_SHAPES = ("linear", "sqrt")


def _warmup(p: float, warmup_fraction: float, warmup_factor: float) -> float | None:
    if warmup_fraction > 0 and p < warmup_fraction:
        return warmup_factor + (1.0 - warmup_factor) * p / warmup_fraction
    return None


def lr_factor(progress: float, warmup_fraction: float, warmup_factor: float, min_lr_factor: float) -> float:
    """Warmup–cosine multiplier of the peak learning rate at ``progress`` (see module docstring)."""
    p = min(max(progress, 0.0), 1.0)
    warm = _warmup(p, warmup_fraction, warmup_factor)
    if warm is not None:
        return warm
    span = max(1.0 - warmup_fraction, 1e-12)
    return min_lr_factor + (1.0 - min_lr_factor) * 0.5 * (1.0 + math.cos(math.pi * (p - warmup_fraction) / span))


def cooldown_factor(t: float, min_lr_factor: float, shape: str, start: float = 1.0) -> float:
    """Factor at fraction ``t`` ∈ [0, 1] of a cooldown from ``start`` down to ``min_lr_factor``."""
    t = min(max(t, 0.0), 1.0)
    if shape == "linear":
        return start + (min_lr_factor - start) * t
    if shape == "sqrt":  # Hägele et al. 2024 (arXiv 2405.18392): 1 − √t beats linear at equal length
        return min_lr_factor + (start - min_lr_factor) * (1.0 - math.sqrt(t))
    raise ValueError(f"unknown cooldown shape {shape!r}; use one of {', '.join(COOLDOWN_SHAPES)}")


def wsd_factor(progress: float, optim: OptimConfig, hold: bool = False) -> float:
    """Warmup–stable–decay multiplier at ``progress``; ``hold`` keeps the peak to the end (no decay)."""
    p = min(max(progress, 0.0), 1.0)
    warm = _warmup(p, optim.warmup_fraction, optim.warmup_factor)
    if warm is not None:
        return warm
    start = 1.0 - optim.cooldown_fraction
    if hold or p <= start:
        return 1.0
    return cooldown_factor((p - start) / optim.cooldown_fraction, optim.min_lr_factor, optim.cooldown_shape)


def schedule_factor(progress: float, optim: OptimConfig, hold: bool = False) -> float:
    """Multiplier of ``optim.lr`` at ``progress`` under ``optim.schedule``."""
    if optim.schedule == "wsd":
        return wsd_factor(progress, optim, hold)
    return lr_factor(progress, optim.warmup_fraction, optim.warmup_factor, optim.min_lr_factor)


def trial_progress(epoch_progress: float, flops_done: float, max_flops: float | None) -> float:
    """Progress of a trial: the fraction of its FLOP budget spent when it has one, else of its epochs.

    With both, the larger, so the schedule always ends by the time the trial does (an epoch cap
    reached before the FLOP budget still ends annealed).
    """
    if max_flops is None or max_flops <= 0:
        return epoch_progress
    return max(epoch_progress, flops_done / max_flops)


@dataclass
class LRSchedule:
    """Sets each parameter group's LR from training progress; its state is the last progress.

    ``hold``: a WSD main run whose cooldowns are branches (compute axis) stays at the peak after warmup.
    """

    optimizer: torch.optim.Optimizer
    config: OptimConfig
    progress: float = 0.0
    hold: bool = False

    def set_progress(self, progress: float) -> float:
        """Move to ``progress`` and apply the LR; returns the LR now in use."""
        self.progress = float(progress)
        return self.set_factor(schedule_factor(self.progress, self.config, self.hold))

    def set_factor(self, factor: float) -> float:
        """Apply ``factor`` × peak LR directly (a cooldown branch's ramp); returns the LR."""
        lr = self.config.lr * float(factor)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    @property
    def factor(self) -> float:
        """The multiplier of the peak LR now in use."""
        return self.lr / self.config.lr if self.config.lr else 0.0

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def state_dict(self) -> dict:
        return {"progress": self.progress}

    def load_state_dict(self, state: dict) -> None:
        self.set_progress(float(state["progress"]))


WarmupCosine = LRSchedule  # the name before WSD existed (benchmarks, older imports)
