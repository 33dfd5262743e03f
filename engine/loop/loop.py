"""The training loop of one trial: data → model → AdamW steps → metrics, FLOPs, checkpoints.

No Ray and no MLflow in here: the caller passes a :class:`~engine.metrics.Reporter` (the CLI's
prints and writes JSON lines, the sweep's calls Ray) and, for data parallelism, a
:class:`DistContext` for a process group it has already initialized.

Order of events: build everything from ``config.seed`` → resume from ``run_dir/checkpoint.pt``
if present → otherwise evaluate the untrained model (epoch 0), checkpoint and report → for each
epoch: shuffle (numpy Generator), pack batches by atom budget, one optimizer step per global
batch (sharded across ranks by atoms), then evaluate, checkpoint, report. A resumed run restores
weights, optimizer, schedule, scaler, EMA, RNG streams (the model's own generators too: EquiformerV2's
edge rolls) and the shuffle generator, so it continues exactly as an uninterrupted one; evaluation
draws the model's generators from a fixed seed and puts the training state back (:func:`evaluate`).
Inside an epoch a trial also checkpoints at every rung (compute axis), every ``checkpoint.every_steps``
steps or ``checkpoint.every_minutes`` minutes, and at the step after a SIGTERM, after which it stops
with :class:`~engine.errors.Preempted` (:mod:`engine.loop.preemption`). Such a checkpoint holds the
shuffle generator's state at the epoch's start and the batches done, and the resumed run rebuilds the
same batches, skips the done ones (unread) and finishes the epoch.

How long it trains is ``config.budget`` (:class:`~engine.config.BudgetConfig`): ``epochs``, a fixed
number of optimizer ``steps`` (the schedule spans them), or ``early_stop`` (patience on the validation
loss; the best weights are restored at the end). A loss that becomes NaN/inf stops the trial as
diverged (``diverged_epoch`` in its last report). The last report also scores the weights the trial
ends with (EMA when on, the best under early stopping) on the test split (``test_*``). The target
normalization is the dataset's (``splits.normalization``), shared by every training-set size.
With ``data.lazy`` the splits are views of ``.aselmdb`` rows and batches come from DataLoader workers
(:func:`batch_stream`); training error sums stay on the device until a report reads them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import models
from engine import metrics as M
from engine import paths
from engine.config import TrialConfig
from engine.data.graph import Batch, EpochBatches, GraphDataset, GraphSpec
from engine.data.lazy import LazyGraphDataset, LazySubset, batch_loader
from engine.data.store import cached_graph_dataset
from engine.errors import ConfigError, DataError, Preempted
from engine.loop import checkpoint as ckpt_io
from engine.loop import precision
from engine.loop.cooldown import RungCooldowns
from engine.loop.ema import EMA
from engine.loop.flop_tally import FlopTally
from engine.loop.flops import FlopAccountant, FlopCounter, batch_features
from engine.loop.loss import ErrorSums, error_metrics, error_sums, weighted_loss
from engine.loop.preemption import CheckpointPolicy, SigtermWatch
from engine.loop.sampler import shard_by_atoms
from engine.loop.schedule import LRSchedule, trial_progress
from models.base import Normalization, Potential


@dataclass
class DistContext:
    """An already-initialized ``torch.distributed`` process group as seen by this process."""

    rank: int
    world_size: int
    device: torch.device | str

    @property
    def active(self) -> bool:
        return self.world_size > 1


# on a GPU, how often (optimizer steps) the host reads the device's "loss still finite" flag (see train_epoch)
FINITE_CHECK_STEPS = 16


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


def _all_reduce(vec: torch.Tensor, dist: DistContext | None) -> torch.Tensor:
    """Sum ``vec`` over ranks (in place on a copy); identity without a process group."""
    if dist is None or not dist.active:
        return vec
    import torch.distributed as tdist

    out = vec.clone()
    tdist.all_reduce(out)
    return out


def _masked_copy(batch: Batch) -> Batch:
    """The same structures with every label masked out: a zero-loss stand-in for an empty shard."""
    return dataclasses.replace(
        batch,
        energy_mask=torch.zeros_like(batch.energy_mask),
        forces_mask=torch.zeros_like(batch.forces_mask),
        stress_mask=torch.zeros_like(batch.stress_mask),
    )


def local_shard(dataset: GraphDataset, indices: Sequence[int], dist: DistContext | None) -> tuple[list[int], bool]:
    """This rank's part of a global batch (atom-balanced), and whether it is a masked stand-in."""
    indices = np.asarray(indices).tolist()
    if dist is None or not dist.active:
        return indices, False
    counts = getattr(dataset, "atom_counts", None)  # a lazy dataset knows them without reading records
    sizes = counts(indices) if counts is not None else [int(dataset.records[k].n_atoms) for k in indices]
    shards = shard_by_atoms(sizes, dist.world_size)
    mine = [indices[p] for p in shards[dist.rank]]
    if mine:
        return mine, False
    smallest = min(range(len(indices)), key=lambda p: (sizes[p], indices[p]))
    return [indices[smallest]], True


