"""Mixed precision of a trial: which autocast dtype, and whether a gradient scaler goes with it.

``TrialConfig.amp`` (YAML ``amp:``, CLI ``--amp [bf16|fp16]``):

- ``false``: float32 throughout.
- ``bf16``: bfloat16 autocast. Same exponent range as float32, so gradients cannot underflow and
  no scaler is needed (Kalamkar et al. 2019, arXiv 1905.12322). Needs a CPU or a GPU with bf16
  (``torch.cuda.is_bf16_supported()``: Ampere and newer).
- ``fp16``: float16 autocast with a dynamic loss scaler (``torch.amp.GradScaler``; Micikevicius
  et al. 2018, arXiv 1710.03740): float16 gradients below 6·10⁻⁸ flush to zero without it.
- ``true``: bf16 where the device supports it, else fp16 (GPUs before Ampere).

What autocast touches is the models' business (``models.base``): geometry, radial bases, softmax
over neighbors, energies, forces and stress stay in float32; conservative models (forces =
−∂E/∂x) compute their energy in float32 so their forces and stress are float32 derivatives.
"""

from __future__ import annotations

import contextlib

import torch

from engine.errors import ConfigError


def bf16_supported(device: torch.device) -> bool:
    """Whether ``device`` runs bfloat16 autocast natively (every CPU; CUDA GPUs from Ampere on)."""
    if device.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    return True


def amp_dtype(amp: bool | str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``TrialConfig.amp`` on ``device``; None = no autocast."""
    if amp is False or amp in ("false", "off", None):
        return None
    if amp is True or amp in ("true", "auto"):
        return torch.bfloat16 if bf16_supported(device) else torch.float16
    if amp == "bf16":
        if not bf16_supported(device):
            raise ConfigError(f"amp: bf16 requested but {device} has no bfloat16 support; use amp: fp16")
        return torch.bfloat16
    if amp == "fp16":
        return torch.float16
    raise ConfigError(f"amp must be false, true, bf16 or fp16, got {amp!r}")


def autocast_context(device: torch.device, amp: bool | str) -> contextlib.AbstractContextManager:
    """Autocast for ``amp`` on ``device`` (a no-op without mixed precision)."""
    dtype = amp_dtype(amp, device)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def make_grad_scaler(amp: bool | str, device: torch.device) -> torch.amp.GradScaler | None:
    """A dynamic loss scaler when the autocast dtype is float16 (on any device), else None."""
    if amp_dtype(amp, device) != torch.float16:
        return None
    return torch.amp.GradScaler(device.type)


def describe(amp: bool | str, device: torch.device) -> str:
    """One word for logs and MLflow: fp32, bf16 or fp16+scaler."""
    dtype = amp_dtype(amp, device)
    return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16+scaler"}[dtype]
