"""The training loop of one trial: data → model → AdamW steps → metrics, FLOPs, checkpoints.

No Ray and no MLflow in here: the caller passes a :class:`~engine.metrics.Reporter` (the CLI's prints and writes
JSON lines, the sweep's calls Ray) and, for data parallelism, a :class:`DistContext` for a process group it has
already initialized. :class:`Trial` puts together parts with one job each (docs/design.md, *The loop*): the data
(:mod:`~engine.loop.trial_data`), what a checkpoint holds (:mod:`~engine.loop.state`), the batches on the device
(:mod:`~engine.loop.feed`), one optimizer step (:mod:`~engine.loop.step`), scores (:mod:`~engine.loop.evaluation`),
when to stop (:mod:`~engine.loop.budget`, :mod:`~engine.loop.early_stop`) and to save inside an epoch
(:mod:`~engine.loop.preemption`), where reports go (:mod:`~engine.loop.report_log`); and it runs the epochs.
The compute axis's rung cooldowns (:mod:`~engine.loop.cooldown`) drive it through its public methods.

Order of events: build everything from ``config.seed`` → resume from ``run_dir/checkpoint.pt`` if present →
otherwise evaluate the untrained model (epoch 0), checkpoint and report → each epoch: shuffle, pack batches by atom
budget, one optimizer step per global batch (sharded across ranks by atoms), then evaluate, checkpoint, report.
Inside an epoch it also saves at every rung, every ``checkpoint.every_steps`` steps or ``every_minutes``, and at
the step after a SIGTERM (then :class:`~engine.errors.Preempted`); a resumed run rebuilds the epoch's batches and
skips the done ones, unread. A NaN/inf loss stops the trial as diverged.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from engine import metrics as M
from engine.config import TrialConfig
from engine.data.graph import Batch, EpochBatches
from engine.errors import Preempted
from engine.loop import checkpoint as ckpt_io
from engine.loop.budget import Budget
from engine.loop.cooldown import RungCooldowns
from engine.loop.devices import DistContext, autocast_context, resolve_device
from engine.loop.evaluation import Evaluator, evaluate
from engine.loop.feed import RankShards, batch_stream, local_shard
from engine.loop.flop_tally import FlopTally
from engine.loop.flops import FlopAccountant
from engine.loop.loss import ErrorSums
from engine.loop.preemption import CheckpointPolicy, SigtermWatch
from engine.loop.report_log import ReportLog
from engine.loop.state import TrialState, build_model, seed_everything
from engine.loop.step import StepContext, masked_copy, train_step
from engine.loop.trial_data import TrialData, read_splits, trial_normalization

__all__ = ["DistContext", "RankShards", "StepContext", "Trial", "autocast_context", "batch_stream", "evaluate",
           "local_shard", "resolve_device", "run_trial", "seed_everything", "train_step"]

# on a GPU, how often (optimizer steps) the host reads the device's "loss still finite" flag (see train_epoch)
FINITE_CHECK_STEPS = 16


class Trial:
    """One running trial: its parts, and the epochs; :func:`run_trial` runs it."""

    def __init__(self, config: TrialConfig, run_dir: Path, reporter: M.Reporter | None, dist: DistContext | None,
                 splits: Any, dtype: torch.dtype) -> None:
        self.config, self.run_dir, self.dtype = config, run_dir, dtype
        self.dist = dist if dist is not None and dist.active else None
        self.is_main = self.dist is None or self.dist.rank == 0
        if config.threads:
            torch.set_num_threads(int(config.threads))
        self.device = torch.device(dist.device) if dist is not None else resolve_device(config.device)
        generator = seed_everything(config.seed)  # before anything draws: the model's initial weights come next
        splits = read_splits(config, splits, progress=self.is_main)
        self.normalization = trial_normalization(config, splits)  # the dataset's: shared by every train size
        model = build_model(config, self.normalization, self.device, dtype)
        self.model_config = dataclasses.asdict(model.config)
        self.data = TrialData(config, splits, model.config)  # graphs for the model's cutoff and neighbor cap
        # compute axis: the main run holds the peak; rung cooldowns are branches (engine.loop.cooldown)
        self.rungs = RungCooldowns.for_config(config)
        self.state = TrialState(config, model, self.device, generator, hold=self.rungs is not None)
        # DDP: the ranks' FLOPs are summed every step only when a budget or a rung reads them (engine.loop.flop_tally)
        self.flop_tally = FlopTally(self.dist, per_step=config.max_flops is not None or self.rungs is not None)
        # saves inside an epoch: config.checkpoint's step/time cadence and a SIGTERM (engine.loop.preemption)
        self.watch = SigtermWatch()
        self.checkpoints = CheckpointPolicy(config.checkpoint, self.dist, self.flop_tally.group, self.watch)
        self.budget = Budget(config)
        self.evaluator = Evaluator(config, model, self.state.ema, self.device, dtype, self.dist, self.stream)
        self.log = ReportLog(run_dir, reporter, self.is_main, self.watch)
        wrapped: nn.Module = model
        if self.dist is not None:
            from torch.nn.parallel import DistributedDataParallel

            device_ids = [self.device.index] if self.device.type == "cuda" else None
            wrapped = DistributedDataParallel(model, device_ids=device_ids)
        s = self.state
        self.step_ctx = StepContext(model=wrapped, module=model, optimizer=s.optimizer, config=config,
                                    device=self.device, dtype=dtype, scaler=s.scaler, ema=s.ema, dist=self.dist,
                                    flops=FlopAccountant())
        self.n_params = model.num_parameters()
        self.checkpoint_path = run_dir / ckpt_io.FILENAME
        self._t_mark = time.perf_counter()  # wall_s counts up to here

    # -- checkpoints and reports -------------------------------------------------------------
    def save(self) -> None:
        """Write ``run_dir/checkpoint.pt`` (rank 0; one file, replaced atomically: nothing older to prune)."""
        self.checkpoints.mark_saved(self.state.step)
        if self.is_main:
            self.state.save(self.checkpoint_path, self.config, self.model_config, self.normalization)

    def clock(self) -> None:
        """Add the time since the last mark to ``wall_s``."""
        now = time.perf_counter()
        self.state.wall_s += now - self._t_mark
        self._t_mark = now

    def record(self, metrics: dict[str, float], save: bool = True, cooldown_flops: int = 0,
               cooldown_structures: int = 0) -> dict[str, Any]:
        """Append a report, checkpoint (``save``), then write and report it. ``cooldown_*``: a rung's own cooldown
        branch, part of its coordinate (the model scored was trained with the main run plus that branch)."""
        s = self.state
        s.flops_cum += self.flop_tally.flush()  # every rank records each report: the ranks' FLOPs summed here
        self.clock()
        row: dict[str, Any] = {
            M.REPORT: len(s.history), M.EPOCH: s.epoch, M.STEP: s.step,
            M.FLOPS_CUM: float(s.flops_cum + cooldown_flops),
            M.FLOPS_SPENT: float(s.flops_cum + s.flops_cooldown),  # every cooldown branch so far
            M.WALL_S: s.wall_s, M.LR: s.scheduler.lr, M.TRAIN_SIZE: self.data.train_size, M.N_PARAMS: self.n_params,
            M.EPOCHS_RUN: (s.structures_seen + cooldown_structures) / max(self.data.train_size, 1),
            M.FLOPS_FALLBACK: float(self.step_ctx.flops is not None and self.step_ctx.flops.count_all),
            **metrics,
        }
        s.history.append(row)
        if save:
            self.save()
        self.log.write(row, self.checkpoint_path)
        return row

    def save_in_epoch(self) -> None:
        """A checkpoint at this step boundary without a report (config.checkpoint's cadence, or a SIGTERM: then the
        trial stops here with :class:`Preempted`)."""
        self.state.flops_cum += self.flop_tally.flush()  # a collective: every rank saves at the same step
        self.clock()
        self.save()
        self.log.checkpoint_saved()
        if self.checkpoints.preempted:
            self.watch.saved.set()
            raise Preempted(f"SIGTERM: checkpoint saved at step {self.state.step} (epoch {self.state.epoch}); run "
                            f"the trial again with the same run folder to resume from the next batch")

    # -- what the cooldown branches use too ------------------------------------------------
    def budget_spent(self) -> bool:
        return self.budget.spent(self.state.step, self.state.flops_cum)

    def evaluate_val(self) -> dict[str, float]:
        """Validation metrics of the weights in use (the EMA average when on)."""
        return self.evaluator.score(self.data.val_set, "val")

    @staticmethod
    def stream(*args: Any) -> Iterator[Batch]:
        """:func:`batch_stream`, looked up here at each call: the one path of batches to the device (train, eval)."""
        return batch_stream(*args)

    def feed(self, batches: EpochBatches) -> Iterator[tuple[np.ndarray, Batch]]:
        """Each global batch of ``batches`` and this rank's shard of it on the device (:func:`batch_stream`); the main
        run and the rung cooldowns both train from here. Closing it (or leaving a loop early) stops the workers."""
        train = self.data.train_set
        stream = self.stream(train, RankShards(train, batches, self.dist), self.config, self.dtype, self.device)
        try:
            yield from zip(batches, stream, strict=True)
        finally:
            stream.close()

    def train_batch(self, idx: Sequence[int], prepared: Batch | None = None) -> tuple[torch.Tensor, int]:
        """One optimizer step on global batch ``idx`` (``prepared``: this rank's shard on the device, by :meth:`feed`):
        its global error-sum vector, left on the device (no host sync), and the FLOPs to add to ``flops_cum`` now
        (all ranks', or 0 under DDP without a FLOP budget or rungs: :class:`FlopTally` sums them at the report)."""
        mine, dummy = local_shard(self.data.train_set, idx, self.dist)
        batch = prepared if prepared is not None else self.data.train_set.batch(mine, dtype=self.dtype).to(self.device)
        sums, flops = train_step(self.step_ctx, masked_copy(batch) if dummy else batch)
        return sums.as_vector(), self.flop_tally.step(flops)

    def finish(self, metrics: dict[str, float]) -> dict[str, float]:
        """The last report: diverged epoch, or the final weights (best under early stopping) on val and test."""
        s = self.state
        s.finished = True
        if s.diverged:
            return {**metrics, M.DIVERGED_EPOCH: float(s.epoch)}
        out = dict(metrics)
        if s.early_stop.restore_best(s.epoch, s.model, s.ema):  # score the best weights, not the last ones
            out.update(self.evaluate_val())
        if s.early_stop.best_epoch is not None:
            out[M.BEST_EPOCH] = float(s.early_stop.best_epoch)
        final, probe_s = self.evaluator.final(self.data.test_set(), self.data.val_set.records,
                                              probes=self.config.probes.enabled and self.is_main)
        s.wall_s -= probe_s  # the caller adds the epoch's elapsed time, probes included
        return {**out, **final}

    # -- the loop ------------------------------------------------------------------------
    def initial_report(self) -> None:
        """Epoch 0: the untrained model on a train prefix (no running average yet) and on validation."""
        self._t_mark = time.perf_counter()
        metrics = self.evaluator.score(self.data.train_probe, "train", ema=False)
        self.record({**metrics, **self.evaluate_val(), M.THROUGHPUT_STRUCT_S: 0.0, M.THROUGHPUT_ATOMS_S: 0.0})

    def train_epoch(self) -> dict[str, float]:
        cfg, s = self.config, self.state
        t0 = self._t_mark = time.perf_counter()
        resumed = s.resume_position is not None
        pos = s.position = s.start_epoch()
        sizes = self.data.train_sizes
        order = s.generator.permutation(len(self.data.train_set))
        batches = EpochBatches(sizes, cfg.batch_size, cfg.max_atoms_per_batch, order)  # packed in numpy, sliced lazily
        on_batch = self.log.batch_hook()
        # error sums stay on the device; the host reads them once per report (epoch end). Divergence (a NaN/inf
        # loss stops the trial) reads one device flag: every step on CPU (free), every FINITE_CHECK_STEPS steps
        # and at the epoch's end on a GPU, so a diverged trial may take up to FINITE_CHECK_STEPS − 1 extra steps
        epoch_sums = pos.error_sums = pos.error_sums.to(self.device)
        check_every = 1 if self.device.type == "cpu" else FINITE_CHECK_STEPS
        start = pos.batches_done
        if resumed and self.rungs is not None:
            self.rungs.after_step(self)  # rungs the last step passed whose scoring the pause cut short
        if resumed and (s.finished or self.budget_spent()):
            start = len(batches)  # the uninterrupted run stopped training at that step
        feed = self.feed(batches[start:])  # a resumed epoch reads only the batches it has not done
        self.watch.in_steps = True
        try:
            for k, (idx, batch) in enumerate(feed, start=start):
                s.scheduler.set_progress(self.budget.progress(s.step, s.epoch, k, len(batches), s.flops_cum))
                step_sums, flops = self.train_batch(idx, batch)
                s.flops_cum += flops
                s.step += 1
                epoch_sums += step_sums
                pos.batches_done = k + 1
                pos.structures += len(idx)
                pos.atoms += int(sizes[idx].sum())
                s.structures_seen += len(idx)
                if on_batch is not None:
                    on_batch(s.epoch, k + 1, len(batches), s.step)
                if (s.step % check_every == 0 or k + 1 == len(batches)) and not bool(torch.isfinite(epoch_sums).all()):
                    s.diverged = True  # NaN/inf loss: the weights are lost; stop here
                    break
                if self.rungs is not None:
                    self.rungs.after_step(self)  # a rung checkpoints this position, then reports
                if s.finished or self.budget_spent():
                    break
                if self.checkpoints.due(s.step):
                    self.save_in_epoch()  # at the step's position: a resume takes the next batch
        finally:
            self.watch.in_steps = False
            feed.close()  # stops DataLoader workers when the epoch ends early
        s.position = None  # from here on a checkpoint is an epoch end's
        if not s.diverged and not bool(torch.isfinite(epoch_sums).all()):
            s.diverged = True  # a budget stop between two checks
        train_s = time.perf_counter() - t0
        if self.rungs is not None and not s.diverged:  # compute axis: only the (annealed) rungs report
            if self.budget.out_of_epochs(s.epoch):
                self.rungs.end_of_epochs(self)
            self.clock()
            s.flops_cum += self.flop_tally.flush()  # (0: rungs sum every step) before the count is saved
            self.save()
            return dict(s.history[-1])
        metrics = self.evaluator.metrics(ErrorSums.from_vector(epoch_sums.cpu()), "train")
        metrics.update(self.evaluate_val())
        metrics[M.THROUGHPUT_STRUCT_S] = pos.structures / train_s if train_s > 0 else 0.0
        metrics[M.THROUGHPUT_ATOMS_S] = pos.atoms / train_s if train_s > 0 else 0.0
        if not math.isfinite(metrics[M.VAL_LOSS]) or not math.isfinite(metrics[M.split_key("train", M.LOSS)]):
            s.diverged = True
        patience_out = not s.diverged and s.early_stop.update(metrics[M.VAL_LOSS], s.epoch, s.model, s.ema)
        if s.diverged or patience_out or self.budget_spent() or self.budget.out_of_epochs(s.epoch):
            metrics = self.finish(metrics)
        return self.record(metrics)

    def run(self) -> dict[str, Any]:
        with self.watch:  # a SIGTERM from here on saves at the next step boundary, then stops (Preempted)
            self.run_dir.mkdir(parents=True, exist_ok=True)
            resumed = self.state.resume(self.checkpoint_path, self.config, self.model_config, self.device)
            self.log.write_config(dict(self.config.to_dict(), model_config=dict(self.model_config)))
            if resumed:
                self.log.rewrite(self.state.history)  # the reports up to the checkpoint, none after
            else:
                self.log.start()
                self.initial_report()
            s = self.state
            # a checkpoint taken inside an epoch (at a rung) finishes that epoch first, even its last one
            while not s.finished and (s.resume_position is not None
                                      or (not self.budget.out_of_epochs(s.epoch) and not self.budget_spent())):
                self.train_epoch()
            return dict(s.history[-1])


def run_trial(config: TrialConfig, run_dir: str | Path, reporter: M.Reporter | None = None,
              dist: DistContext | None = None, *, splits: Any = None,
              dtype: torch.dtype = torch.float32) -> dict[str, Any]:
    """Train one model as ``config`` says, in ``run_dir``; return the final metrics.

    Resumes from ``run_dir/checkpoint.pt`` when present. Reports epoch 0 (the untrained model) and then every
    epoch (or, on the compute axis, every rung); stops early once ``config.max_flops`` is passed. Only rank 0
    writes files and reports. ``splits`` (an object with ``train``/``val`` record lists) bypasses
    :func:`engine.data.dataset.load_splits`; ``dtype`` sets the model's float type (float64 in exactness tests).
    """
    return Trial(config, Path(run_dir), reporter, dist, splits, dtype).run()