class RankShards:
    """This rank's part of each of ``batches`` (:func:`local_shard`), made when it is reached: what
    :func:`batch_stream` (and a DataLoader's batch sampler) reads, never a list over the epoch."""

    def __init__(self, dataset: GraphDataset | LazyGraphDataset, batches: Sequence[Sequence[int]],
                 dist: DistContext | None) -> None:
        self.dataset, self.batches, self.dist = dataset, batches, dist

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[list[int]]:
        for idx in self.batches:
            yield local_shard(self.dataset, idx, self.dist)[0]


def batch_stream(
    dataset: GraphDataset | LazyGraphDataset,
    index_lists: Sequence[Sequence[int]],
    config: TrialConfig,
    dtype: torch.dtype,
    device: torch.device,
) -> Iterator[Batch]:
    """The batches of ``index_lists``, in order, on ``device``.

    A lazy dataset with ``data.num_workers > 0`` is read by DataLoader workers (rows, neighbor lists and
    collation there, ``data.prefetch_factor`` batches ahead each; pinned memory and a non-blocking copy
    on CUDA); otherwise each batch is built here when asked. Close the generator to stop the workers early.
    """
    workers = config.data.num_workers
    if isinstance(dataset, LazyGraphDataset) and workers > 0 and len(index_lists):
        pin = device.type == "cuda"
        loader = batch_loader(dataset, index_lists, workers, config.data.prefetch_factor, dtype, pin_memory=pin)
        # the workers' base seed comes from a generator of its own, not torch's global one: reading data must not
        # move the trial's RNG (a run resumed mid-epoch builds one loader more than an uninterrupted one)
        loader.generator = torch.Generator().manual_seed(int(config.seed))
        for batch in loader:
            yield batch.to(device, non_blocking=pin)
        return
    for idx in index_lists:
        yield dataset.batch(idx, dtype=dtype).to(device)


@dataclass
class StepContext:
    """What one optimizer step needs (shared by the loop and the benchmarks)."""

    model: nn.Module  # the (possibly DDP-wrapped) module called for the forward pass
    module: Potential  # the bare model (normalization, parameters, EMA)
    optimizer: torch.optim.Optimizer
    config: TrialConfig
    device: torch.device
    dtype: torch.dtype
    scaler: torch.amp.GradScaler | None = None
    ema: EMA | None = None
    dist: DistContext | None = None
    flops: FlopAccountant | None = None  # None: count every step with the FLOP counter


def train_step(ctx: StepContext, batch: Batch) -> tuple[ErrorSums, int]:
    """One forward + backward + AdamW step on this rank's shard of a global batch.

    The loss divides this rank's error sums by counts summed over all ranks, times the world size
    (DDP averages gradients), so the gradient equals that of the global batch's mean loss.
    Returns the detached global error sums and this rank's FLOPs (0 when ``count_flops`` is off).
    """
    cfg = ctx.config
    ctx.model.train()
    ctx.optimizer.zero_grad(set_to_none=True)
    world = ctx.dist.world_size if ctx.dist is not None and ctx.dist.active else 1
    features = batch_features(batch.n_atoms, int(batch.edge_index.shape[1]))
    counting = cfg.count_flops and (ctx.flops is None or ctx.flops.must_count(features))
    with FlopCounter(enabled=counting) as counter:
        with autocast_context(ctx.device, cfg.amp):
            output = ctx.model(batch)
        sums = error_sums(output, batch)
        global_sums = ErrorSums.from_vector(_all_reduce(sums.as_vector(), ctx.dist))
        loss = (
            weighted_loss(
                sums,
                cfg.loss,
                float(ctx.module.forces_scale),
                float(ctx.module.stress_scale),
                counts=global_sums,
            )
            * world
        )
        if ctx.scaler is not None:
            ctx.scaler.scale(loss).backward()
        else:
            loss.backward()
    if ctx.scaler is not None:
        ctx.scaler.unscale_(ctx.optimizer)
    if cfg.optim.grad_clip and cfg.optim.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(ctx.module.parameters(), cfg.optim.grad_clip)
    if ctx.scaler is not None:
        ctx.scaler.step(ctx.optimizer)
        ctx.scaler.update()
    else:
        ctx.optimizer.step()
    if ctx.ema is not None:
        ctx.ema.update(ctx.module)
    flops = counter.total
    if cfg.count_flops and ctx.flops is not None:
        flops = ctx.flops.record(features, counter.total if counting else None)
    return global_sums, flops


