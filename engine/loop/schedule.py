"""Learning-rate schedule: linear warmup, then cosine decay to a floor (seed study / fairchem).

The factor is a pure function of training *progress* p ∈ [0, 1] (fraction of all optimizer steps
done). Batches are packed by an atom budget, so the number of steps per epoch depends on the
shuffle; progress within an epoch is therefore measured against that epoch's own step count,
which keeps the schedule exact and resumable without knowing future epochs' packing.

    p < w:   f = warmup_factor + (1 − warmup_factor) · p / w
    p ≥ w:   f = min + (1 − min) · ½ · (1 + cos(π · (p − w) / (1 − w)))

(Loshchilov & Hutter 2017, arXiv 1608.03983, Eq. 5, without restarts; w = warmup fraction.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from engine.config import OptimConfig


def lr_factor(progress: float, warmup_fraction: float, warmup_factor: float, min_lr_factor: float) -> float:
    """Multiplier of the peak learning rate at ``progress`` (see module docstring)."""
    p = min(max(progress, 0.0), 1.0)
    if warmup_fraction > 0 and p < warmup_fraction:
        return warmup_factor + (1.0 - warmup_factor) * p / warmup_fraction
    span = max(1.0 - warmup_fraction, 1e-12)
    return min_lr_factor + (1.0 - min_lr_factor) * 0.5 * (1.0 + math.cos(math.pi * (p - warmup_fraction) / span))


@dataclass
class WarmupCosine:
    """Sets each parameter group's LR from training progress; its state is the last progress."""

    optimizer: torch.optim.Optimizer
    config: OptimConfig
    progress: float = 0.0

    def set_progress(self, progress: float) -> float:
        """Move to ``progress`` and apply the LR; returns the LR now in use."""
        self.progress = float(progress)
        lr = self.config.lr * lr_factor(
            self.progress, self.config.warmup_fraction, self.config.warmup_factor, self.config.min_lr_factor
        )
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def state_dict(self) -> dict:
        return {"progress": self.progress}

    def load_state_dict(self, state: dict) -> None:
        self.set_progress(float(state["progress"]))
