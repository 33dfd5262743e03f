"""One optimizer step: forward, loss over the global batch, backward, AdamW, EMA, FLOPs."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import nn

from engine.config import TrialConfig
from engine.data.graph import Batch
from engine.loop.devices import DistContext, all_reduce, autocast_context
from engine.loop.ema import EMA
from engine.loop.flops import FlopAccountant, FlopCounter, batch_features
from engine.loop.loss import ErrorSums, error_sums, weighted_loss
from models.base import Potential


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


def masked_copy(batch: Batch) -> Batch:
    """The same structures with every label masked out: a zero-loss stand-in for an empty shard."""
    return dataclasses.replace(
        batch,
        energy_mask=torch.zeros_like(batch.energy_mask),
        forces_mask=torch.zeros_like(batch.forces_mask),
        stress_mask=torch.zeros_like(batch.stress_mask),
    )


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
        global_sums = ErrorSums.from_vector(all_reduce(sums.as_vector(), ctx.dist))
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
