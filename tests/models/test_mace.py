"""``mace`` (mace-torch's ScaleShiftMACE behind the contract): what the shared contract tests do not cover.

The size ladder at the default 94 elements (trainable parameters, ``test_ladder_spans_four_decades``):

    m0  8 channels, L 0, correlation 2, max_ell 1, radial MLP 16¹       24,744
    m1 16 channels, L 0, correlation 2, max_ell 2, radial MLP 32²      118,272
    m2 32 channels, L 1, correlation 2, max_ell 2, radial MLP 64²      473,776
    m3 48 channels, L 1, correlation 3, max_ell 3, radial MLP 64³    1,709,088
    m4 80 channels, L 1, correlation 3, max_ell 3, radial MLP 64³    4,091,264
    m5 128 channels, L 2, correlation 3, max_ell 3, radial MLP 64³  10,629,264
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest
import torch

import models
from engine.data.graph import GraphDataset, GraphSpec, edge_geometry
from engine.errors import ConfigError
from engine.loop.flops import FlopAccountant, batch_features, count_flops
from models.mace import parse_elements
from tests.loop.conftest import emt_records as mixed_emt_records
from tests.models.conftest import CASES, build_model, make_batch

CASE = next(c for c in CASES if c.family == "mace")
LADDER = {"m0": 24_744, "m1": 118_272, "m2": 473_776, "m3": 1_709_088, "m4": 4_091_264, "m5": 10_629_264}


def test_ladder_spans_four_decades():
    counts = {name: models.build("mace", preset=name).num_parameters() for name in models.presets("mace")}
    print("mace ladder (trainable parameters):", counts)
    assert counts == LADDER
    assert list(counts.values()) == sorted(counts.values())


def test_mace_sees_the_engines_edge_vectors(cells):
    """mace's vector x_receiver − x_sender + unit_shift·cell is the engine's edge vector reversed (j's image → i)."""
    from mace.modules.utils import get_edge_vectors_and_lengths, get_symmetric_displacement

    model = build_model(CASE)
    batch = make_batch(cells, model)
    data = model.mace_inputs(batch)
    positions, shifts, _ = get_symmetric_displacement(
        data["positions"], data["unit_shifts"], data["cell"], data["edge_index"], batch.num_graphs, data["batch"]
    )
    vectors, lengths = get_edge_vectors_and_lengths(positions, data["edge_index"], shifts)
    geometry = edge_geometry(batch)
    torch.testing.assert_close(vectors, -geometry.vec, rtol=0, atol=1e-12)
    torch.testing.assert_close(lengths.squeeze(-1), geometry.dist, rtol=0, atol=1e-12)


def test_elements_are_a_spec_and_unknown_ones_are_refused(cells):
    assert parse_elements("13,28-29, 79") == [13, 28, 29, 79]
    with pytest.raises(ConfigError, match="elements"):
        models.config_from_dict("mace", {"elements": "Cu"})
    with pytest.raises(ConfigError, match="outside"):
        models.config_from_dict("mace", {"elements": "1-119"})
    model = build_model(CASE)  # knows Ni and Cu
    gold = [dataclasses.replace(cells[0], numbers=np.full(cells[0].n_atoms, 79)), cells[1]]
    with pytest.raises(ValueError, match=r"Z = \[79\]"):
        model(make_batch(gold, model))


def test_importing_mace_leaves_torch_load_safe():
    """``import mace`` sets TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 for the process; models.mace puts it back."""
    import models.mace  # noqa: F401

    assert "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD" not in os.environ


def test_flop_accountant_solves_every_step_exactly():
    """The accountant's linear law holds for mace: e3nn's tensor products and the product basis run as mm/bmm
    (torch.einsum), which the stock formulas count, so no formula is registered.

    Exception: a batch of exactly one atom executes 200 fewer FLOPs at this size (torch.einsum lays e3nn's
    contractions out differently when the atom dimension is 1). Such a batch is drawn only from a dataset of
    one-atom cells at batch size 1; the accountant's counted checks would catch it. Here batches hold ≥ 2 atoms.
    """
    config = {**CASE.config, "elements": "28,29,79"}
    model = models.build("mace", config)
    c = model.config
    ds = GraphDataset(mixed_emt_records(40, seed=4), GraphSpec(c.cutoff, c.max_neighbors, c.strict_neighbors))
    rng = np.random.default_rng(0)
    accountant = FlopAccountant(verify_every=0)
    predicted_steps = 0
    while predicted_steps < 15:
        idx = rng.choice(len(ds), size=int(rng.integers(2, 9)), replace=False).tolist()
        batch = ds.batch(idx)

        def step(batch=batch):
            out = model(batch)
            (out.energy.sum() + out.forces.pow(2).sum() + out.stress.sum()).backward()

        _, exact, per_op = count_flops(step)
        assert set(per_op) <= {"aten.mm", "aten.bmm"}
        features = batch_features(batch.n_atoms, batch.edge_index.shape[1])
        if accountant.must_count(features):
            assert accountant.record(features, exact) == exact
        else:
            predicted_steps += 1
            assert accountant.record(features, None) == exact
    assert not accountant.count_all
