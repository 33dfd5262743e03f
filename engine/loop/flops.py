"""Exact FLOPs of a training step, counted on the real batch with ``torch.utils.flop_counter``.

Convention (the one of ``FlopCounterMode``, PaLM App. B and Kaplan et al. 2020, Sec. 2.1):
a multiply-add is 2 FLOPs; matrix products (mm, addmm, bmm, baddbmm, convolutions and
attention kernels) are counted, elementwise ops are not. A step is forward + backward
(+ the double backward of conservative models, whose forces are −∂E/∂x).

Why every step: atom graphs differ from batch to batch (atom counts, edge counts, per-structure
attention sizes), so no shape signature repeats often enough to be cached; the count is made
on every training step. The overhead is measured by ``benchmarks/bench_train.py``.

Attention: on CPU, ``scaled_dot_product_attention`` runs ``_scaled_dot_product_flash_attention_for_cpu``,
which the stock counter maps to 0 FLOPs (DESIGN.md, Ray note 8). We register the standard
formulas for it and its backward (QKᵀ and PV: 2·b·h·s_q·s_k·d each; backward recomputes the
scores and forms dQ, dK, dV and dP: 5 such products), so attention counts however it is written.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

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


class FlopCounter:
    """Context manager counting the FLOPs of the code inside it (forward, backward, double backward).

    >>> with FlopCounter() as fc:
    ...     loss = model(batch).energy.sum(); loss.backward()
    >>> fc.total  # FLOPs of that step
    """

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._mode: FlopCounterMode | None = None
        self.total = 0

    def __enter__(self) -> FlopCounter:
        if self.enabled:
            self._mode = FlopCounterMode(display=False, custom_mapping=EXTRA_FORMULAS)
            self._mode.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._mode is not None:
            self._mode.__exit__(*exc)
            self.total = int(self._mode.get_total_flops())
            self._mode = None


def count_flops(fn, *args: Any, **kwargs: Any) -> tuple[Any, int, dict[str, int]]:
    """Run ``fn(*args, **kwargs)`` under the counter; return (result, total FLOPs, FLOPs per aten op)."""
    mode = FlopCounterMode(display=False, custom_mapping=EXTRA_FORMULAS)
    with mode:
        result = fn(*args, **kwargs)
    per_op: dict[str, int] = {}
    for op, n in mode.get_flop_counts().get("Global", {}).items():
        per_op[str(op)] = int(n)
    return result, int(mode.get_total_flops()), per_op