def evaluate(
    module: Potential,
    dataset: GraphDataset,
    config: TrialConfig,
    device: torch.device,
    dtype: torch.dtype,
    dist: DistContext | None = None,
) -> ErrorSums:
    """Error sums of ``module`` over ``dataset`` (eval mode; batches sharded over ranks, summed).

    The model's private generators (EquiformerV2's edge rolls) run from ``config.seed`` here and are put back
    after: a score depends only on the weights, and evaluating does not move the training stream (so a
    cooldown branch or a resume, which evaluate at other times, leave training bit for bit the same).
    """
    module.eval()
    total = torch.zeros(len(dataclasses.fields(ErrorSums)), dtype=torch.float64)
    need_grad = module.force_mode == "conservative"  # forces are −∂E/∂x even at evaluation
    training_rng = module.rng_state()
    module.seed_generators(config.seed)
    try:
        if len(dataset):
            batches = EpochBatches(dataset.sizes(), config.batch_size, config.max_atoms_per_batch)
            shards = [mine for mine, dummy in (local_shard(dataset, idx, dist) for idx in batches) if not dummy]
            for batch in batch_stream(dataset, shards, config, dtype, device):
                with torch.set_grad_enabled(need_grad), autocast_context(device, config.amp):
                    output = module(batch)
                total += error_sums(output, batch).as_vector().cpu()
    finally:
        module.set_rng_state(training_rng)
    return ErrorSums.from_vector(_all_reduce(total.to(device), dist).cpu())


def seed_everything(seed: int) -> np.random.Generator:
    """Seed torch, Python and numpy's legacy state; return the Generator that shuffles the data."""
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    return np.random.default_rng(seed)


def _load_splits(config: TrialConfig, progress: bool):
    from engine.data.dataset import load_splits

    return load_splits(config.data, progress=progress)


def _trial_normalization(config: TrialConfig, splits: Any) -> Normalization:
    """The dataset's normalization carried by ``splits``; for a hand-made splits object without one, the
    saved ``data.normalization_file``, else a fit on its training records."""
    norm = getattr(splits, "normalization", None)
    if norm is not None:
        return norm
    if config.data.normalization_file and Path(config.data.normalization_file).is_file():
        return Normalization.load(config.data.normalization_file)
    from engine.data.normalize import fit_normalization

    return fit_normalization(list(splits.train))


@dataclass
class _EpochPosition:
    """Where the main run is inside an epoch: what a checkpoint taken there (at a rung) needs to finish it."""

    generator_state: dict  # the shuffle generator's state at the epoch's start (its permutation is drawn again)
    batches_done: int
    error_sums: torch.Tensor  # the epoch's running train error sums (its divergence check; a diverged row's train_*)
    structures: int = 0  # this epoch's structures and atoms so far (throughput)
    atoms: int = 0

    def to_dict(self) -> dict:
        return {"generator_state": self.generator_state, "batches_done": self.batches_done,
                "error_sums": self.error_sums.detach().cpu(), "structures": self.structures, "atoms": self.atoms}

    @classmethod
    def from_dict(cls, d: dict) -> _EpochPosition:
        return cls(dict(d["generator_state"]), int(d["batches_done"]), d["error_sums"].to(torch.float64),
                   int(d["structures"]), int(d["atoms"]))


