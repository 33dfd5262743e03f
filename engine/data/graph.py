"""Periodic neighbor lists (vesin), per-structure graph cache, and atom-budget batches.

Edge convention (as in EquiformerV2): ``edge_index[0]`` is the source j (the neighbor),
``edge_index[1]`` the target i (the receiver), and the edge vector is
``pos[j] + shift · cell − pos[i]`` with ``shift`` the integer cell offset of j's image.
Neighbors of each receiver are capped at ``max_neighbors``, nearest first.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, fields

import numpy as np
import torch

from engine.data.records import Record

# Squared distances at or below this (Å²) are the atom itself (or an overlapping image): dropped.
_SELF_D2 = 1e-4
# Non-strict cap tolerance, Å² (fairchem's OMat24 graphs keep ties out to d²(k+1) + 0.01).
_NONSTRICT_TOL_D2 = 0.01


@dataclass(frozen=True)
class GraphSpec:
    """Which neighbor list to build: cutoff in Å, cap per receiver (0 = none), strict or tie-keeping."""

    cutoff: float = 5.0
    max_neighbors: int = 32
    strict: bool = True


@dataclass
class Graph:
    """One structure's edges (numpy): src, dst (int64, (E,)) and shift (int64, (E, 3))."""

    src: np.ndarray
    dst: np.ndarray
    shift: np.ndarray

    @property
    def num_edges(self) -> int:
        return int(self.src.shape[0])


def neighbor_graph(record: Record, spec: GraphSpec) -> Graph:
    """Edges within ``spec.cutoff`` under the record's PBC, capped per receiver."""
    from vesin import NeighborList

    n = record.n_atoms
    periodic = bool(np.all(record.pbc))
    if np.any(record.pbc) and not periodic:
        raise ValueError(f"record {record.uid!r}: mixed periodicity {record.pbc.tolist()} is not supported")
    box = record.cell if periodic else np.zeros((3, 3))
    nl = NeighborList(cutoff=float(spec.cutoff), full_list=True)
    i, j, shift, dist = nl.compute(points=record.positions, box=box, periodic=periodic, quantities="ijSd")
    i = np.asarray(i, dtype=np.int64)
    j = np.asarray(j, dtype=np.int64)
    shift = np.asarray(shift, dtype=np.int64).reshape(-1, 3)
    d2 = np.asarray(dist, dtype=np.float64) ** 2
    keep = d2 > _SELF_D2
    i, j, shift, d2 = i[keep], j[keep], shift[keep], d2[keep]
    if spec.max_neighbors > 0 and i.size:
        # sort by receiver, then distance; rank within each receiver
        order = np.lexsort((d2, i))
        i, j, shift, d2 = i[order], j[order], shift[order], d2[order]
        counts = np.bincount(i, minlength=n)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        rank = np.arange(i.size) - starts[i]
        k = spec.max_neighbors
        if spec.strict:
            keep = rank < k
        else:
            # threshold per receiver: d² of its (k+1)-th neighbor plus a tolerance
            thresh = np.full(n, np.inf)
            has_more = counts > k
            thresh[has_more] = d2[starts[has_more] + k] + _NONSTRICT_TOL_D2
            keep = d2 <= thresh[i]
        i, j, shift = i[keep], j[keep], shift[keep]
    return Graph(src=j, dst=i, shift=shift)


@dataclass
class Batch:
    """Concatenated structures (torch). Shapes: N atoms, B structures, E edges.

    Labels that a structure lacks are zero-filled and masked False.
    """

    numbers: torch.Tensor  # (N,) long
    positions: torch.Tensor  # (N, 3) Å
    cell: torch.Tensor  # (B, 3, 3) Å
    pbc: torch.Tensor  # (B, 3) bool
    batch: torch.Tensor  # (N,) long, structure index of each atom
    n_atoms: torch.Tensor  # (B,) long
    edge_index: torch.Tensor  # (2, E) long, [src j; dst i] in batch atom indices
    edge_shift: torch.Tensor  # (E, 3) float, integer cell offsets of src images
    energy: torch.Tensor  # (B,) eV
    energy_mask: torch.Tensor  # (B,) bool
    forces: torch.Tensor  # (N, 3) eV/Å
    forces_mask: torch.Tensor  # (N,) bool
    stress: torch.Tensor  # (B, 3, 3) eV/Å³, ASE sign
    stress_mask: torch.Tensor  # (B,) bool
    uids: list[str] = field(default_factory=list)

    @property
    def num_graphs(self) -> int:
        return int(self.n_atoms.shape[0])

    @property
    def num_atoms(self) -> int:
        return int(self.numbers.shape[0])

    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None, non_blocking: bool = False
    ) -> Batch:
        """Move tensors; ``dtype`` applies to floating tensors only; ``non_blocking`` overlaps a pinned copy."""
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, torch.Tensor):
                floating = dtype if (dtype is not None and v.is_floating_point()) else None
                v = v.to(device=device, dtype=floating, non_blocking=non_blocking)
            out[f.name] = v
        return Batch(**out)

    def pin_memory(self) -> Batch:
        """The same batch in page-locked host memory (a DataLoader with ``pin_memory=True`` calls this)."""
        return Batch(**{f.name: _pinned(getattr(self, f.name)) for f in fields(self)})


