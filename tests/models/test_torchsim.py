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


def _ase_results(model, atoms_list):
    calc = EngineCalculator(model)
    out = []
    for atoms in atoms_list:
        a = atoms.copy()
        a.calc = calc
        out.append((a.get_potential_energy(), a.get_forces(), a.get_stress(voigt=False)))
    return out


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
    start = 0
    for k, (energy, forces, stress) in enumerate(_ase_results(model, atoms_list)):
        n = len(atoms_list[k])
        np.testing.assert_allclose(float(out["energy"][k]), energy, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(out["forces"][start : start + n].numpy(), forces, rtol=1e-8, atol=1e-9)
        np.testing.assert_allclose(out["stress"][k].numpy(), stress, rtol=1e-8, atol=1e-10)
        start += n


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
    back = relaxed.to_atoms()
    start = 0
    for k, (energy, forces, stress) in enumerate(_ase_results(model, back)):
        n = len(back[k])
        np.testing.assert_allclose(float(final["energy"][k]), energy, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(final["forces"][start : start + n].numpy(), forces, rtol=1e-8, atol=1e-9)
        np.testing.assert_allclose(final["stress"][k].numpy(), stress, rtol=1e-8, atol=1e-10)
        start += n
