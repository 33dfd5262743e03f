"""Scoring a trial's weights: validation and test metrics, the untrained model's train probe, physical probes.

Evaluation never moves the training stream: :func:`evaluate` runs the model's private generators (EquiformerV2's
edge rolls) from ``config.seed`` and puts their training state back, so a score depends only on the weights and
the extra evaluations of a cooldown branch or of a resume change nothing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Iterator

import torch

from engine import metrics as M
from engine.config import TrialConfig
from engine.data.graph import Batch, EpochBatches, GraphDataset
from engine.loop.devices import DistContext, all_reduce, autocast_context
from engine.loop.ema import EMA
from engine.loop.feed import batch_stream, local_shard
from engine.loop.loss import ErrorSums, error_metrics, error_sums
from models.base import Potential


def evaluate(
    module: Potential,
    dataset: GraphDataset,
    config: TrialConfig,
    device: torch.device,
    dtype: torch.dtype,
    dist: DistContext | None = None,
    stream: Callable[..., Iterator[Batch]] = batch_stream,
) -> ErrorSums:
    """Error sums of ``module`` over ``dataset`` (eval mode; batches sharded over ranks, summed).

    The model's private generators (EquiformerV2's edge rolls) run from ``config.seed`` here and are put back
    after: a score depends only on the weights, and evaluating does not move the training stream (so a
    cooldown branch or a resume, which evaluate at other times, leave training bit for bit the same).
    ``stream``: what turns index lists into batches on the device (:func:`~engine.loop.feed.batch_stream`'s call).
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
            for batch in stream(dataset, shards, config, dtype, device):
                with torch.set_grad_enabled(need_grad), autocast_context(device, config.amp):
                    output = module(batch)
                total += error_sums(output, batch).as_vector().cpu()
    finally:
        module.set_rng_state(training_rng)
    return ErrorSums.from_vector(all_reduce(total.to(device), dist).cpu())


class Evaluator:
    """Scores the weights in use (the EMA average when on) of one trial's model, as report metrics."""

    def __init__(self, config: TrialConfig, model: Potential, ema: EMA | None, device: torch.device,
                 dtype: torch.dtype, dist: DistContext | None, stream: Callable[..., Iterator[Batch]] = batch_stream,
                 ) -> None:
        """``stream``: the trial's data path (the signature of :func:`~engine.loop.feed.batch_stream`)."""
        self.config, self.model, self.ema = config, model, ema
        self.device, self.dtype, self.dist, self.stream = device, dtype, dist, stream

    def scales(self) -> tuple[float, float]:
        """The model's force and stress scales (what :func:`engine.loop.loss.error_metrics` weighs the loss by)."""
        return float(self.model.forces_scale), float(self.model.stress_scale)

    def metrics(self, sums: ErrorSums, split: str) -> dict[str, float]:
        """Report metrics (``split``-prefixed) of error sums, e.g. an epoch's running train sums."""
        return error_metrics(sums, self.config.loss, *self.scales(), split=split)

    def score(self, dataset: GraphDataset, split: str, ema: bool = True) -> dict[str, float]:
        """Metrics of the weights in use (the EMA average when on and ``ema``) on ``dataset``, prefixed ``split``."""
        swap = self.ema.swapped(self.model) if ema and self.ema is not None else contextlib.nullcontext()
        with swap:
            sums = evaluate(self.model, dataset, self.config, self.device, self.dtype, self.dist, self.stream)
        return self.metrics(sums, split)

    def final(self, test_set: GraphDataset | None, val_records: list, probes: bool) -> tuple[dict[str, float], float]:
        """A trial's last metrics beyond validation: the (capped) test split scored and its size, the physical
        probes (``probes``), and the seconds the probes took (kept out of a trial's ``wall_s``)."""
        out: dict[str, float] = {}
        if test_set is not None:
            out.update(self.score(test_set, "test"))
            out[M.TEST_STRUCTURES] = float(len(test_set))  # scored: the test split capped at data.max_test
        seconds = 0.0
        if probes:
            found, seconds = self.probe(val_records)
            out.update(found)
        return out, seconds

    def probe(self, val_records: list) -> tuple[dict[str, float], float]:
        """Physical probes (:mod:`engine.loop.probes`) of the weights in use on validation structures, and the
        seconds they took (kept out of a trial's ``wall_s``)."""
        from engine.loop.probes import probe_model

        t0 = time.perf_counter()
        swap = self.ema.swapped(self.model) if self.ema is not None else contextlib.nullcontext()
        with swap:  # the copy takes the weights in use (the EMA average when on)
            out = probe_model(self.model, val_records, self.config.probes,
                              emt_labels=self.config.data.path is None, seed=self.config.seed, device=self.device)
        return out, time.perf_counter() - t0
