"""The state of one trial that a checkpoint holds, and nothing else.

Weights, AdamW, the LR schedule, the grad scaler (fp16), the EMA, every RNG (torch's, Python's, numpy's legacy one,
the shuffle generator and the model's own generators), the counters (epoch, step, FLOPs of the main run and of the
cooldown branches, wall time, structures seen), the reports so far, the early-stopping record, and, inside an
epoch, the epoch's position (:class:`EpochPosition`): restoring all of it makes a resumed run continue exactly as an
uninterrupted one. The file format is :mod:`models.checkpoint`'s (via :mod:`engine.loop.checkpoint`).
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

import models
from engine.config import TrialConfig
from engine.loop import checkpoint as ckpt_io
from engine.loop import precision
from engine.loop.early_stop import EarlyStopping
from engine.loop.ema import EMA
from engine.loop.loss import ErrorSums
from engine.loop.schedule import LRSchedule
from models.base import Normalization, Potential


def build_model(config: TrialConfig, normalization: Normalization, device: torch.device,
                dtype: torch.dtype) -> Potential:
    """The trial's model with its initial weights (drawn from torch's RNG: seed first), on ``device`` in ``dtype``."""
    model = models.build(config.model, config.model_config, preset=config.preset)
    model.set_normalization(normalization)  # the dataset's: shared by every train size
    if dtype != torch.float32:
        model.to(dtype=dtype)
    return model.to(device)


def seed_everything(seed: int) -> np.random.Generator:
    """Seed torch, Python and numpy's legacy state; return the Generator that shuffles the data."""
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    return np.random.default_rng(seed)


@dataclass
class EpochPosition:
    """Where the main run is inside an epoch: what a checkpoint taken there needs to finish it."""

    generator_state: dict  # the shuffle generator's state at the epoch's start (its permutation is drawn again)
    batches_done: int
    error_sums: torch.Tensor  # the epoch's running train error sums (its divergence check; a diverged row's train_*)
    structures: int = 0  # this epoch's structures and atoms so far (throughput)
    atoms: int = 0

    def to_dict(self) -> dict:
        return {"generator_state": self.generator_state, "batches_done": self.batches_done,
                "error_sums": self.error_sums.detach().cpu(), "structures": self.structures, "atoms": self.atoms}

    @classmethod
    def from_dict(cls, d: dict) -> EpochPosition:
        return cls(dict(d["generator_state"]), int(d["batches_done"]), d["error_sums"].to(torch.float64),
                   int(d["structures"]), int(d["atoms"]))


