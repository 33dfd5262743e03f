"""neighbor_graph against brute force (ASE and an explicit image sum), caps, batching, graph cache."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from ase.build import bulk
from ase.neighborlist import neighbor_list

from engine.data.graph import (
    EpochBatches,
    GraphDataset,
    GraphSpec,
    batch_bounds,
    edge_geometry,
    neighbor_graph,
    pack_batches,
)
from engine.data.records import Record
from engine.data.store import cached_graph_dataset, graph_cache_path, load_graphs


def _rattled_cell(seed: int = 0) -> Record:
    atoms = bulk("Cu", "fcc", a=3.6).repeat((2, 1, 2))  # 4 atoms, skewed primitive cell: many images
    rng = np.random.default_rng(seed)
    atoms.positions += rng.normal(0, 0.1, size=atoms.positions.shape)
    return Record(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell.array, pbc=True)


def _brute_force(record: Record, cutoff: float) -> dict[tuple[int, int, tuple[int, int, int]], float]:
    """Every (receiver i, source j, shift S) with 0 < |pos[j] + S·cell − pos[i]| < cutoff, by explicit image sum."""
    inv = np.linalg.inv(record.cell)
    heights = 1.0 / np.linalg.norm(inv, axis=0)  # plane spacings of the cell
    reach = np.ceil(cutoff / heights).astype(int) + 1
    edges = {}
    for shift in itertools.product(*(range(-r, r + 1) for r in reach)):
        offset = np.asarray(shift) @ record.cell
        for i in range(record.n_atoms):
            for j in range(record.n_atoms):
                d = np.linalg.norm(record.positions[j] + offset - record.positions[i])
                if 1e-2 < d < cutoff:
                    edges[(i, j, tuple(int(s) for s in shift))] = d
    return edges


def _as_dict(record: Record, graph) -> dict:
    vec = record.positions[graph.src] + graph.shift @ record.cell - record.positions[graph.dst]
    d = np.linalg.norm(vec, axis=1)
    return {
        (int(i), int(j), tuple(int(x) for x in s)): float(dd)
        for i, j, s, dd in zip(graph.dst, graph.src, graph.shift, d, strict=True)
    }


@pytest.mark.parametrize("cutoff", [3.0, 5.0, 6.0])
def test_uncapped_matches_brute_force_and_ase(cutoff):
    record = _rattled_cell()
    graph = neighbor_graph(record, GraphSpec(cutoff=cutoff, max_neighbors=0))
    ours = _as_dict(record, graph)
    brute = _brute_force(record, cutoff)
    assert set(ours) == set(brute)
    assert len(ours) == graph.num_edges  # no duplicate edges
    i, j, shifts = neighbor_list("ijS", record.to_atoms(), cutoff)
    assert set(ours) == {(int(a), int(b), tuple(int(x) for x in s)) for a, b, s in zip(i, j, shifts, strict=True)}


def _nearest(brute: dict, n_atoms: int, k: int, strict: bool) -> set:
    keep = set()
    for i in range(n_atoms):
        mine = sorted((d, e) for e, d in brute.items() if e[0] == i)
        if strict or len(mine) <= k:
            keep |= {e for _, e in mine[:k]}
        else:
            limit = mine[k][0] ** 2 + 0.01  # d² of the (k+1)-th neighbour + 0.01 Å²
            keep |= {e for d, e in mine if d**2 <= limit}
    return keep


@pytest.mark.parametrize("strict", [True, False])
def test_max_neighbors_keeps_the_nearest(strict):
    record = _rattled_cell(seed=3)
    spec = GraphSpec(cutoff=6.0, max_neighbors=10, strict=strict)
    graph = neighbor_graph(record, spec)
    assert set(_as_dict(record, graph)) == _nearest(_brute_force(record, 6.0), record.n_atoms, 10, strict)
    per_receiver = np.bincount(graph.dst, minlength=record.n_atoms)
    if strict:
        assert per_receiver.tolist() == [10] * record.n_atoms
    else:
        assert per_receiver.min() >= 11  # at least k+1 when available


def test_ties_in_a_perfect_crystal():
    """fcc: 12 first neighbours at a/√2, 6 second at a. Strict k=12 keeps 12; non-strict keeps ties to d(13)."""
    atoms = bulk("Cu", "fcc", a=3.6)
    record = Record(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell.array, pbc=True)
    strict = neighbor_graph(record, GraphSpec(cutoff=5.0, max_neighbors=12, strict=True))
    loose = neighbor_graph(record, GraphSpec(cutoff=5.0, max_neighbors=12, strict=False))
    assert strict.num_edges == 12 and loose.num_edges == 18
    d = np.linalg.norm(strict.shift @ record.cell, axis=1)
    np.testing.assert_allclose(d, 3.6 / np.sqrt(2))


def test_non_periodic_molecule():
    pos = np.array([[0, 0, 0], [1.0, 0, 0], [0, 1.5, 0], [4.0, 0, 0]])
    record = Record(numbers=[6, 1, 1, 8], positions=pos, cell=np.zeros((3, 3)), pbc=False)
    graph = neighbor_graph(record, GraphSpec(cutoff=2.0, max_neighbors=0))
    assert {(int(i), int(j)) for i, j in zip(graph.dst, graph.src, strict=True)} == {
        (0, 1),
        (1, 0),
        (0, 2),
        (2, 0),
        (1, 2),
        (2, 1),
    }
    assert not graph.shift.any()


def test_collate_and_atom_budget(emt_cache):
    _, records = emt_cache
    spec = GraphSpec(cutoff=5.0, max_neighbors=32)
    dataset = GraphDataset(records[:10], spec)
    batch = dataset.batch(list(range(10)))
    assert batch.num_graphs == 10 and batch.num_atoms == sum(r.n_atoms for r in records[:10])
    geo = edge_geometry(batch)
    assert float(geo.dist.max()) <= 5.0 + 1e-5 and float(geo.dist.min()) > 1.0
    assert bool(batch.forces_mask.all()) and bool(batch.stress_mask.all())
    sizes = dataset.sizes()
    for idx in pack_batches(sizes, max_structures=4, max_atoms=64):
        assert len(idx) <= 4
        assert sizes[idx].sum() <= 64 or len(idx) == 1


def test_graph_cache_round_trip(emt_cache, tmp_path):
    _, records = emt_cache
    spec = GraphSpec(cutoff=5.0, max_neighbors=20, strict=False)
    built = cached_graph_dataset(records, spec, tmp_path)
    path = graph_cache_path(tmp_path, records, spec)
    assert path.is_file()
    loaded = cached_graph_dataset(records, spec, tmp_path)
    for k in range(len(records)):
        fresh = neighbor_graph(records[k], spec)
        for g in (built.graph(k), loaded.graph(k)):
            np.testing.assert_array_equal(g.src, fresh.src)
            np.testing.assert_array_equal(g.dst, fresh.dst)
            np.testing.assert_array_equal(g.shift, fresh.shift)
    # another spec or other structures → another key
    assert graph_cache_path(tmp_path, records, GraphSpec(cutoff=6.0)) != path
    assert graph_cache_path(tmp_path, records[:-1], spec) != path


def test_corrupt_graph_cache_is_rebuilt(emt_cache, tmp_path):
    _, records = emt_cache
    spec = GraphSpec(cutoff=4.0, max_neighbors=8)
    path = graph_cache_path(tmp_path, records[:5], spec)
    path.write_bytes(b"PK\x03\x04 truncated")
    dataset = cached_graph_dataset(records[:5], spec, tmp_path)
    np.testing.assert_array_equal(dataset.graph(2).src, neighbor_graph(records[2], spec).src)
    assert load_graphs(path, 5) is not None  # rewritten


@pytest.mark.parametrize(("max_structures", "max_atoms"), [(4, 64), (16, 1024), (1, 10), (200, 50), (7, 30)])
def test_epoch_batches_are_pack_batches(max_structures, max_atoms):
    """The loop's numpy packer gives the reference's batches for any permutation, across chunk edges too."""
    rng = np.random.default_rng(7)
    for n in (0, 1, 5, 2_000):
        sizes = rng.integers(1, 40, n)
        order = rng.permutation(n)
        want = pack_batches(sizes, max_structures, max_atoms, order)
        for chunk in (1, 3, 17, 1 << 20):  # tiny chunks: batches that straddle a chunk's end start the next one
            bounds = batch_bounds(sizes, max_structures, max_atoms, order, chunk=chunk)
            assert [order[a:b].tolist() for a, b in itertools.pairwise(bounds)] == want
        batches = EpochBatches(sizes, max_structures, max_atoms, order)
        assert len(batches) == len(want) and [b.tolist() for b in batches] == want
        assert [b.tolist() for b in batches[2:]] == want[2:] and len(batches[len(want):]) == 0
        if want:
            assert batches[-1].tolist() == want[-1]
