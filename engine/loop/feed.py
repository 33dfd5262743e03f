"""The data feed: a rank's shard of each global batch, made when it is reached, and the batches on the device.

An epoch's global batches come packed (:class:`~engine.data.graph.EpochBatches`: numpy arrays, sliced lazily);
:class:`RankShards` gives this rank's atom-balanced part of each, and :func:`batch_stream` turns those index
lists into batches on the device (DataLoader workers for a lazy dataset). Nothing here builds a Python list over
an epoch's indices.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch

from engine.config import TrialConfig
from engine.data.graph import Batch, GraphDataset
from engine.data.lazy import LazyGraphDataset, batch_loader
from engine.loop.devices import DistContext
from engine.loop.sampler import shard_by_atoms


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