class _Trial:
    """State of one running trial; :func:`run_trial` drives it."""

    def __init__(
        self,
        config: TrialConfig,
        run_dir: Path,
        reporter: M.Reporter | None,
        dist: DistContext | None,
        splits: Any,
        dtype: torch.dtype,
    ) -> None:
        self.config = config
        self.run_dir = run_dir
        self.reporter = reporter
        self.dist = dist if dist is not None and dist.active else None
        self.is_main = self.dist is None or self.dist.rank == 0
        self.dtype = dtype
        if config.threads:
            torch.set_num_threads(int(config.threads))
        self.device = torch.device(dist.device) if dist is not None else resolve_device(config.device)
        self.generator = seed_everything(config.seed)

        splits = _load_splits(config, progress=self.is_main) if splits is None else splits
        if not splits.train:
            raise DataError("the training subset is empty; use a larger dataset or --train-size > 0")
        self.lazy = isinstance(splits.train, LazySubset)  # data.lazy: .aselmdb rows read on demand
        val = splits.val if self.lazy else list(splits.val)
        if config.data.max_val is not None and config.data.max_val > 0:
            val = val[: config.data.max_val]
        self.model: Potential = models.build(config.model, config.model_config, preset=config.preset)
        self.model_config = dataclasses.asdict(self.model.config)
        self.normalization = _trial_normalization(config, splits)  # the dataset's: shared by every train size
        self.model.set_normalization(self.normalization)
        if dtype != torch.float32:
            self.model.to(dtype=dtype)
        self.model.to(self.device)
        mc = self.model.config
        spec = GraphSpec(cutoff=float(mc.cutoff), max_neighbors=int(mc.max_neighbors), strict=bool(mc.strict_neighbors))
        # neighbor lists once per structure, cached on disk by (structures, GraphSpec)
        cache = config.data.cache_dir or str(paths.cache_dir())
        self._spec, self._cache = spec, cache
        self.train_set = self._graph_set(splits.train)
        self.train_sizes = self.train_set.sizes()  # atoms per training structure (numpy), packed every epoch
        self.val_set = self._graph_set(val)
        test = getattr(splits, "test", None)
        self._test_records = test if self.lazy else list(test or [])
        if config.data.max_test is not None and self._test_records is not None:  # load_splits caps it; hand-made too
            self._test_records = self._test_records[: config.data.max_test]
        # epoch 0 has no running train average: score the untrained model on a train prefix instead
        n_probe = max(1, min(len(self.train_set), len(val) or 256))
        probe = self.train_set.records[:n_probe]
        self.train_probe = LazyGraphDataset(probe, spec, cache) if self.lazy else GraphDataset(probe, spec)

        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=config.optim.lr, weight_decay=config.optim.weight_decay
        )
        # compute axis: the main run holds the peak; rung cooldowns are branches (engine.loop.cooldown)
        self.rungs = RungCooldowns.for_config(config)
        self.scheduler = LRSchedule(self.optimizer, config.optim, hold=self.rungs is not None)
        # DDP: the ranks' FLOPs are summed every step only when a budget or a rung reads them (engine.loop.flop_tally)
        self.flop_tally = FlopTally(self.dist, per_step=config.max_flops is not None or self.rungs is not None)
        # saves inside an epoch: config.checkpoint's step/time cadence and a SIGTERM (engine.loop.preemption)
        self.watch = SigtermWatch()
        self.checkpoints = CheckpointPolicy(config.checkpoint, self.dist, self.flop_tally.group, self.watch)
        self.scheduler.set_progress(0.0)
        self.scaler = precision.make_grad_scaler(config.amp, self.device)  # fp16 only
        self.ema = EMA(self.model, config.optim.ema_decay) if config.optim.ema_decay else None
        wrapped: nn.Module = self.model
        if self.dist is not None:
            from torch.nn.parallel import DistributedDataParallel

            device_ids = [self.device.index] if self.device.type == "cuda" else None
            wrapped = DistributedDataParallel(self.model, device_ids=device_ids)
        self.step_ctx = StepContext(
            model=wrapped,
            module=self.model,
            optimizer=self.optimizer,
            config=config,
            device=self.device,
            dtype=dtype,
            scaler=self.scaler,
            ema=self.ema,
            dist=self.dist,
            flops=FlopAccountant(),
        )
        self.epoch = 0
        self.step = 0
        self.flops_cum = 0  # main run; with rung_flops the branches' FLOPs are in flops_cooldown
        self.flops_cooldown = 0
        self.wall_s = 0.0
        self.history: list[dict] = []
        self.n_params = self.model.num_parameters()
        self.train_size = len(self.train_set)
        self.structures_seen = 0  # main run, for epochs_run
        # the epoch in progress, while inside one (checkpointed at rungs): see _EpochPosition
        self.position: _EpochPosition | None = None
        self._resume_position: dict | None = None  # a mid-epoch checkpoint's position, until train_epoch uses it
        self._t_mark = time.perf_counter()  # wall_s counts up to here
        self.finished = False  # the last report (test metrics, restored best) is written
        self.diverged = False
        # early stopping: best val_loss so far, its epoch, epochs since, and its weights (model, EMA)
        self.best: dict[str, Any] = {"val_loss": math.inf, "epoch": 0, "bad_epochs": 0, "state": None}

    def _graph_set(self, records: Any) -> GraphDataset | LazyGraphDataset:
        """Lazy: graphs built when a batch is read (in DataLoader workers); else all now, from the disk cache."""
        if self.lazy:
            return LazyGraphDataset(records, self._spec, self._cache)
        return cached_graph_dataset(list(records), self._spec, self._cache)

    # -- files ---------------------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir / ckpt_io.FILENAME

    def resolved_config(self) -> dict:
        cfg = self.config.to_dict()
        cfg["model_config"] = dict(self.model_config)
        return cfg

    def _write_history(self) -> None:
        text = "".join(json.dumps(m, sort_keys=True) + "\n" for m in self.history)
        ckpt_io.atomic_write_text(self.run_dir / "metrics.jsonl", text)

    def save(self) -> None:
        """Write ``run_dir/checkpoint.pt`` (rank 0; one file, replaced atomically: nothing older to prune)."""
        self.checkpoints.mark_saved(self.step)
        if not self.is_main:
            return
        payload = {
            "format": ckpt_io.FORMAT,
            "model": self.config.model,
            "model_config": dict(self.model_config),
            "normalization": self.normalization.to_dict(),
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
            "trial_config": self.config.to_dict(),
            "metrics_history": list(self.history),
            "structures_seen": self.structures_seen,
            "epoch_position": self.position.to_dict() if self.position is not None else None,
            "finished": self.finished,
            "diverged": self.diverged,
            "best": self.best,
        }
        ckpt_io.save_checkpoint(self.checkpoint_path, payload)

    def resume(self) -> bool:
        """Load ``run_dir/checkpoint.pt`` if present; True when resumed."""
        if not self.checkpoint_path.exists():
            return False
        ck = ckpt_io.load_checkpoint(self.checkpoint_path, map_location=self.device)
        ckpt_io.check_compatible(ck, self.config.model, self.model_config, self.config.to_dict(), self.checkpoint_path)
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
        self._resume_position = ck.get("epoch_position")  # None: saved at an epoch's end
        self.finished = bool(ck.get("finished", False))
        self.diverged = bool(ck.get("diverged", False))
        if ck.get("best") is not None:
            self.best = dict(ck["best"])
        rng = dict(ck["rng"])
        self.generator = ckpt_io.restore_numpy_generator(rng.pop("numpy_shuffle"))
        ckpt_io.set_rng_state(rng)
        self.model.set_rng_state(ck.get("model_rng") or {})
        if self.is_main:
            self._write_history()
        return True

    # -- metrics -------------------------------------------------------------------------
    def _evaluate_val(self) -> dict[str, float]:
        return self._evaluate_on(self.val_set, "val")

    def _evaluate_on(self, dataset: GraphDataset, split: str) -> dict[str, float]:
        """Metrics of the weights in use (the EMA average when on) on ``dataset``, prefixed ``split``."""
        ctx = self.ema.swapped(self.model) if self.ema is not None else contextlib.nullcontext()
        with ctx:
            sums = evaluate(self.model, dataset, self.config, self.device, self.dtype, self.dist)
        return error_metrics(sums, self.config.loss, *self._scales(), split=split)

    def _scales(self) -> tuple[float, float]:
        return float(self.model.forces_scale), float(self.model.stress_scale)

    def _clock(self) -> None:
        """Add the time since the last mark to ``wall_s``."""
        now = time.perf_counter()
        self.wall_s += now - self._t_mark
        self._t_mark = now

    def _record(self, metrics: dict[str, float], save: bool = True, cooldown_flops: int = 0,
                cooldown_structures: int = 0) -> dict[str, Any]:
        """Append a report, checkpoint (``save``), then write and report it. ``cooldown_*``: a rung's own cooldown
        branch, part of its coordinate (the model scored was trained with the main run plus that branch)."""
        self.flops_cum += self.flop_tally.flush()  # every rank records each report: the ranks' FLOPs summed here
        self._clock()
        row: dict[str, Any] = {
            M.REPORT: len(self.history),
            M.EPOCH: self.epoch,
            M.STEP: self.step,
            M.FLOPS_CUM: float(self.flops_cum + cooldown_flops),
            M.FLOPS_SPENT: float(self.flops_cum + self.flops_cooldown),  # every cooldown branch so far
            M.WALL_S: self.wall_s,
            M.LR: self.scheduler.lr,
            M.TRAIN_SIZE: self.train_size,
            M.N_PARAMS: self.n_params,
            M.EPOCHS_RUN: (self.structures_seen + cooldown_structures) / max(self.train_size, 1),
            M.FLOPS_FALLBACK: float(self.step_ctx.flops is not None and self.step_ctx.flops.count_all),
            **metrics,
        }
        self.history.append(row)
        if save:
            self.save()
        if self.is_main:
            with open(self.run_dir / "metrics.jsonl", "a") as fh:
                fh.write(json.dumps(row, sort_keys=True) + "\n")
        # a reporter with ``all_ranks = True`` (Ray Train's report is a barrier) is called on every rank
        if self.reporter is not None and (self.is_main or getattr(self.reporter, "all_ranks", False)):
            in_steps, self.watch.in_steps = self.watch.in_steps, False  # a report may block (a paused trial)
            try:
                self.reporter.report(dict(row, **{M.CHECKPOINT: str(self.checkpoint_path)}), str(self.run_dir))
            finally:
                self.watch.in_steps = in_steps
        return row

    def _save_in_epoch(self) -> None:
        """A checkpoint at this step boundary without a report (config.checkpoint's cadence, or a SIGTERM: then the
        trial stops here with :class:`Preempted`). The reporter's ``on_checkpoint(run_dir)``, if any, gets it (rank
        0): remote storage uploads it."""
        self.flops_cum += self.flop_tally.flush()  # a collective: every rank saves at the same step
        self._clock()
        self.save()
        on_checkpoint = getattr(self.reporter, "on_checkpoint", None) if self.is_main else None
        if on_checkpoint is not None:
            on_checkpoint(str(self.run_dir))
        if self.checkpoints.preempted:
            self.watch.saved.set()
            raise Preempted(f"SIGTERM: checkpoint saved at step {self.step} (epoch {self.epoch}); run the trial "
                            f"again with the same run folder to resume from the next batch")

    def _budget_spent(self) -> bool:
        """The trial's training budget is used up (checked after every step and before every epoch)."""
        steps = self.config.budget.steps
        if steps is not None and self.step >= steps:
            return True
        return self.config.max_flops is not None and self.flops_cum >= self.config.max_flops

    def _out_of_epochs(self) -> bool:
        return self.config.budget.steps is None and self.epoch >= self.config.epochs

    def _schedule_progress(self, k: int, n_batches: int) -> float:
        """Fraction of the run done at batch ``k`` of this epoch: steps over ``budget.steps``, else epochs."""
        if self.config.budget.steps is not None:
            return self.step / self.config.budget.steps
        # a FLOP budget drives the schedule (engine.loop.schedule.trial_progress), not the epoch cap
        by_epochs = (self.epoch - 1 + k / n_batches) / self.config.epochs
        return trial_progress(by_epochs, self.flops_cum, self.config.max_flops)

    # -- the end of a trial ----------------------------------------------------------------
    def _early_stop_update(self, val_loss: float) -> bool:
        """Track the best validation loss; True when patience is exhausted."""
        rule = self.config.budget.early_stop
        if rule is None:
            return False
        if val_loss < self.best["val_loss"] - rule.min_delta:
            self.best = {
                "val_loss": float(val_loss),
                "epoch": self.epoch,
                "bad_epochs": 0,
                "state": {
                    "model": {k: v.detach().clone() for k, v in self.model.state_dict().items()},
                    "ema": self.ema.state_dict() if self.ema is not None else None,
                },
            }
            return False
        self.best["bad_epochs"] = int(self.best["bad_epochs"]) + 1
        return self.best["bad_epochs"] >= rule.patience

    def _finish(self, metrics: dict[str, float]) -> dict[str, float]:
        """The last report: diverged epoch, or the final weights (best under early stopping) on val and test."""
        self.finished = True
        if self.diverged:
            return {**metrics, M.DIVERGED_EPOCH: float(self.epoch)}
        out = dict(metrics)
        if self.config.budget.early_stop is not None and self.best["state"] is not None:
            if self.best["epoch"] != self.epoch:  # restore the best weights and score them
                self.model.load_state_dict(self.best["state"]["model"])
                if self.ema is not None and self.best["state"]["ema"] is not None:
                    self.ema.load_state_dict(self.best["state"]["ema"])
                out.update(self._evaluate_val())
            out[M.BEST_EPOCH] = float(self.best["epoch"])
        if self._test_records is not None and len(self._test_records):
            test_set = self._graph_set(self._test_records)
            out.update(self._evaluate_on(test_set, "test"))
            out[M.TEST_STRUCTURES] = float(len(test_set))  # scored: the test split capped at data.max_test
        if self.config.probes.enabled and self.is_main:
            out.update(self._probe())
        return out

    def _probe(self) -> dict[str, float]:
        """Physical probes (engine.loop.probes) of the final weights on validation structures; their time is
        kept out of ``wall_s`` (the caller adds the epoch's elapsed time, probes included)."""
        from engine.loop.probes import probe_model

        t0 = time.perf_counter()
        ctx = self.ema.swapped(self.model) if self.ema is not None else contextlib.nullcontext()
        with ctx:  # the copy takes the weights in use (the EMA average when on)
            out = probe_model(self.model, self.val_set.records, self.config.probes,
                              emt_labels=self.config.data.path is None, seed=self.config.seed, device=self.device)
        self.wall_s -= time.perf_counter() - t0
        return out

    # -- the loop ------------------------------------------------------------------------
    def initial_report(self) -> None:
        self._t_mark = time.perf_counter()
        probe = evaluate(self.model, self.train_probe, self.config, self.device, self.dtype, self.dist)
        metrics = error_metrics(probe, self.config.loss, *self._scales(), split="train")
        metrics.update(self._evaluate_val())
        metrics[M.THROUGHPUT_STRUCT_S] = 0.0
        metrics[M.THROUGHPUT_ATOMS_S] = 0.0
        self._record(metrics)

    def feed(self, batches: EpochBatches) -> Iterator[tuple[np.ndarray, Batch]]:
        """Each global batch of ``batches`` with this rank's shard of it on the device (:func:`batch_stream`: the
        DataLoader workers of a lazy dataset); the main run's epochs and the rung cooldowns both train from here.
        Closing it (or leaving the loop early) stops the workers."""
        stream = batch_stream(self.train_set, RankShards(self.train_set, batches, self.dist), self.config,
                              self.dtype, self.device)
        try:
            yield from zip(batches, stream, strict=True)
        finally:
            stream.close()

    def train_batch(self, idx: Sequence[int], prepared: Batch | None = None) -> tuple[torch.Tensor, int]:
        """One optimizer step on global batch ``idx`` (this rank's shard, or ``prepared``: that shard already on the
        device, from :func:`batch_stream`): its global error-sum vector, left on the device (no host sync), and the
        FLOPs to add to ``flops_cum`` now: all ranks' (summed on the host, :class:`FlopTally`), or under DDP without
        a FLOP budget or rungs 0, this rank's being kept until the next report sums them.
        """
        mine, dummy = local_shard(self.train_set, idx, self.dist)
        batch = prepared if prepared is not None else self.train_set.batch(mine, dtype=self.dtype).to(self.device)
        sums, flops = train_step(self.step_ctx, _masked_copy(batch) if dummy else batch)
        return sums.as_vector(), self.flop_tally.step(flops)

    def _start_epoch(self) -> _EpochPosition:
        """A new epoch's position, or the one a mid-epoch checkpoint saved (the epoch is not counted again)."""
        saved, self._resume_position = self._resume_position, None
        if saved is None:
            self.epoch += 1
            return _EpochPosition(ckpt_io.numpy_generator_state(self.generator), 0,
                                  torch.zeros(len(dataclasses.fields(ErrorSums)), dtype=torch.float64))
        position = _EpochPosition.from_dict(saved)
        # the epoch's permutation is drawn again from the generator's state at its start: same batches, and the
        # generator ends where the uninterrupted run's did
        self.generator = ckpt_io.restore_numpy_generator(dict(position.generator_state))
        return position

    def train_epoch(self) -> dict[str, float]:
        cfg = self.config
        t0 = self._t_mark = time.perf_counter()
        resumed = self._resume_position is not None
        pos = self.position = self._start_epoch()
        order = self.generator.permutation(len(self.train_set))
        sizes = self.train_sizes
        batches = EpochBatches(sizes, cfg.batch_size, cfg.max_atoms_per_batch, order)  # packed in numpy, sliced lazily
        on_batch = getattr(self.reporter, "on_batch", None) if self.is_main else None
        # error sums stay on the device; the host reads them once per report (epoch end). Divergence (a NaN/inf
        # loss stops the trial) reads one device flag: every step on CPU (free), every FINITE_CHECK_STEPS steps
        # and at the epoch's end on a GPU, so a diverged trial may take up to FINITE_CHECK_STEPS − 1 extra steps
        epoch_sums = pos.error_sums = pos.error_sums.to(self.device)
        check_every = 1 if self.device.type == "cpu" else FINITE_CHECK_STEPS
        start = pos.batches_done
        if resumed and self.rungs is not None:
            self.rungs.after_step(self)  # rungs the last step passed whose scoring the pause cut short
        if resumed and (self.finished or self._budget_spent()):
            start = len(batches)  # the uninterrupted run stopped training at that step
        # a resumed epoch reads only the batches it has not done (a lazy dataset never decodes the others)
        feed = self.feed(batches[start:])
        self.watch.in_steps = True
        try:
            for k, (idx, batch) in enumerate(feed, start=start):
                self.scheduler.set_progress(self._schedule_progress(k, len(batches)))
                step_sums, flops = self.train_batch(idx, batch)
                self.flops_cum += flops
                self.step += 1
                epoch_sums += step_sums
                pos.batches_done = k + 1
                pos.structures += len(idx)
                pos.atoms += int(sizes[idx].sum())
                self.structures_seen += len(idx)
                if on_batch is not None:
                    on_batch(self.epoch, k + 1, len(batches), self.step)
                if (self.step % check_every == 0 or k + 1 == len(batches)) and not bool(
                    torch.isfinite(epoch_sums).all()
                ):
                    self.diverged = True  # NaN/inf loss: the weights are lost; stop here
                    break
                if self.rungs is not None:
                    self.rungs.after_step(self)  # a rung checkpoints this position, then reports
                if self.finished or self._budget_spent():
                    break
                if self.checkpoints.due(self.step):
                    self._save_in_epoch()  # at the step's position: a resume takes the next batch
        finally:
            self.watch.in_steps = False
            feed.close()  # stops DataLoader workers when the epoch ends early
        self.position = None  # from here on a checkpoint is an epoch end's
        if not self.diverged and not bool(torch.isfinite(epoch_sums).all()):
            self.diverged = True  # a budget stop between two checks
        epoch_sums = epoch_sums.cpu()
        n_struct, n_atoms = pos.structures, pos.atoms
        train_s = time.perf_counter() - t0
        if self.rungs is not None and not self.diverged:  # compute axis: only the (annealed) rungs report
            if self._out_of_epochs():
                self.rungs.end_of_epochs(self)
            self._clock()
            self.flops_cum += self.flop_tally.flush()  # (0: rungs sum every step) before the count is saved
            self.save()
            return dict(self.history[-1])
        metrics = error_metrics(ErrorSums.from_vector(epoch_sums), cfg.loss, *self._scales(), split="train")
        metrics.update(self._evaluate_val())
        metrics[M.THROUGHPUT_STRUCT_S] = n_struct / train_s if train_s > 0 else 0.0
        metrics[M.THROUGHPUT_ATOMS_S] = n_atoms / train_s if train_s > 0 else 0.0
        if not math.isfinite(metrics[M.VAL_LOSS]) or not math.isfinite(metrics[M.split_key("train", M.LOSS)]):
            self.diverged = True
        patience_out = not self.diverged and self._early_stop_update(metrics[M.VAL_LOSS])
        if self.diverged or patience_out or self._budget_spent() or self._out_of_epochs():
            metrics = self._finish(metrics)
        return self._record(metrics)

    def run(self) -> dict[str, Any]:
        with self.watch:  # a SIGTERM from here on saves at the next step boundary, then stops (Preempted)
            return self._run()

    def _run(self) -> dict[str, Any]:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        resumed = self.resume()
        if self.is_main:
            ckpt_io.atomic_write_text(
                self.run_dir / "config.json", json.dumps(self.resolved_config(), indent=2, sort_keys=True) + "\n"
            )
        if not resumed:
            if self.is_main:
                (self.run_dir / "metrics.jsonl").unlink(missing_ok=True)
            self.initial_report()
        # a checkpoint taken inside an epoch (at a rung) finishes that epoch first, even its last one
        while not self.finished and (
            self._resume_position is not None or (not self._out_of_epochs() and not self._budget_spent())
        ):
            self.train_epoch()
        return dict(self.history[-1])


def run_trial(
    config: TrialConfig,
    run_dir: str | Path,
    reporter: M.Reporter | None = None,
    dist: DistContext | None = None,
    *,
    splits: Any = None,
    dtype: torch.dtype = torch.float32,
) -> dict[str, Any]:
    """Train one model as ``config`` says, in ``run_dir``; return the final metrics.

    Resumes from ``run_dir/checkpoint.pt`` when present. Reports epoch 0 (the untrained model)
    and then every epoch; stops early once ``config.max_flops`` is passed. Only rank 0 writes
    files and reports. ``splits`` (an object with ``train``/``val`` record lists) bypasses
    :func:`engine.data.dataset.load_splits`; ``dtype`` sets the model's float type (float64 in
    exactness tests).
    """
    return _Trial(config, Path(run_dir), reporter, dist, splits, dtype).run()
