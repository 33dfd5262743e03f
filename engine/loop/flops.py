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
attention sizes); steps are counted until their sizes span the new batch's, then solved exactly
in rational arithmetic (``fractions.Fraction``: no float rounding, right at the 10¹³–10¹⁴ FLOPs per
step of eqV2-L), with periodic counted checks compared for equality and a fall-back to counting every
step if a check ever disagrees (a :class:`FlopFallbackWarning`, and the metric ``flops_counting_fallback``).
What is counted is the *executed matmul FLOPs* of forward + backward (not "model FLOPs" 6·N·D).
The overhead of both paths is measured by ``benchmarks/bench_train.py``.

Attention: on CPU, ``scaled_dot_product_attention`` runs ``_scaled_dot_product_flash_attention_for_cpu``,
which the stock counter maps to 0 FLOPs (docs/design.md, Ray note 8). We register the standard
formulas for it and its backward (QKᵀ and PV: 2·b·h·s_q·s_k·d each; backward recomputes the
scores and forms dQ, dK, dV and dP: 5 such products), so attention counts however it is written.
"""

from __future__ import annotations

import math
import warnings
from fractions import Fraction
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
    """The :data:`FEATURES` of a batch with per-structure atom counts ``n_atoms`` (int64, exact)."""
    n = [int(v) for v in n_atoms.tolist()]
    B, L = len(n), max(n, default=0)
    return np.array([1, sum(n), B, int(num_edges), B * L, B * L * L, sum(v * v for v in n)], dtype=np.int64)


class FlopAccountant:
    """FLOPs of every training step, exact, without paying the counter's overhead on every step.

    The FLOPs of a step are a sum over matrix products of products of the batch's sizes
    (:data:`FEATURES`) and fixed model widths: y = c·x with an integer vector c. Steps are
    *counted* (with :class:`FlopCounter`) until the counted feature vectors span the new batch's
    features x; then x is written as a combination Σ aᵢ xᵢ of counted steps and its FLOPs are
    Σ aᵢ yᵢ, in exact rational arithmetic (no floating point, no tolerance: right at 10¹⁴ FLOPs
    per step as at 10³). Every ``verify_every``-th solved step is counted as well and compared
    for equality; a mismatch or a non-integer solution (a model whose sizes depend on the data in
    another way) switches the accountant to counting every step for the rest of the trial, with a
    :class:`FlopFallbackWarning` and ``fallback_reason`` set (the loop logs it as a metric).
    """

    def __init__(self, verify_every: int = 50, max_probes: int = 64) -> None:
        self.verify_every = verify_every
        self.max_probes = max_probes
        # reduced row echelon form of the counted feature vectors: (pivot column, row, its FLOPs)
        self._rows: list[tuple[int, list[Fraction], Fraction]] = []
        self.count_all = False
        self.fallback_reason: str | None = None
        self._int_rows: tuple[int, list[tuple[int, list[int], int]]] = (1, [])
        self._last: tuple[tuple, Fraction | None] | None = None
        self.steps = 0
        self.counted = 0

    @staticmethod
    def _exact(features: np.ndarray | list) -> list[Fraction]:
        return [Fraction(int(v)) if isinstance(v, (int, np.integer)) else Fraction(float(v)) for v in features]

    def _reduce(self, x: list[Fraction]) -> tuple[list[Fraction], Fraction]:
        """(x minus its part in the counted span, the FLOPs of that part)."""
        r, y = list(x), Fraction(0)
        for pivot, row, row_y in self._rows:
            a = r[pivot]
            if a:
                r = [ri - a * vi for ri, vi in zip(r, row)]
                y += a * row_y
        return r, y

    def _solve(self, features) -> Fraction | None:
        """Exact FLOPs of a step with these features, or None when they are not in the counted span.

        With the echelon rows scaled by the common denominator D to integers (R'ᵢ = D·Rᵢ, Y'ᵢ = D·yᵢ),
        x is in the span iff D·x = Σ x[pᵢ] R'ᵢ, and then its FLOPs are Σ x[pᵢ] Y'ᵢ / D: Python integers
        only, a few µs per step.
        """
        if not self._rows:
            return None
        integral = isinstance(features, np.ndarray) and features.dtype.kind in "iu"
        x = features.tolist() if integral else [int(v) for v in features]
        if not integral and any(v != f for v, f in zip(x, features)):  # non-integers: the slow exact path
            r, y = self._reduce(self._exact(features))
            return y if not any(r) else None
        key = (len(self._rows), tuple(x))
        if self._last is not None and self._last[0] == key:  # must_count and record ask for the same step
            return self._last[1]
        self._last = (key, self._solve_integer(x))
        return self._last[1]

    def _solve_integer(self, x: list[int]) -> Fraction | None:
        D, rows = self._int_rows
        if len(rows) == len(x):  # full rank: every x is in the span, x = Σ x[pᵢ] Rᵢ
            return Fraction(sum(x[pivot] * row_y for pivot, _, row_y in rows), D)
        combo = [0] * len(x)
        y = 0
        for pivot, row, row_y in rows:
            a = x[pivot]
            if a:
                combo = [c + a * v for c, v in zip(combo, row)]
                y += a * row_y
        if any(D * v != c for v, c in zip(x, combo)):
            return None
        return Fraction(y, D)

    def _scale_rows(self) -> None:
        """Cache the echelon rows as integers over their common denominator (see :meth:`_solve`)."""
        D = 1
        for _, row, row_y in self._rows:
            for v in (*row, row_y):
                D = D * v.denominator // math.gcd(D, v.denominator)
        rows = [(p, [int(v * D) for v in row], int(row_y * D)) for p, row, row_y in self._rows]
        self._int_rows = (D, rows)

    def _add(self, residual: list[Fraction], y: Fraction) -> None:
        pivot = next(k for k, v in enumerate(residual) if v)
        a = residual[pivot]
        new = [v / a for v in residual]
        new_y = y / a
        rows = []
        for p, row, row_y in self._rows:
            b = row[pivot]
            if b:
                row = [vi - b * ni for vi, ni in zip(row, new)]
                row_y = row_y - b * new_y
            rows.append((p, row, row_y))
        self._rows = [*rows, (pivot, new, new_y)]
        self._scale_rows()

    def _fall_back(self, reason: str) -> None:
        if not self.count_all:
            self.count_all = True
            self.fallback_reason = reason
            warnings.warn(
                f"FLOP accountant: {reason}; counting every step from now on (slower, still exact)",
                FlopFallbackWarning,
                stacklevel=3,
            )

    def must_count(self, features: np.ndarray) -> bool:
        """Whether the next step (with these features) has to be counted."""
        if self.count_all:
            return True
        y = self._solve(features)
        if y is None:
            return True
        if y.denominator != 1:
            self._fall_back(f"step {self.steps + 1}: the linear law gives a non-integer {float(y):.6g} FLOPs")
            return True
        return self.verify_every > 0 and (self.steps + 1) % self.verify_every == 0

    def predict(self, features: np.ndarray) -> int:
        y = self._solve(features)
        if y is None or y.denominator != 1:
            raise ValueError("features outside the counted span (or no integer law): count this step")
        return int(y)

    def record(self, features: np.ndarray, flops: int | None) -> int:
        """Book one step: ``flops`` if it was counted (else ``None``); returns the step's FLOPs."""
        self.steps += 1
        if flops is None:
            return self.predict(features)
        self.counted += 1
        flops = int(flops)
        if self.count_all:
            return flops
        y = self._solve(features)
        if y is not None:
            if y != flops:
                self._fall_back(f"step {self.steps}: counted {flops:,} FLOPs, the linear law gave {float(y):,.0f}")
        elif len(self._rows) < self.max_probes:
            residual, y_in_span = self._reduce(self._exact(features))
            self._add(residual, flops - y_in_span)
        return flops


class FlopFallbackWarning(RuntimeWarning):
    """The FLOP accountant's linear law failed a check; every later step is counted (exact but slower)."""
