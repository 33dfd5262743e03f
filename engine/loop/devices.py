"""Where a trial runs: the device, the data-parallel process group as this process sees it, autocast."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from engine.errors import ConfigError
from engine.loop import precision


@dataclass
class DistContext:
    """An already-initialized ``torch.distributed`` process group as seen by this process."""

    rank: int
    world_size: int
    device: torch.device | str

    @property
    def active(self) -> bool:
        return self.world_size > 1


def resolve_device(name: str) -> torch.device:
    """``auto`` → CUDA if available, else CPU; ``cuda`` without a GPU is a :class:`ConfigError`."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' requested but no CUDA GPU is visible; use --device cpu or auto")
    if name not in ("cpu",) and not name.startswith("cuda"):
        raise ConfigError(f"unknown device {name!r}; use auto, cpu or cuda")
    return torch.device(name)


def autocast_context(device: torch.device, amp: bool | str) -> contextlib.AbstractContextManager:
    """Autocast for ``config.amp`` (bf16, or fp16 paired with a GradScaler); see :mod:`engine.loop.precision`."""
    return precision.autocast_context(device, amp)


def all_reduce(vec: torch.Tensor, dist: DistContext | None) -> torch.Tensor:
    """Sum ``vec`` over ranks (in place on a copy); identity without a process group."""
    if dist is None or not dist.active:
        return vec
    import torch.distributed as tdist

    out = vec.clone()
    tdist.all_reduce(out)
    return out