def _pinned(value: object) -> object:
    return value.pin_memory() if isinstance(value, torch.Tensor) else value


@dataclass
class EdgeGeometry:
    """Edge vectors (E, 3) in Å from dst i to src j's image, and their lengths (E,)."""

    vec: torch.Tensor
    dist: torch.Tensor


def edge_geometry(
    batch: Batch, positions: torch.Tensor | None = None, cell: torch.Tensor | None = None
) -> EdgeGeometry:
    """``pos[src] + shift · cell[structure] − pos[dst]``, differentiable in positions and cell."""
    positions = batch.positions if positions is None else positions
    cell = batch.cell if cell is None else cell
    src, dst = batch.edge_index[0], batch.edge_index[1]
    offset = torch.bmm(batch.edge_shift.to(cell.dtype).unsqueeze(1), cell[batch.batch[src]]).squeeze(1)
    vec = positions[src] + offset - positions[dst]
    return EdgeGeometry(vec=vec, dist=torch.linalg.norm(vec, dim=-1))


def collate(records: Sequence[Record], graphs: Sequence[Graph], dtype: torch.dtype = torch.float32) -> Batch:
    """Concatenate records and their cached graphs into one :class:`Batch`."""
    counts = np.array([r.n_atoms for r in records], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])
    n_total = int(counts.sum())
    numbers = np.concatenate([r.numbers for r in records])
    positions = np.concatenate([r.positions for r in records])
    cells = np.stack([r.cell for r in records])
    pbc = np.stack([r.pbc for r in records])
    batch_idx = np.repeat(np.arange(len(records)), counts)
    src = np.concatenate([g.src + o for g, o in zip(graphs, offsets, strict=True)])
    dst = np.concatenate([g.dst + o for g, o in zip(graphs, offsets, strict=True)])
    shift = np.concatenate([g.shift for g in graphs]).reshape(-1, 3)

    energy = np.array([r.energy if r.energy is not None else 0.0 for r in records])
    energy_mask = np.array([r.energy is not None for r in records])
    forces = np.zeros((n_total, 3))
    forces_mask = np.zeros(n_total, dtype=bool)
    for r, o in zip(records, offsets, strict=True):
        if r.forces is not None:
            forces[o : o + r.n_atoms] = r.forces
            forces_mask[o : o + r.n_atoms] = True
    stress = np.stack([r.stress if r.stress is not None else np.zeros((3, 3)) for r in records])
    stress_mask = np.array([r.stress is not None for r in records])

    return Batch(
        numbers=torch.from_numpy(numbers),
        positions=torch.from_numpy(positions).to(dtype),
        cell=torch.from_numpy(cells).to(dtype),
        pbc=torch.from_numpy(pbc),
        batch=torch.from_numpy(batch_idx),
        n_atoms=torch.from_numpy(counts),
        edge_index=torch.from_numpy(np.stack([src, dst])),
        edge_shift=torch.from_numpy(shift).to(dtype),
        energy=torch.from_numpy(energy).to(dtype),
        energy_mask=torch.from_numpy(energy_mask),
        forces=torch.from_numpy(forces).to(dtype),
        forces_mask=torch.from_numpy(forces_mask),
        stress=torch.from_numpy(stress).to(dtype),
        stress_mask=torch.from_numpy(stress_mask),
        uids=[r.uid for r in records],
    )


class GraphDataset:
    """Records plus their neighbor graphs, each graph computed once and kept."""

    def __init__(self, records: Sequence[Record], spec: GraphSpec) -> None:
        self.records = list(records)
        self.spec = spec
        self._graphs: list[Graph | None] = [None] * len(self.records)

    def __len__(self) -> int:
        return len(self.records)

    def graph(self, index: int) -> Graph:
        g = self._graphs[index]
        if g is None:
            g = neighbor_graph(self.records[index], self.spec)
            self._graphs[index] = g
        return g

    def sizes(self) -> np.ndarray:
        return np.array([r.n_atoms for r in self.records], dtype=np.int64)

    def batch(self, indices: Sequence[int], dtype: torch.dtype = torch.float32) -> Batch:
        return collate([self.records[k] for k in indices], [self.graph(k) for k in indices], dtype=dtype)


