"""When the main run saves inside an epoch: every K steps, every T minutes, and at the step after a SIGTERM.

A preemptible GPU node gets a SIGTERM and some seconds of grace before it is gone. The loop asks
:meth:`CheckpointPolicy.due` after every optimizer step; when it says so the loop saves the trial with
its epoch position (the shuffle generator's state at the epoch's start and the batches done), so a
run killed mid-epoch resumes at the next batch with the same data order. After a SIGTERM the loop
saves, then raises :class:`engine.errors.Preempted`: ``engine.train`` exits with
:data:`PREEMPTED_EXIT_CODE` (75), and in a sweep the trial fails and Tune's ``FailureConfig(max_failures)``
retries it from that checkpoint.

How the signal reaches the loop (:class:`SigtermWatch`):

- in a process's main thread (``engine.train``, a test): a SIGTERM handler that only sets a flag;
- in any other thread (a Ray Tune function trainable and a Ray Train worker run the loop in a daemon
  thread): only the main thread may install handlers, and Ray's own handler there raises ``SystemExit``
  (``ray._private.worker.main_loop``). The interpreter then runs its ``atexit`` hooks while daemon threads
  still run, so the watch registers one that sets the flag and waits (at most ``grace_s``) until the loop
  has saved at its next step boundary. It waits only while the loop is taking steps, not while it is
  blocked in a report.

Under DDP the ranks must save at the same step (the FLOP tally's flush is a collective, and the steps that
follow must match): the step cadence is the same on every rank; the clock and the flag differ, so the ranks
OR them over the gloo group every :data:`AGREE_STEPS` steps (a host collective, no GPU sync).
"""

from __future__ import annotations

import atexit
import signal
import threading
import time
from typing import Any

from engine.config import CheckpointConfig
from engine.errors import PREEMPTED_EXIT_CODE

__all__ = ["AGREE_STEPS", "GRACE_S", "PREEMPTED_EXIT_CODE", "CheckpointPolicy", "SigtermWatch"]
# under DDP, how often (optimizer steps) the ranks agree on a time- or signal-triggered save
AGREE_STEPS = 16
# how long a dying Ray worker waits for the loop to reach its next step boundary and save
GRACE_S = 60.0


class SigtermWatch:
    """A flag raised by SIGTERM (or by the process exiting while the loop takes steps); see the module docstring."""

    def __init__(self, grace_s: float = GRACE_S) -> None:
        self.grace_s = grace_s
        self.requested = threading.Event()
        self.saved = threading.Event()
        self.in_steps = False  # the loop is between reports, taking steps (only then is a save worth waiting for)
        self._previous: Any = None
        self._mode: str | None = None

    def __enter__(self) -> SigtermWatch:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._on_signal)
            self._mode = "signal"
        else:
            atexit.register(self._at_exit)
            self._mode = "atexit"
        return self

    def __exit__(self, *exc: object) -> None:
        if self._mode == "signal":
            signal.signal(signal.SIGTERM, self._previous)
        elif self._mode == "atexit":
            atexit.unregister(self._at_exit)
        self._mode = None

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.requested.set()

    def _at_exit(self) -> None:
        if self.in_steps:
            self.requested.set()
            self.saved.wait(self.grace_s)


class CheckpointPolicy:
    """Says after which steps the main run saves mid-epoch (``config.checkpoint``, plus a SIGTERM)."""

    def __init__(self, config: CheckpointConfig, dist: Any = None, group: Any = None,
                 watch: SigtermWatch | None = None, clock: Any = time.monotonic) -> None:
        """``dist``: the loop's ``DistContext`` or None; ``group``: a gloo group for the ranks' agreement (None: the
        default group)."""
        self.every_steps = config.every_steps
        self.every_s = None if config.every_minutes is None else 60.0 * float(config.every_minutes)
        self.watch = watch
        self.clock = clock
        self._active = dist is not None and dist.active
        self._group = group
        self._last_step = 0
        self._last_time = clock()
        self.preempted = False  # the save that is due was asked for by a SIGTERM: stop after it

    def mark_saved(self, step: int) -> None:
        """A checkpoint was written at ``step`` (any kind: cadence, rung, epoch end): the cadence restarts."""
        self._last_step = int(step)
        self._last_time = self.clock()

    def due(self, step: int) -> bool:
        """After optimizer step ``step``: save now? (A collective every :data:`AGREE_STEPS` steps under DDP.)"""
        by_steps = self.every_steps is not None and step - self._last_step >= self.every_steps
        if self._active and step % AGREE_STEPS:
            return by_steps
        signalled = self.watch is not None and self.watch.requested.is_set()
        by_time = self.every_s is not None and self.clock() - self._last_time >= self.every_s
        if self._active:
            signalled, by_time = self._any_rank(signalled, by_time)
        self.preempted = signalled
        return by_steps or by_time or signalled

    def _any_rank(self, *flags: bool) -> tuple[bool, ...]:
        import torch
        import torch.distributed as tdist

        value = torch.tensor([int(f) for f in flags], dtype=torch.int64)  # a host tensor over gloo: no device sync
        tdist.all_reduce(value, op=tdist.ReduceOp.MAX, group=self._group)
        return tuple(bool(v) for v in value.tolist())
