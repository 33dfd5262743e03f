"""Small blocks shared by the baseline families: radial bases, cutoffs, MLPs, scatter sums.

Every function here is differentiable twice (conservative models take forces by autograd
and train with ``create_graph=True``), so activations are smooth (SiLU, not ReLU).

Mixed precision: radial bases and cutoffs are functions of distances [Å] that feed forces and
stress, so they run with autocast off and in at least float32 (:func:`full_precision`), whatever
the caller's autocast says. A bf16 distance is off by up to 0.4 % (0.02 Å at 5 Å), an fp16
Gaussian of a far neighbor underflows to 0.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable, Iterator
from typing import TypeVar

import torch
from torch import nn

_F = TypeVar("_F", bound=Callable)
_HALF = (torch.float16, torch.bfloat16)


@contextlib.contextmanager
def autocast_off(device_type: str = "cpu") -> Iterator[None]:
    """Disable autocast for ``device_type`` (and CUDA's, if it is on) inside the block."""
    with contextlib.ExitStack() as stack:
        for dev in {device_type, "cpu", "cuda"}:
            if torch.is_autocast_enabled(dev):
                stack.enter_context(torch.autocast(dev, enabled=False))
        yield


def to_full(x: torch.Tensor) -> torch.Tensor:
    """``x`` in float32 if it is half precision (fp16/bf16); float32/float64 and integers unchanged."""
    return x.float() if x.dtype in _HALF else x


def full_precision(fn: _F) -> _F:
    """Decorator: run ``fn`` with autocast off and its half-precision tensor arguments upcast to float32."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        args = tuple(to_full(a) if isinstance(a, torch.Tensor) else a for a in args)
        kwargs = {k: to_full(v) if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}
        device = next((a.device.type for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)), "cpu")
        with autocast_off(device):
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


@full_precision
def cosine_cutoff(dist: torch.Tensor, cutoff: float) -> torch.Tensor:
    """Behler's smooth cutoff f_c(r) = ½(cos(πr/r_c) + 1) for r < r_c, else 0 (Behler 2011, JCP 134, 074106, eq. 4).

    Value and slope vanish at r_c, so energies built from it stay continuous as a neighbor leaves.
    """
    inside = dist < cutoff
    return torch.where(inside, 0.5 * (torch.cos(dist * (math.pi / cutoff)) + 1.0), torch.zeros_like(dist))


class GaussianBasis(nn.Module):
    """Gaussians exp(−(r − μ_k)² / (2 w²)) with centers μ_k evenly spaced on [start, stop] Å.

    ``width_factor`` sets w in units of the center spacing (1.0 is SchNet's choice, Schütt et al. 2017).
    """

    def __init__(self, start: float, stop: float, num: int, width_factor: float = 1.0) -> None:
        super().__init__()
        if num < 2:
            raise ValueError(f"need at least two Gaussians, got num={num}")
        self.start, self.stop, self.num = float(start), float(stop), int(num)
        spacing = (self.stop - self.start) / (self.num - 1)
        self.coeff = -0.5 / (width_factor * spacing) ** 2

    @full_precision
    def forward(self, dist: torch.Tensor) -> torch.Tensor:
        # centers built in the input's dtype (not a float32 buffer), so float64 checks are exact
        centers = torch.linspace(self.start, self.stop, self.num, dtype=dist.dtype, device=dist.device)
        diff = dist.unsqueeze(-1) - centers
        return torch.exp(self.coeff * diff * diff)


class MLP(nn.Sequential):
    """Linear → act → … → Linear with ``depth`` hidden layers of width ``hidden``."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, depth: int = 1, act: type[nn.Module] = nn.SiLU) -> None:
        layers: list[nn.Module] = []
        width = in_dim
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), act()]
            width = hidden
        layers.append(nn.Linear(width, out_dim))
        super().__init__(*layers)


def scatter_sum(values: torch.Tensor, index: torch.Tensor, size: int) -> torch.Tensor:
    """Sum rows of ``values`` into ``size`` bins given by ``index`` (keeps the dtype of ``values``)."""
    out = torch.zeros((size, *values.shape[1:]), dtype=values.dtype, device=values.device)
    return out.index_add_(0, index, values)


def voigt_to_matrix(voigt: torch.Tensor) -> torch.Tensor:
    """(…, 6) in ASE Voigt order (xx, yy, zz, yz, xz, xy) → symmetric (…, 3, 3)."""
    xx, yy, zz, yz, xz, xy = voigt.unbind(-1)
    rows = [
        torch.stack([xx, xy, xz], dim=-1),
        torch.stack([xy, yy, yz], dim=-1),
        torch.stack([xz, yz, zz], dim=-1),
    ]
    return torch.stack(rows, dim=-2)
