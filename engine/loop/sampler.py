"""Atom-balanced sharding of one global batch across data-parallel ranks.

Cost of a step grows with atoms (and edges), not structures, so each rank should get about the
same number of atoms. Greedy longest-processing-time assignment (Graham 1969): largest structure
first, each to the rank with the fewest atoms so far; the maximum load is within 4/3 of optimal.
"""

from __future__ import annotations

from collections.abc import Sequence


def shard_by_atoms(sizes: Sequence[int], world_size: int) -> list[list[int]]:
    """Split positions ``0..len(sizes)-1`` into ``world_size`` lists with balanced atom sums.

    Deterministic (ties broken by position, then rank), so every rank computes the same split.
    Each shard keeps its positions in increasing order. A rank may get an empty list when the
    batch has fewer structures than ranks.
    """
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    loads = [0] * world_size
    shards: list[list[int]] = [[] for _ in range(world_size)]
    order = sorted(range(len(sizes)), key=lambda k: (-int(sizes[k]), k))
    for k in order:
        rank = min(range(world_size), key=lambda r: (loads[r], r))
        shards[rank].append(k)
        loads[rank] += int(sizes[k])
    return [sorted(s) for s in shards]