class TrialState:
    """What a checkpoint of one trial holds; built fresh from the config, or loaded (:meth:`load`)."""

    def __init__(self, config: TrialConfig, model: Potential, device: torch.device, generator: np.random.Generator,
                 hold: bool) -> None:
        """``generator``: the shuffle generator (:func:`seed_everything`); ``hold``: the schedule
        holds the peak LR (compute axis: rung cooldowns are branches)."""
        self.model = model
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=config.optim.lr,
                                           weight_decay=config.optim.weight_decay)
        self.scheduler = LRSchedule(self.optimizer, config.optim, hold=hold)
        self.scheduler.set_progress(0.0)
        self.scaler = precision.make_grad_scaler(config.amp, device)  # fp16 only
        self.ema = EMA(model, config.optim.ema_decay) if config.optim.ema_decay else None
        self.generator = generator
        self.epoch = 0
        self.step = 0
        self.flops_cum = 0  # main run; with rung_flops the branches' FLOPs are in flops_cooldown
        self.flops_cooldown = 0
        self.wall_s = 0.0
        self.history: list[dict] = []
        self.structures_seen = 0  # main run, for epochs_run
        self.position: EpochPosition | None = None  # the epoch in progress, while inside one
        self.resume_position: dict | None = None  # a mid-epoch checkpoint's position, until start_epoch uses it
        self.finished = False  # the last report (test metrics, restored best) is written
        self.diverged = False
        self.early_stop = EarlyStopping(config.budget.early_stop)

    def start_epoch(self) -> EpochPosition:
        """A new epoch's position, or the one a mid-epoch checkpoint saved (the epoch is not counted again)."""
        saved, self.resume_position = self.resume_position, None
        if saved is None:
            self.epoch += 1
            return EpochPosition(ckpt_io.numpy_generator_state(self.generator), 0,
                                 torch.zeros(len(dataclasses.fields(ErrorSums)), dtype=torch.float64))
        position = EpochPosition.from_dict(saved)
        # the epoch's permutation is drawn again from the generator's state at its start: same batches, and the
        # generator ends where the uninterrupted run's did
        self.generator = ckpt_io.restore_numpy_generator(dict(position.generator_state))
        return position

    def checkpoint(self, config: TrialConfig, model_config: dict, normalization: Normalization) -> dict[str, Any]:
        """The checkpoint's payload (format :data:`engine.loop.checkpoint.FORMAT`)."""
        return {
            "format": ckpt_io.FORMAT,
            "model": config.model,
            "model_config": dict(model_config),
            "normalization": normalization.to_dict(),
            "model_state": self.model.state_dict(),
            "ema_state": self.ema.state_dict() if self.ema is not None else None,
            "optimizer_state": self.optimizer.state_dict(),
            "scheduler_state": self.scheduler.state_dict(),
            "scaler_state": self.scaler.state_dict() if self.scaler is not None else None,
            "epoch": self.epoch,
            "step": self.step,
            "flops_cum": self.flops_cum,
            "flops_cooldown": self.flops_cooldown,
            "wall_s": self.wall_s,
            "rng": {**ckpt_io.rng_state(), "numpy_shuffle": ckpt_io.numpy_generator_state(self.generator)},
            "model_rng": self.model.rng_state(),  # the model's own generators (models.base.Potential.generators)
            "trial_config": config.to_dict(),
            "metrics_history": list(self.history),
            "structures_seen": self.structures_seen,
            "epoch_position": self.position.to_dict() if self.position is not None else None,
            "finished": self.finished,
            "diverged": self.diverged,
            "best": self.early_stop.best,
        }

    def load(self, ck: dict[str, Any]) -> None:
        """Restore everything from a checkpoint's payload (checked compatible by the caller); the global RNGs too."""
        self.model.load_state_dict(ck["model_state"])
        self.optimizer.load_state_dict(ck["optimizer_state"])
        self.scheduler.load_state_dict(ck["scheduler_state"])
        if self.scaler is not None and ck["scaler_state"]:
            self.scaler.load_state_dict(ck["scaler_state"])
        if self.ema is not None and ck["ema_state"] is not None:
            self.ema.load_state_dict(ck["ema_state"])
        self.epoch = int(ck["epoch"])
        self.step = int(ck["step"])
        self.flops_cum = int(ck["flops_cum"])
        self.flops_cooldown = int(ck.get("flops_cooldown", 0))
        self.wall_s = float(ck["wall_s"])
        self.history = list(ck["metrics_history"])
        self.structures_seen = int(ck.get("structures_seen", 0))
        self.resume_position = ck.get("epoch_position")  # None: saved at an epoch's end
        self.finished = bool(ck.get("finished", False))
        self.diverged = bool(ck.get("diverged", False))
        if ck.get("best") is not None:
            self.early_stop.best = dict(ck["best"])
        rng = dict(ck["rng"])
        self.generator = ckpt_io.restore_numpy_generator(rng.pop("numpy_shuffle"))
        ckpt_io.set_rng_state(rng)
        self.model.set_rng_state(ck.get("model_rng") or {})

    def save(self, path: Path, config: TrialConfig, model_config: dict, normalization: Normalization) -> None:
        """Write the checkpoint to ``path`` (one file, replaced atomically: nothing older to prune)."""
        ckpt_io.save_checkpoint(path, self.checkpoint(config, model_config, normalization))

    def resume(self, path: Path, config: TrialConfig, model_config: dict, device: torch.device) -> bool:
        """Load the checkpoint at ``path`` if there is one (it must fit this trial); True when loaded."""
        if not path.exists():
            return False
        ck = ckpt_io.load_checkpoint(path, map_location=device)
        ckpt_io.check_compatible(ck, config.model, model_config, config.to_dict(), path)
        self.load(ck)
        return True
