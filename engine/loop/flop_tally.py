"""The trial's FLOP count under data parallelism: the ranks' counts summed without waiting on the GPU.

Each rank knows its own step's FLOPs as a host integer (:mod:`engine.loop.flops` counts at dispatch time,
before the kernels run), and the ranks' counts differ (shards are balanced by atoms, not by FLOPs); the
trial's ``flops_cum`` is their sum. Summing a CUDA tensor and reading it back (``all_reduce(...).item()``)
every step made the host wait for the step's kernels. Here the counts are summed as CPU tensors over a
gloo process group (the default one when it is gloo, else a gloo group of the same ranks), so the GPU
stream is never waited on, and only as often as a decision needs the global count:

- no ``max_flops`` and no ``rung_flops`` (the params and data axes): nothing inside an epoch reads the count;
  each rank keeps its own and the ranks sum them once per report (:meth:`FlopTally.flush`, called by every
  rank at the same point of the loop). A step has no collective besides DDP's gradients.
- a FLOP budget or rungs (the compute axis, ``--max-flops``): the budget, the rung crossings and the LR
  schedule read the count after every step, so each step's counts are summed at once (a host collective of
  one integer); every rank then takes the same decision at the same step, exactly as a single process would.

Without a process group both are the identity: a single process's count is the trial's.
"""

from __future__ import annotations

from typing import Any

import torch


class FlopTally:
    """Sums this rank's FLOPs with the other ranks' per step (``per_step``) or at each report (:meth:`flush`)."""

    def __init__(self, dist: Any, per_step: bool, own_group: bool | None = None) -> None:
        """``dist``: the loop's ``DistContext`` or None; ``own_group``: force (True) or forbid (False) a separate
        gloo group; None: one only when the default group is not gloo (NCCL sums device tensors only)."""
        self.per_step = per_step
        self.pending = 0  # this rank's FLOPs not yet summed (per_step False)
        self._active = dist is not None and dist.active
        self._group = None
        if self._active:
            import torch.distributed as tdist

            if own_group if own_group is not None else tdist.get_backend() != "gloo":
                self._group = tdist.new_group(backend="gloo")  # every rank builds it, in the same order

    @property
    def group(self) -> Any:
        """The gloo group host integers are summed over (None: the default group, or no process group)."""
        return self._group

    def _sum(self, value: int) -> int:
        if not self._active:
            return int(value)
        import torch.distributed as tdist

        total = torch.tensor([int(value)], dtype=torch.int64)  # a host tensor: no device sync to read it
        tdist.all_reduce(total, group=self._group)
        return int(total.item())

    def step(self, flops: int) -> int:
        """This rank's FLOPs of one step → what the trial's count grows by now: the sum over ranks (per step, or
        a single process), else 0 (kept until :meth:`flush`)."""
        if self.per_step or not self._active:
            return self._sum(flops)
        self.pending += int(flops)
        return 0

    def flush(self) -> int:
        """The FLOPs kept since the last flush, summed over ranks (a collective: every rank calls it)."""
        if self.per_step or not self._active:
            return 0
        out, self.pending = self._sum(self.pending), 0
        return out
