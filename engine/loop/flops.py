"""Exact FLOPs of a training step, counted on the real batch with ``torch.utils.flop_counter``.

Convention (the one of ``FlopCounterMode``, PaLM App. B and Kaplan et al. 2020, Sec. 2.1):
a multiply-add is 2 FLOPs; matrix products (mm, addmm, bmm, baddbmm, convolutions and
attention kernels) are counted, elementwise ops are not. A step is forward + backward
(+ the double backward of conservative models, whose forces are −∂E/∂x).

Why not the stock counter on every step: ``FlopCounterMode`` tracks modules and tries to decompose
every op, which made a small model's step 2.5–6× slower here. :class:`FlopCounter` applies the same
formulas from a lean dispatch mode (same totals, tested), still +150–300 % on small CPU models.
So the loop books FLOPs with :class:`FlopAccountant`: atom graphs differ from batch to batch, but a
step's FLOPs are an integer-linear function of a few batch sizes (atoms, edges, structures, padded
attention sizes); steps are counted until their sizes span the new batch's, then solved exactly,
with periodic counted checks and a fall-back to counting every step if a check ever disagrees.
The overhead of both paths is measured by ``benchmarks/bench_train.py``.

Attention: on CPU, ``scaled_dot_product_attention`` runs ``_scaled_dot_product_flash_attention_for_cpu``,
which the stock counter maps to 0 FLOPs (DESIGN.md, Ray note 8). We register the standard
formulas for it and its backward (QKᵀ and PV: 2·b·h·s_q·s_k·d each; backward recomputes the
scores and forms dQ, dK, dV and dP: 5 such products), so attention counts however it is written.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import (
    FlopCounterMode,
    flop_registry,
    sdpa_backward_flop_count,
    sdpa_flop_count,
    shape_wrapper,
)

_aten = torch.ops.aten


def _cpu_sdpa_flop(query, key, value, *args: Any, out_shape=None, **kwargs: Any) -> int:
    return sdpa_flop_count(query, key, value)


def _cpu_sdpa_backward_flop(grad_out, query, key, value, *args: Any, out_shape=None, **kwargs: Any) -> int:
    return sdpa_backward_flop_count(grad_out, query, key, value)


def _extra_formulas() -> dict:
    """FLOP formulas for kernels the stock registry misses (CPU fused attention)."""
    table = {}
    if hasattr(_aten, "_scaled_dot_product_flash_attention_for_cpu"):
        table[_aten._scaled_dot_product_flash_attention_for_cpu] = _cpu_sdpa_flop
    if hasattr(_aten, "_scaled_dot_product_flash_attention_for_cpu_backward"):
        table[_aten._scaled_dot_product_flash_attention_for_cpu_backward] = _cpu_sdpa_backward_flop
    return table


EXTRA_FORMULAS = _extra_formulas()


class _CountingMode(TorchDispatchMode):
    """Adds each matmul-like op's FLOPs (formulas of ``torch.utils.flop_counter``) to ``total``.

    ``FlopCounterMode`` tracks modules and tries ``func.decompose`` on every op (its registry is keyed
    by overload packets, so the membership test misses every op); that costs more than the step
    itself for models with many small ops. This mode only looks the packet up and applies the same
    formulas, giving the same totals (tested) at a fraction of the cost.
    """

    def __init__(self) -> None:
        super().__init__()
        self.total = 0
        self.per_op: dict[str, int] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = _FORMULAS.get(func._overloadpacket)
        if formula is not None:
            n = int(formula(*args, **kwargs, out_val=out))
            self.total += n
            key = str(func._overloadpacket)
            self.per_op[key] = self.per_op.get(key, 0) + n
        return out


_FORMULAS = {**flop_registry, **{op: shape_wrapper(fn) for op, fn in EXTRA_FORMULAS.items()}}


class FlopCounter:
    """Context manager counting the FLOPs of the code inside it (forward, backward, double backward).

    >>> with FlopCounter() as fc:
    ...     model(batch).energy.sum().backward()
    >>> fc.total  # FLOPs of that step
    """

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._mode: _CountingMode | None = None
        self.total = 0
        self.per_op: dict[str, int] = {}

    def __enter__(self) -> FlopCounter:
        if self.enabled:
            self._mode = _CountingMode()
            self._mode.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._mode is not None:
            self._mode.__exit__(*exc)
            self.total = self._mode.total
            self.per_op = dict(self._mode.per_op)
            self._mode = None


def count_flops(fn, *args: Any, **kwargs: Any) -> tuple[Any, int, dict[str, int]]:
    """Run ``fn(*args, **kwargs)`` under :class:`FlopCounter`; return (result, total FLOPs, FLOPs per aten op)."""
    with FlopCounter() as counter:
        result = fn(*args, **kwargs)
    return result, counter.total, counter.per_op


def count_flops_reference(fn, *args: Any, **kwargs: Any) -> tuple[Any, int]:
    """The same count with the stock ``FlopCounterMode`` (slow; used to check :class:`FlopCounter`)."""
    mode = FlopCounterMode(display=False, custom_mapping=EXTRA_FORMULAS)
    with mode:
        result = fn(*args, **kwargs)
    return result, int(mode.get_total_flops())


# ---------------------------------------------------------------------------------------------
# Exact per-step FLOPs at a low cost: counted steps plus a linear law in the batch's sizes

# Batch statistics every matmul's size is a product of, for the model families here: linear layers
# scale with atoms N or edges E, per-structure ops with B, padded attention with B·L and B·L²
# (L = largest structure), unpadded per-structure attention with Σ n².
FEATURES = ("1", "atoms", "structures", "edges", "structures*max_atoms", "structures*max_atoms^2", "sum_atoms^2")


def batch_features(n_atoms: torch.Tensor, num_edges: int) -> np.ndarray:
    """The :data:`FEATURES` of a batch with per-structure atom counts ``n_atoms``."""
    n = n_atoms.to(torch.float64)
    B = float(n.numel())
    L = float(n.max()) if n.numel() else 0.0
    return np.array([1.0, float(n.sum()), B, float(num_edges), B * L, B * L * L, float((n * n).sum())])


class FlopAccountant:
    """FLOPs of every training step, exact, without paying the counter's overhead on every step.

    The FLOPs of a step are a sum over matrix products of products of the batch's sizes
    (:data:`FEATURES`) and fixed model widths, i.e. linear in the features with integer
    coefficients. Steps are *counted* (with :class:`FlopCounter`) until the counted feature
    vectors span the new batch's features; then the step's FLOPs are *solved* from the counted
    ones (exact within the span; no extrapolation). Every ``verify_every``-th solved step is
    counted as well and compared; a mismatch (a model whose sizes depend on the data in another
    way) switches the accountant to counting every step for the rest of the trial.
    """

    def __init__(self, verify_every: int = 50, max_probes: int = 64) -> None:
        self.verify_every = verify_every
        self.max_probes = max_probes
        self._x: list[np.ndarray] = []
        self._y: list[int] = []
        self._coef: np.ndarray | None = None
        self._basis: np.ndarray | None = None  # orthonormal rows spanning the counted features
        self.count_all = False
        self.steps = 0
        self.counted = 0

    def _fit(self) -> None:
        X = np.stack(self._x)
        y = np.array(self._y, dtype=np.float64)
        scale = np.maximum(np.abs(X).max(axis=0), 1.0)  # column scaling for conditioning
        coef, *_ = np.linalg.lstsq(X / scale, y, rcond=None)
        if np.any(np.abs((X / scale) @ coef - y) > 0.5):  # not linear in the features: count everything
            self.count_all = True
            return
        self._coef = coef / scale
        _, s, vt = np.linalg.svd(X / scale, full_matrices=False)
        self._basis = vt[s > s.max() * 1e-10] if s.size else None
        self._scale = scale

    def _in_span(self, x: np.ndarray) -> bool:
        if self._basis is None or self._coef is None:
            return False
        xs = x / self._scale
        residual = xs - (xs @ self._basis.T) @ self._basis
        return float(np.linalg.norm(residual)) <= 1e-9 * max(float(np.linalg.norm(xs)), 1.0)

    def must_count(self, features: np.ndarray) -> bool:
        """Whether the next step (with these features) has to be counted."""
        if self.count_all or not self._in_span(features):
            return True
        return self.verify_every > 0 and (self.steps + 1) % self.verify_every == 0

    def predict(self, features: np.ndarray) -> int:
        assert self._coef is not None
        return round(float(features @ self._coef))

    def record(self, features: np.ndarray, flops: int | None) -> int:
        """Book one step: ``flops`` if it was counted (else ``None``); returns the step's FLOPs."""
        self.steps += 1
        if flops is None:
            return self.predict(features)
        self.counted += 1
        if not self.count_all and self._in_span(features) and self.predict(features) != flops:
            self.count_all = True  # the linear law failed on a verified step
        if not self.count_all and len(self._x) < self.max_probes and not self._in_span(features):
            self._x.append(np.asarray(features, dtype=np.float64))
            self._y.append(int(flops))
            self._fit()
        return int(flops)
