"""How long a trial trains (``config.budget``, ``config.max_flops``), and how far along its LR schedule it is."""

from __future__ import annotations

from engine.config import TrialConfig
from engine.loop.schedule import trial_progress


class Budget:
    """``budget.epochs``, a fixed number of optimizer ``budget.steps`` (the schedule spans them), or
    ``budget.early_stop`` (:mod:`engine.loop.early_stop`) up to the epochs; and a FLOP cap, ``max_flops``."""

    def __init__(self, config: TrialConfig) -> None:
        self.steps = config.budget.steps
        self.epochs = config.epochs
        self.max_flops = config.max_flops

    def spent(self, step: int, flops_cum: float) -> bool:
        """The training budget is used up (checked after every step and before every epoch)."""
        if self.steps is not None and step >= self.steps:
            return True
        return self.max_flops is not None and flops_cum >= self.max_flops

    def out_of_epochs(self, epoch: int) -> bool:
        return self.steps is None and epoch >= self.epochs

    def progress(self, step: int, epoch: int, batch: int, n_batches: int, flops_cum: float) -> float:
        """Fraction of the run done at ``batch`` of ``n_batches`` in ``epoch`` (step ``step``): steps over
        ``budget.steps``, else epochs, or the FLOPs when a FLOP budget drives the schedule."""
        if self.steps is not None:
            return step / self.steps
        # a FLOP budget drives the schedule (engine.loop.schedule.trial_progress), not the epoch cap
        by_epochs = (epoch - 1 + batch / n_batches) / self.epochs
        return trial_progress(by_epochs, flops_cum, self.max_flops)
