"""Every family as a torch-sim model: same numbers as the ASE calculator, and a batched relaxation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.calculator import EngineCalculator
from tests.models.conftest import CASES, Case, build_model, random_cell

ts = pytest.importorskip("torch_sim", reason="torch-sim is the optional extra '.[torchsim]' (make test installs it)")
from models.torchsim import EngineTorchSimModel  # noqa: E402 - needs torch_sim


def _cells(n: int = 3, seed: int = 11):
    rng = np.random.default_rng(seed)
    return [random_cell(rng, rep) for rep in [(1, 1, 2), (2, 2, 1), (1, 1, 1)][:n]]


def _assert_matches_ase(out: dict, model, atoms_list) -> None:
    """torch-sim's batched outputs equal EngineCalculator's, cell by cell (eV, eV/Å, eV/Å³)."""
    calc = EngineCalculator(model)
    start = 0
    for k, atoms in enumerate(atoms_list):
        a = atoms.copy()
        a.calc = calc
        n = len(a)
        np.testing.assert_allclose(float(out["energy"][k]), a.get_potential_energy(), rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(out["forces"][start : start + n].numpy(), a.get_forces(), rtol=1e-8, atol=1e-9)
        np.testing.assert_allclose(out["stress"][k].numpy(), a.get_stress(voigt=False), rtol=1e-8, atol=1e-10)
        start += n


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_batched_outputs_match_the_ase_calculator(case: Case) -> None:
    model = build_model(case, torch.float64)
    atoms_list = _cells()
    ts_model = EngineTorchSimModel(model, dtype=torch.float64)
    state = ts.initialize_state(atoms_list, ts_model.device, ts_model.dtype)
    out = ts_model(state)
    assert out["energy"].shape == (3,)
    assert out["forces"].shape == (sum(len(a) for a in atoms_list), 3)
    assert out["stress"].shape == (3, 3, 3)
    _assert_matches_ase(out, model, atoms_list)


def test_batched_relaxation_lowers_every_cell_and_agrees_with_ase() -> None:
    case = next(c for c in CASES if c.family == "fcn")  # conservative: relaxation follows −∂E/∂x
    model = build_model(case, torch.float64)
    ts_model = EngineTorchSimModel(model, dtype=torch.float64)
    atoms_list = _cells()
    state = ts.initialize_state(atoms_list, ts_model.device, ts_model.dtype)
    e0 = ts_model(state)["energy"].clone()
    relaxed = ts.optimize(
        system=state,
        model=ts_model,
        optimizer=ts.frechet_cell_fire,  # positions and cell: uses the stress too
        convergence_fn=ts.generate_force_convergence_fn(force_tol=1e-3),
        max_steps=60,
    )
    final = ts_model(relaxed)
    assert torch.all(final["energy"] < e0), (e0, final["energy"])
    # the relaxed cells, read back as ASE atoms, get the same energies, forces and stress from ASE
    _assert_matches_ase(final, model, relaxed.to_atoms())
