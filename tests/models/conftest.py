"""Shared fixtures for the model contract tests: tiny EMT-labelled cells, batches, an ASE adapter.

Every family enters the contract tests through :data:`CASES`, one (family, tiny config)
pair each. A new family joins by appending a :class:`Case` here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch
from ase.calculators.calculator import Calculator, all_changes

import models
from engine.data.graph import Batch, GraphSpec, collate, neighbor_graph
from engine.data.records import Record, tensor_to_voigt
from models.base import Potential


@dataclass(frozen=True)
class Case:
    """One family at a tiny size. ``invariant``: energy is invariant under rotation, translation and
    the choice of periodic image (False for the plain transformer, which reads raw xyz by design)."""

    id: str
    family: str
    config: dict = field(default_factory=dict)
    invariant: bool = True
    # energy of an n×1×1 supercell = n × the cell's; False for the periodic transformer, whose attention
    # bias sums j's images within the cutoff into one key (a supercell splits them over copies of j)
    extensive: bool = True


# max_neighbors=0 (no cap) keeps neighbor sets stable under tiny finite-difference strains.
CASES: list[Case] = [
    Case(
        "transformer",
        "transformer",
        {"d_model": 8, "depth": 1, "heads": 2, "cutoff": 4.0, "max_neighbors": 0},
        invariant=False,
        extensive=False,
    ),
    Case(
        "transformer_periodic",
        "transformer",
        {
            "d_model": 16,
            "depth": 2,
            "heads": 2,
            "periodic": True,
            "xyz_input": False,
            "num_rbf": 8,
            "cutoff": 4.0,
            "max_neighbors": 0,
        },
        extensive=False,
    ),
    Case(
        "fcn",
        "fcn",
        {"species_channels": 4, "num_rbf": 16, "hidden": 32, "depth": 2, "cutoff": 4.0, "max_neighbors": 0},
    ),
    Case(
        "schnet",
        "schnet",
        {
            "hidden_channels": 16,
            "num_filters": 16,
            "num_interactions": 2,
            "num_gaussians": 16,
            "cutoff": 4.0,
            "max_neighbors": 0,
        },
    ),
    # exact_equivariant_gate: the S² grid is equivariant only to ~1e-4, the contract asks 1e-9
    Case(
        "equiformer_v2",
        "equiformer_v2",
        {
            "num_layers": 2,
            "sphere_channels": 8,
            "attn_hidden_channels": 8,
            "num_heads": 2,
            "attn_alpha_channels": 4,
            "attn_value_channels": 4,
            "ffn_hidden_channels": 8,
            "edge_channels": 8,
            "lmax": 2,
            "mmax": 1,
            "grid_resolution": 12,
            "exact_equivariant_gate": True,
            "cutoff": 4.0,
            "max_neighbors": 0,
        },
    ),
    # L 1, correlation 3, two interactions: every mace block at its smallest, Cu and Ni only
    Case(
        "mace",
        "mace",
        {
            "num_channels": 4,
            "max_l": 1,
            "correlation": 3,
            "max_ell": 2,
            "radial_mlp_width": 8,
            "radial_mlp_depth": 1,
            "elements": "28,29",
            "cutoff": 4.0,
            "max_neighbors": 0,
        },
    ),
]


def force_mode(case: Case) -> str:
    return models.model_class(case.family).force_mode


def build_model(case: Case, dtype: torch.dtype = torch.float64, seed: int = 0) -> Potential:
    torch.manual_seed(seed)
    return models.build(case.family, dict(case.config)).to(dtype)


def graph_spec(model: Potential) -> GraphSpec:
    c = model.config
    return GraphSpec(cutoff=c.cutoff, max_neighbors=c.max_neighbors, strict=c.strict_neighbors)


def make_batch(records: Sequence[Record], model: Potential, dtype: torch.dtype = torch.float64) -> Batch:
    spec = graph_spec(model)
    return collate(list(records), [neighbor_graph(r, spec) for r in records], dtype=dtype)


def random_cell(rng: np.random.Generator, repeat: tuple[int, int, int] = (1, 1, 2)):
    """A rattled, strained fcc Cu/Ni cell (ase.Atoms) with a random composition."""
    from ase.build import bulk

    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(repeat)
    atoms.numbers = rng.choice([28, 29], size=len(atoms))
    strain = np.eye(3) + rng.uniform(-0.03, 0.03, size=(3, 3))
    atoms.set_cell(atoms.cell.array @ strain, scale_atoms=True)
    atoms.positions += rng.normal(0.0, 0.06, size=atoms.positions.shape)
    return atoms


def emt_records(n: int, seed: int = 0) -> list[Record]:
    """``n`` random Cu/Ni cells of 8 atoms labelled by ASE's EMT (energy eV, forces eV/Å, stress eV/Å³)."""
    from ase.calculators.emt import EMT

    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        atoms = random_cell(rng)
        atoms.calc = EMT()
        atoms.get_potential_energy()
        atoms.get_forces()
        atoms.get_stress()
        out.append(Record.from_atoms(atoms, uid=f"emt-{seed}-{k}"))
    return out


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models run fastest on one thread, and the CI machine is shared."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def emt_set() -> list[Record]:
    return emt_records(20, seed=0)


@pytest.fixture
def cells() -> list[Record]:
    """Two unlabelled random cells (8 and 16 atoms)."""
    rng = np.random.default_rng(7)
    out = []
    for k, rep in enumerate([(1, 1, 2), (2, 2, 1)]):
        a = random_cell(rng, rep)
        out.append(Record(numbers=a.numbers, positions=a.positions, cell=a.cell.array, pbc=a.pbc, uid=f"cell{k}"))
    return out


class PotentialCalculator(Calculator):
    """Minimal ASE adapter (test-only): rebuilds the graph on every call, float64."""

    implemented_properties = ["energy", "free_energy", "forces", "stress"]  # noqa: RUF012 - ASE's class attribute

    def __init__(self, model: Potential) -> None:
        super().__init__()
        self.model = model

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        a = self.atoms
        rec = Record(numbers=a.numbers, positions=a.positions, cell=a.cell.array, pbc=a.pbc, uid="ase")
        out = self.model(make_batch([rec], self.model, torch.float64))
        energy = float(out.energy[0].detach())
        self.results = {
            "energy": energy,
            "free_energy": energy,
            "forces": out.forces.detach().numpy().copy(),
            "stress": tensor_to_voigt(out.stress[0].detach().numpy()),
        }
