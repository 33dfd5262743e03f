"""FLOP counts against hand formulas (2·m·n·k per matrix product; backward = 2 × forward)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

import models
from engine.data.graph import GraphDataset, GraphSpec
from engine.loop.flops import FlopAccountant, FlopCounter, batch_features, count_flops, count_flops_reference

from .conftest import emt_records


class TinyAttention(nn.Module):
    """One head of self-attention with explicit matmuls, then a linear readout."""

    def __init__(self, d_in: int, d: int) -> None:
        super().__init__()
        self.qkv = nn.Linear(d_in, 3 * d)
        self.out = nn.Linear(d, 1)
        self.d = d

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, n, d_in)
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        att = torch.softmax(torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.d), dim=-1)
        return self.out(torch.matmul(att, v)).sum()


def test_linear_and_explicit_attention_match_the_hand_formula():
    B, n, d_in, d = 3, 7, 5, 8
    model = TinyAttention(d_in, d)
    x = torch.randn(B, n, d_in, requires_grad=True)  # input grad too, so every product's backward is 2×
    forward = 2 * B * n * d_in * 3 * d + 2 * B * n * n * d + 2 * B * n * n * d + 2 * B * n * d * 1
    _, fwd, _ = count_flops(model, x)
    assert fwd == forward
    with FlopCounter() as fc:
        model(x).backward()
    assert fc.total == 3 * forward


def test_cpu_fused_attention_is_counted():
    b, h, s, d = 2, 3, 11, 4
    q = torch.randn(b, h, s, d, requires_grad=True)
    k = torch.randn(b, h, s, d, requires_grad=True)
    v = torch.randn(b, h, s, d, requires_grad=True)

    def step():
        torch.nn.functional.scaled_dot_product_attention(q, k, v).sum().backward()

    _, total, per_op = count_flops(step)
    fwd = 2 * (2 * b * h * s * s * d)  # QKᵀ and PV
    assert per_op["aten._scaled_dot_product_flash_attention_for_cpu"] == fwd
    assert total == fwd + 5 * (2 * b * h * s * s * d)  # backward: recompute P, dP, dV, dQ, dK


def test_transformer_training_step_matches_its_hand_formula():
    model = models.build("transformer", {"d_model": 16, "depth": 2, "heads": 2, "ff_mult": 4})
    c = model.config
    ds = GraphDataset(emt_records(6), GraphSpec(c.cutoff, c.max_neighbors, c.strict_neighbors))
    batch = ds.batch(range(6))
    n_atoms = batch.n_atoms.tolist()
    E = batch.edge_index.shape[1]
    d, f, N, Bs, L = c.d_model, c.ff_mult * c.d_model, sum(n_atoms), len(n_atoms), max(n_atoms)
    per_layer = 2 * N * d * 3 * d + 2 * 2 * Bs * L * L * d + 2 * N * d * d + 2 * 2 * N * d * f
    hand = 2 * N * (d + 3) * d + c.depth * per_layer + 2 * N * d * (1 + 3 + 6)
    geometry = 2 * E * 3 * 3  # edge vectors: (E,1,3)·(E,3,3) in the base class, no gradient needed

    def step():
        out = model(batch)
        (out.energy.sum() + out.forces.sum() + out.stress.sum()).backward()

    _, total, _ = count_flops(step)
    assert total == 3 * hand + geometry


@pytest.mark.parametrize(
    ("family", "config"),
    [
        ("fcn", {"hidden": 16, "num_rbf": 8}),
        ("transformer", {"d_model": 16, "depth": 1, "heads": 2}),
        ("transformer", {"d_model": 16, "depth": 1, "heads": 2, "periodic": True, "xyz_input": False}),
    ],
)
def test_accountant_solves_every_step_exactly(family, config):
    """Counted and solved FLOPs agree on every one of many differently sized batches."""
    model = models.build(family, config)
    c = model.config
    ds = GraphDataset(emt_records(40, seed=4), GraphSpec(c.cutoff, c.max_neighbors, c.strict_neighbors))
    rng = np.random.default_rng(0)
    accountant = FlopAccountant(verify_every=0)
    predicted_steps = 0
    for _ in range(30):
        idx = rng.choice(len(ds), size=int(rng.integers(1, 9)), replace=False).tolist()
        batch = ds.batch(idx)

        def step(batch=batch):
            out = model(batch)
            (out.energy.sum() + out.forces.pow(2).sum() + out.stress.sum()).backward()

        _, exact, _ = count_flops(step)
        features = batch_features(batch.n_atoms, batch.edge_index.shape[1])
        if accountant.must_count(features):
            assert accountant.record(features, exact) == exact
        else:
            predicted_steps += 1
            assert accountant.record(features, None) == exact
    assert not accountant.count_all
    assert predicted_steps >= 15


def test_accountant_falls_back_to_counting_when_the_law_breaks():
    accountant = FlopAccountant(verify_every=2)
    rng = np.random.default_rng(1)
    for _ in range(10):
        x = np.array([1.0, *rng.integers(1, 100, size=6).astype(float)])
        if accountant.must_count(x):
            accountant.record(x, int(x[1] ** 2))  # quadratic in atoms: not linear in the features
    assert accountant.count_all and accountant.must_count(x)


def test_stock_counter_agrees_with_the_fast_counter():
    model = models.build("transformer", {"d_model": 16, "depth": 1, "heads": 2, "periodic": True, "xyz_input": False})
    c = model.config
    batch = GraphDataset(emt_records(5), GraphSpec(c.cutoff, c.max_neighbors, c.strict_neighbors)).batch(range(5))

    def step():
        out = model(batch)
        (out.energy.sum() + out.forces.sum() + out.stress.sum()).backward()

    assert count_flops(step)[1] == count_flops_reference(step)[1]
