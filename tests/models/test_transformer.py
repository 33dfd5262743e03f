"""Transformer-specific checks: presets ladder, config errors, FLOP count vs hand formula, pair force head."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import models
from engine.data.records import Record
from engine.errors import ConfigError
from models.transformer import TransformerConfig, forward_flops
from tests.models.conftest import make_batch, random_cell


def _cells(sizes=((1, 1, 2), (2, 2, 1), (1, 1, 1))) -> list[Record]:
    rng = np.random.default_rng(0)
    out = []
    for rep in sizes:
        a = random_cell(rng, rep)
        out.append(Record(numbers=a.numbers, positions=a.positions, cell=a.cell.array, pbc=a.pbc))
    return out


@pytest.mark.parametrize("prefix", ["t", "p"])
def test_preset_ladder_spans_seed_grid(prefix):
    table = {k: v for k, v in models.presets("transformer").items() if k.startswith(prefix)}
    assert list(table) == [f"{prefix}{k}" for k in range(len(table))] and len(table) >= 6
    counts = [models.build("transformer", preset=name).num_parameters() for name in table]
    assert counts == sorted(counts) and len(set(counts)) == len(counts)
    assert 1.5e3 <= counts[0] <= 3e3, counts
    assert 0.8e6 <= counts[-1] <= 1.3e6, counts
    if prefix == "p":
        assert all(v["periodic"] and not v["xyz_input"] for v in table.values())


@pytest.mark.parametrize(
    ("values", "needle"),
    [
        ({"d_model": 10, "heads": 3}, "not divisible by heads"),
        ({"depth": 0}, "depth must be"),
        ({"xyz_input": False}, "sees no geometry"),
        ({"d_modle": 8}, "unknown transformer config key"),
    ],
)
def test_bad_config_is_a_user_error(values, needle):
    with pytest.raises(ConfigError, match=needle):
        models.build("transformer", values)


@pytest.mark.parametrize(
    "cfg",
    [
        {"d_model": 16, "depth": 2, "heads": 2},
        {"d_model": 16, "depth": 2, "heads": 2, "periodic": True, "xyz_input": False, "num_rbf": 8},
        {"d_model": 8, "depth": 1, "heads": 1, "periodic": True, "pair_hidden": 12},
    ],
    ids=["plain", "periodic", "periodic_xyz"],
)
def test_flop_counter_matches_hand_formula(cfg):
    """Attention is explicit matmuls, so FlopCounterMode counts it; the count equals the formula exactly."""
    model = models.build("transformer", cfg)
    records = _cells()
    batch = make_batch(records, model, torch.float32)
    with FlopCounterMode(display=False) as counter:
        model(batch)
    expected = forward_flops(model.config, [r.n_atoms for r in records], int(batch.edge_index.shape[1]))
    assert counter.get_total_flops() == expected
    # the attention products (QKᵀ and AV on the padded grid) are in the count, as bmm
    B, L, d = len(records), max(r.n_atoms for r in records), model.config.d_model
    attention = model.config.depth * 2 * (2 * B * L * L * d)
    assert counter.get_flop_counts()["Global"][torch.ops.aten.bmm] >= attention


def test_periodic_forces_follow_the_geometry():
    """An isolated dimer: forces lie along the bond and are opposite (pairwise head, symmetric weights)."""
    torch.manual_seed(0)
    model = (
        models.build(
            "transformer", {"d_model": 8, "depth": 1, "heads": 2, "periodic": True, "xyz_input": False, "cutoff": 4.0}
        )
        .double()
        .eval()
    )
    bond = np.array([1.2, -0.8, 1.9])
    dimer = Record(numbers=[29, 28], positions=[[0.0, 0.0, 0.0], bond], cell=np.zeros((3, 3)), pbc=False)
    out = model(make_batch([dimer], model))
    f = out.forces.detach().numpy()
    np.testing.assert_allclose(f[0], -f[1], atol=1e-12)
    np.testing.assert_allclose(np.cross(f[0], bond), 0.0, atol=1e-12)
    assert np.linalg.norm(f[0]) > 0


def test_periodic_forces_sum_to_zero_in_a_cell():
    torch.manual_seed(1)
    model = (
        models.build(
            "transformer",
            {
                "d_model": 8,
                "depth": 1,
                "heads": 2,
                "periodic": True,
                "xyz_input": False,
                "cutoff": 4.0,
                "max_neighbors": 0,
            },
        )
        .double()
        .eval()
    )
    out = model(make_batch(_cells(((2, 1, 1),)), model))
    torch.testing.assert_close(out.forces.sum(0), torch.zeros(3, dtype=torch.float64), atol=1e-12, rtol=0)


def test_plain_heads_are_per_atom():
    """Plain model: per-atom force head (N, 3); stress is the sum of per-atom Voigt 6-vectors (symmetric)."""
    torch.manual_seed(0)
    model = models.build("transformer", {"d_model": 8, "depth": 1, "heads": 1}).double().eval()
    assert isinstance(model.config, TransformerConfig) and model.force_mode == "direct"
    records = _cells()
    out = model(make_batch(records, model))
    assert out.forces.shape == (sum(r.n_atoms for r in records), 3)
    torch.testing.assert_close(out.stress, out.stress.transpose(1, 2))


def test_amp_bf16_forward_keeps_float32_outputs():
    model = models.build("transformer", preset="p1")
    batch = make_batch(_cells(), model, torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(batch)
    assert out.energy.dtype == out.forces.dtype == out.stress.dtype == torch.float32
    assert torch.isfinite(out.forces).all()


def test_attention_groups_atoms_by_structure_index_not_by_order():
    """Interleaving the atoms of two structures (same structure index per atom) changes nothing."""
    torch.manual_seed(0)
    model = models.build("transformer", {"d_model": 8, "depth": 1, "heads": 2}).double().eval()
    batch = make_batch(_cells(((1, 1, 1), (1, 1, 1))), model)
    base = model(batch)
    perm = torch.tensor([0, 4, 1, 5, 2, 6, 3, 7])
    inverse = torch.argsort(perm)
    shuffled = dataclasses.replace(
        batch,
        numbers=batch.numbers[perm],
        positions=batch.positions[perm],
        batch=batch.batch[perm],
        edge_index=inverse[batch.edge_index],
    )
    out = model(shuffled)
    torch.testing.assert_close(out.energy, base.energy)
    torch.testing.assert_close(out.forces, base.forces[perm])