def pack_batches(
    sizes: np.ndarray, max_structures: int, max_atoms: int, order: np.ndarray | None = None
) -> list[list[int]]:
    """Greedy packing of structure indices (in ``order``) into batches bounded by both
    a structure count and an atom budget. A structure larger than ``max_atoms`` gets a batch alone.

    The reference definition, as Python lists over every structure; the loop packs an epoch with
    :class:`EpochBatches` (the same batches, numpy, each made when asked for)."""
    order = np.arange(len(sizes)) if order is None else order
    batches: list[list[int]] = []
    current: list[int] = []
    atoms = 0
    for k in order.tolist():
        n = int(sizes[k])
        if current and (len(current) >= max_structures or atoms + n > max_atoms):
            batches.append(current)
            current, atoms = [], 0
        current.append(k)
        atoms += n
    if current:
        batches.append(current)
    return batches


# positions of a permutation packed per numpy pass (bounds the packer's temporary arrays, not the result)
PACK_CHUNK = 1 << 20


def batch_bounds(
    sizes: np.ndarray, max_structures: int, max_atoms: int, order: np.ndarray | None = None, chunk: int = PACK_CHUNK
) -> np.ndarray:
    """Where :func:`pack_batches`' batches start in ``order``, and ``len(order)`` last: the same greedy batches,
    found with numpy (cumulative atoms and a binary search per position, ``chunk`` positions at a time) and one
    Python step per batch, never per structure. A batch from position i ends at the first j where
    ``j - i > max_structures`` or the atoms of ``order[i:j]`` pass ``max_atoms``, but holds at least one structure.
    """
    order = np.arange(len(sizes)) if order is None else np.asarray(order)
    n = len(order)
    chunk = max(int(chunk), 2 * int(max_structures) + 1)  # a batch always ends inside its chunk's first half
    starts: list[np.ndarray] = []
    p = 0
    while p < n:
        stop = min(n, p + chunk)
        atoms = np.asarray(sizes)[order[p:stop]].astype(np.int64)
        cum = np.concatenate([[0], np.cumsum(atoms)])  # cum[i]: atoms of the chunk's first i structures
        here = np.arange(len(atoms))
        # the batch from i ends at the last k with cum[k] - cum[i] ≤ max_atoms, capped by max_structures, ≥ i + 1
        ends = np.searchsorted(cum, cum[:-1] + int(max_atoms), side="right") - 1
        ends = np.maximum(np.minimum(ends, here + int(max_structures)), here + 1)
        local, i = [], 0
        while i < len(atoms):
            e = int(ends[i])
            if e >= len(atoms) and stop < n:
                break  # this batch may take structures of the next chunk: start the next chunk here
            local.append(i)
            i = e
        starts.append(p + np.asarray(local, dtype=np.int64))
        p += i
    return np.concatenate([*starts, np.array([n], dtype=np.int64)])


class EpochBatches(Sequence[np.ndarray]):
    """One epoch's global batches: :func:`pack_batches` of ``order`` (the same batches), held as the permutation
    and its batch boundaries (numpy); each batch is a slice of ``order``, made when asked for (no Python list of
    the epoch's indices). ``batches[k]`` is batch k (int64 array); ``batches[a:b]`` the batches a..b−1, lazily."""

    def __init__(self, sizes: np.ndarray, max_structures: int, max_atoms: int, order: np.ndarray | None = None,
                 *, _bounds: np.ndarray | None = None) -> None:
        self.order = np.arange(len(sizes)) if order is None else np.asarray(order)
        self.bounds = batch_bounds(sizes, max_structures, max_atoms, self.order) if _bounds is None else _bounds

    def __len__(self) -> int:
        return len(self.bounds) - 1

    def __getitem__(self, k):  # type: ignore[override]
        if isinstance(k, slice):
            first, last, step = k.indices(len(self))
            if step != 1:
                raise ValueError("EpochBatches slices take every batch in a range")
            view = EpochBatches.__new__(EpochBatches)
            view.order, view.bounds = self.order, self.bounds[first : max(first, last) + 1]
            return view
        if k < 0:
            k += len(self)
        if not 0 <= k < len(self):
            raise IndexError(k)
        return self.order[self.bounds[k] : self.bounds[k + 1]]

    def __iter__(self) -> Iterator[np.ndarray]:
        for a, b in zip(self.bounds[:-1].tolist(), self.bounds[1:].tolist(), strict=True):
            yield self.order[a:b]


def iterate_batches(
    dataset: GraphDataset,
    max_structures: int,
    max_atoms: int,
    shuffle: bool,
    generator: np.random.Generator | None = None,
    dtype: torch.dtype = torch.float32,
) -> Iterator[Batch]:
    """One epoch of batches; shuffling draws from ``generator`` (so resume can restore it)."""
    order = np.arange(len(dataset))
    if shuffle:
        assert generator is not None, "shuffle needs a generator"
        order = generator.permutation(len(dataset))
    for idx in EpochBatches(dataset.sizes(), max_structures, max_atoms, order):
        yield dataset.batch(idx, dtype=dtype)
