"""Early stopping (``budget.early_stop``): patience on the validation loss, the best weights kept to restore."""

from __future__ import annotations

import math
from typing import Any

from engine.config import EarlyStopConfig
from engine.loop.ema import EMA
from models.base import Potential


class EarlyStopping:
    """The best validation loss so far, its epoch, the epochs since, and its weights (model, EMA).

    ``best`` is a plain dict so that a checkpoint holds it as it is (key ``best``).
    """

    def __init__(self, rule: EarlyStopConfig | None) -> None:
        self.rule = rule
        self.best: dict[str, Any] = {"val_loss": math.inf, "epoch": 0, "bad_epochs": 0, "state": None}

    def update(self, val_loss: float, epoch: int, model: Potential, ema: EMA | None) -> bool:
        """Track the best validation loss after ``epoch``; True when patience is exhausted."""
        if self.rule is None:
            return False
        if val_loss < self.best["val_loss"] - self.rule.min_delta:
            self.best = {
                "val_loss": float(val_loss),
                "epoch": epoch,
                "bad_epochs": 0,
                "state": {
                    "model": {k: v.detach().clone() for k, v in model.state_dict().items()},
                    "ema": ema.state_dict() if ema is not None else None,
                },
            }
            return False
        self.best["bad_epochs"] = int(self.best["bad_epochs"]) + 1
        return self.best["bad_epochs"] >= self.rule.patience

    def restore_best(self, epoch: int, model: Potential, ema: EMA | None) -> bool:
        """Put the best weights back if they are not the current ones (``epoch``); True when they were put back.
        Without early stopping, or before any epoch was kept, nothing changes."""
        if self.rule is None or self.best["state"] is None or self.best["epoch"] == epoch:
            return False
        model.load_state_dict(self.best["state"]["model"])
        if ema is not None and self.best["state"]["ema"] is not None:
            ema.load_state_dict(self.best["state"]["ema"])
        return True

    @property
    def best_epoch(self) -> int | None:
        """The kept epoch (under early stopping, once one was kept), else None."""
        return None if self.rule is None or self.best["state"] is None else int(self.best["epoch"])
