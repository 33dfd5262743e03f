"""FLOP counts against hand formulas (2·m·n·k per matrix product; backward = 2 × forward)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import models
from engine.data.graph import GraphDataset, GraphSpec
from engine.loop.flops import (
    FlopAccountant,
    FlopCounter,
    FlopFallbackWarning,
    batch_features,
    count_flops,
    count_flops_reference,
)

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
    with pytest.warns(FlopFallbackWarning, match="counting every step"):
        for _ in range(10):
            x = np.array([1, *rng.integers(1, 100, size=6)])
            if accountant.must_count(x):
                accountant.record(x, int(x[1] ** 2))  # quadratic in atoms: not linear in the features
    assert accountant.count_all and accountant.must_count(x)
    assert accountant.fallback_reason


def _eqv2_l_batches(rng: np.random.Generator, n: int) -> list[np.ndarray]:
    """Feature vectors of OMat24-like batches: 24–64 structures of 8–160 atoms, ~20–60 edges per atom."""
    out = []
    for _ in range(n):
        sizes = rng.integers(8, 161, size=int(rng.integers(24, 65)))
        edges = int(sum(int(k) * int(rng.integers(20, 61)) for k in sizes))
        out.append(batch_features(torch.as_tensor(sizes), edges))
    return out


def test_accountant_is_exact_at_eqv2_l_sizes_without_fallback():
    """Per-step counts of 10¹³–10¹⁴ FLOPs (eqV2-L: ~1.5·10⁸ parameters, 20 layers, lmax 6) are solved exactly.

    Coefficients of that size: ~3·10⁹ FLOPs per atom (6 × parameters touched per atom), ~2·10⁸ per
    edge (SO(2) convolutions), large padded/pairwise terms. A float64 least-squares solve with an
    absolute tolerance loses the last digits here (float64 carries 15–16) and fell back to counting.
    """
    rng = np.random.default_rng(12)
    coef = [int(v) for v in (7_919_411, 3_104_557_219, 48_611_203, 187_336_419, 12_345, 678_901, 2_718_281)]
    accountant = FlopAccountant(verify_every=7)
    solved = 0
    with warnings.catch_warnings():
        warnings.simplefilter("error", FlopFallbackWarning)  # a fallback fails the test
        for x in _eqv2_l_batches(rng, 300):
            exact = sum(int(c) * int(v) for c, v in zip(coef, x))
            assert 1e13 <= exact < 1e15
            if accountant.must_count(x):
                assert accountant.record(x, exact) == exact
            else:
                solved += 1
                assert accountant.record(x, None) == exact  # exact integer equality, no tolerance
    assert not accountant.count_all and accountant.fallback_reason is None
    assert solved >= 240 and accountant.counted <= 60


def test_accountant_catches_an_off_by_one_at_10_to_the_14():
    """A relative tolerance would pass a 1-FLOP discrepancy at 10¹⁴; the exact check does not."""
    rng = np.random.default_rng(3)
    coef = [7_919_411, 3_104_557_219, 48_611_203, 187_336_419, 12_345, 678_901, 2_718_281]
    accountant = FlopAccountant(verify_every=1)
    batches = _eqv2_l_batches(rng, 12)
    with pytest.warns(FlopFallbackWarning, match="counted"):
        for k, x in enumerate(batches):
            exact = sum(c * int(v) for c, v in zip(coef, x)) + (1 if k == len(batches) - 1 else 0)
            assert accountant.must_count(x)
            accountant.record(x, exact)
    assert accountant.count_all


def test_stock_counter_agrees_with_the_fast_counter():
    model = models.build("transformer", {"d_model": 16, "depth": 1, "heads": 2, "periodic": True, "xyz_input": False})
    c = model.config
    batch = GraphDataset(emt_records(5), GraphSpec(c.cutoff, c.max_neighbors, c.strict_neighbors)).batch(range(5))

    def step():
        out = model(batch)
        (out.energy.sum() + out.forces.sum() + out.stress.sum()).backward()

    assert count_flops(step)[1] == count_flops_reference(step)[1]


def test_the_loop_reports_whether_flops_fell_back(tiny_splits, tmp_path):
    from engine import metrics as M
    from engine.config import DataConfig, TrialConfig
    from engine.loop.loop import run_trial

    cfg = TrialConfig(model="fcn", model_config={"hidden": 16, "num_rbf": 8}, epochs=1, batch_size=4,
                      data=DataConfig(max_val=6))  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("error", FlopFallbackWarning)
        final = run_trial(cfg, tmp_path / "run", splits=tiny_splits)
    assert final[M.FLOPS_FALLBACK] == 0.0 and final[M.FLOPS_CUM] > 0
