"""The ASE calculator on really trained checkpoints: shapes, relaxation, NVE energy drift, safe loading.

Two tiny models are trained briefly with the real loop (``run_trial``) on the embedded EMT
data: ``fcn`` (conservative: F = −∂E/∂x) and the seed study's ``transformer`` (direct force
head, raw xyz input). Each relaxes a strained Cu cell and runs 200 steps of velocity-Verlet NVE
at 1 fs; the drift of the total energy (eV/atom) is written to ``<tmp>/energy_drift.json`` and
printed (``pytest -s`` shows it).
"""

from __future__ import annotations

import dataclasses
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

import models
from engine.config import DataConfig, OptimConfig, TrialConfig
from engine.errors import CheckpointError
from models.calculator import EngineCalculator, load_potential, read_checkpoint

MD_STEPS = 200
MD_DT_FS = 1.0
MD_TEMPERATURE_K = 300.0
# A model with forces = −∇E conserves E_kin + E_pot up to velocity Verlet's O(dt²) error
# (measured ~6e-6 eV/atom here); direct force heads have no such guarantee (~2e-2 eV/atom).
CONSERVATIVE_DRIFT_MAX_EV_PER_ATOM = 1e-4

# Tiny, quick trials: no neighbor cap (a cap makes the energy jump when neighbors swap rank,
# which would break energy conservation for any model), cutoff 4 Å.
# (The ``p*`` transformer presets see geometry only through attention biases, which cannot change
# anything in a one-element cell: every token is the same, so their Cu energy is constant.)
TRIALS = {
    "fcn": {"preset": "f1", "model_config": {"cutoff": 4.0, "max_neighbors": 0}},
    "transformer": {"preset": "t0", "model_config": {"cutoff": 4.0, "max_neighbors": 0}},
}


class _Custom:
    """A class that only full unpickling can rebuild (what weights_only=True refuses)."""

    def __init__(self) -> None:
        self.payload = [1, 2, 3]


def _train(name: str, root: Path) -> Path:
    from engine.loop.loop import run_trial

    spec = TRIALS[name]
    cfg = TrialConfig(
        model=name,
        preset=spec["preset"],
        model_config=dict(spec["model_config"]),
        data=DataConfig(emt_size=120, emt_seed=0, train_size=96, max_val=16, cache_dir=str(root / "cache")),
        optim=OptimConfig(lr=1e-2, ema_decay=0.9),
        epochs=10,
        batch_size=8,
        max_atoms_per_batch=256,
        seed=0,
        device="cpu",
        count_flops=False,
        threads=1,
    )
    run_dir = root / f"run-{name}"
    run_trial(cfg, run_dir)
    ckpt = run_dir / "checkpoint.pt"
    assert ckpt.is_file()
    return ckpt


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("calc")
    return {name: _train(name, root) for name in TRIALS}  # both share one EMT cache under root


def _strained_cu(strain: float = 0.03, seed: int = 0):
    from ase.build import bulk

    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 2, 2))  # 32 atoms
    cell = np.asarray(atoms.get_cell()) @ (np.eye(3) + np.diag([strain, -strain / 2, strain / 3]))
    atoms.set_cell(cell, scale_atoms=True)
    atoms.rattle(0.03, seed=seed)
    return atoms


def _relax(atoms, steps: int = 15) -> tuple[float, float]:
    """BFGS on positions and cell; returns the model energy before and after [eV]."""
    from ase.filters import FrechetCellFilter
    from ase.optimize import BFGS
    from threadpoolctl import threadpool_limits

    e0 = atoms.get_potential_energy()
    # one BLAS thread: the filter's 9×9 matrix functions are ~100× slower with threads on a busy machine
    with threadpool_limits(1):
        BFGS(FrechetCellFilter(atoms), logfile=None).run(fmax=0.02, steps=steps)
    return e0, atoms.get_potential_energy()


def _nve_drift(atoms) -> dict[str, float]:
    """Total-energy drift of 200 velocity-Verlet steps (1 fs) from 300 K, eV/atom."""
    from ase import units
    from ase.md.velocitydistribution import Stationary, thermalize_momenta
    from ase.md.verlet import VelocityVerlet

    thermalize_momenta(atoms, temperature_K=MD_TEMPERATURE_K, rng=np.random.default_rng(0))
    Stationary(atoms)
    n = len(atoms)
    totals = [atoms.get_potential_energy() + atoms.get_kinetic_energy()]
    dyn = VelocityVerlet(atoms, timestep=MD_DT_FS * units.fs, logfile=None)
    dyn.attach(lambda: totals.append(atoms.get_potential_energy() + atoms.get_kinetic_energy()), interval=1)
    dyn.run(MD_STEPS)
    totals_arr = np.asarray(totals)
    return {
        "drift_ev_per_atom": float(abs(totals_arr[-1] - totals_arr[0]) / n),
        "max_deviation_ev_per_atom": float(np.max(np.abs(totals_arr - totals_arr[0])) / n),
        "temperature_end_k": float(atoms.get_temperature()),
    }


def test_calculator_shapes_units_and_checkpoint_metadata(trained: dict[str, Path]) -> None:
    from ase.stress import full_3x3_to_voigt_6_stress

    for name, path in trained.items():
        ckpt = read_checkpoint(path)
        assert ckpt["model"] == name
        model = load_potential(path)
        assert model.name == name and not model.training
        assert all(p.dtype == torch.float64 for p in model.parameters())
        # trained with EMA: the calculator uses the averaged weights, not the last step's
        assert ckpt["ema_state"] is not None
        live = load_potential(path, use_ema=False)
        key = next(k for k, _ in model.named_parameters())
        assert torch.equal(model.state_dict()[key], ckpt["ema_state"][key].double())
        assert not torch.equal(model.state_dict()[key], live.state_dict()[key])
        atoms = _strained_cu()
        atoms.calc = EngineCalculator(path)
        energy = atoms.get_potential_energy()
        forces = atoms.get_forces()
        stress = atoms.get_stress()
        assert isinstance(energy, float) and np.isfinite(energy)
        assert atoms.get_potential_energy() == atoms.calc.results["free_energy"]
        assert forces.shape == (32, 3) and np.all(np.isfinite(forces))
        assert stress.shape == (6,) and np.all(np.isfinite(stress))
        # same numbers as the model itself: Voigt order (xx, yy, zz, yz, xz, xy) of the 3×3 output
        assert np.allclose(full_3x3_to_voigt_6_stress(atoms.get_stress(voigt=False)), stress)
        # per-atom energy of a trained model sits near EMT's scale (|E| of a few eV/atom at most), not at zero
        assert abs(energy) / len(atoms) < 20.0


def test_conservative_stress_is_the_strain_derivative(trained: dict[str, Path]) -> None:
    """σ_xx = (1/V) ∂E/∂ε_xx by central differences (ASE sign), for the conservative fcn model."""
    atoms = _strained_cu()
    atoms.calc = EngineCalculator(trained["fcn"])
    sigma = atoms.get_stress(voigt=False)
    h = 1e-5
    energies = []
    for sign in (1, -1):
        a = atoms.copy()
        a.calc = atoms.calc
        deform = np.eye(3)
        deform[0, 0] += sign * h
        a.set_cell(np.asarray(atoms.get_cell()) @ deform, scale_atoms=True)
        energies.append(a.get_potential_energy())
    numeric = (energies[0] - energies[1]) / (2 * h) / atoms.get_volume()
    assert numeric == pytest.approx(sigma[0, 0], rel=1e-4, abs=1e-8)


def test_relax_and_nve_energy_drift(trained: dict[str, Path], tmp_path: Path) -> None:
    results = {}
    for name, path in trained.items():
        model = load_potential(path)
        atoms = _strained_cu()
        atoms.calc = EngineCalculator(model)
        e0, e1 = _relax(atoms)
        if model.force_mode == "conservative":  # direct forces are not −∇E: BFGS may raise E
            assert e1 < e0, f"{name}: relaxation did not lower the model's energy ({e0} → {e1} eV)"
        results[name] = {
            "force_mode": model.force_mode,
            "n_params": model.num_parameters(),
            "preset": TRIALS[name]["preset"],
            "relax_energy_change_ev_per_atom": (e1 - e0) / len(atoms),
            **_nve_drift(atoms),
        }
    out = tmp_path / "energy_drift.json"
    out.write_text(json.dumps(results, indent=2))
    print(f"\nNVE energy drift ({MD_STEPS} steps × {MD_DT_FS} fs, 32 Cu atoms, {MD_TEMPERATURE_K:.0f} K) → {out}")
    print(json.dumps(results, indent=2))
    fcn = results["fcn"]["max_deviation_ev_per_atom"]
    assert np.isfinite(fcn) and fcn < CONSERVATIVE_DRIFT_MAX_EV_PER_ATOM
    assert np.isfinite(results["transformer"]["max_deviation_ev_per_atom"])
    # the point of the comparison: a conservative model conserves energy far better
    assert fcn < results["transformer"]["max_deviation_ev_per_atom"]


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_refuses_pickled_objects(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"format": "engine-checkpoint/1", "model": "fcn", "model_state": {}, "extra": _Custom()}, path)
    # the file really needs full unpickling: plain torch.load (weights_only=False) rebuilds the object
    assert isinstance(torch.load(path, weights_only=False)["extra"], _Custom)
    with pytest.raises(CheckpointError, match=r"not a trained engine checkpoint.*refusing to unpickle arbitrary"):
        load_potential(path)
    plain = tmp_path / "plain.pt"
    with plain.open("wb") as fh:
        pickle.dump({"a": 1}, fh)
    with pytest.raises(CheckpointError, match="not a trained engine checkpoint"):
        load_potential(plain)


def test_refuses_files_that_are_not_engine_checkpoints(tmp_path: Path) -> None:
    other = tmp_path / "weights.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, other)
    with pytest.raises(CheckpointError, match=r"missing key\(s\) format, model, model_config"):
        load_potential(other)
    with pytest.raises(CheckpointError, match="not found"):
        load_potential(tmp_path / "nope.pt")


def test_checkpoint_from_another_model_names_both(trained: dict[str, Path], tmp_path: Path) -> None:
    ckpt = torch.load(trained["fcn"], weights_only=True)
    ckpt["model"] = "schnet"
    ckpt["model_config"] = {"cutoff": 4.0, "max_neighbors": 0}
    swapped = tmp_path / "checkpoint.pt"
    torch.save(ckpt, swapped)
    with pytest.raises(CheckpointError, match=r"weights in .* do not fit model 'schnet' with config .*another model"):
        load_potential(swapped)
    ckpt["model"] = "no_such_model"
    torch.save(ckpt, swapped)
    with pytest.raises(CheckpointError, match=r"names model 'no_such_model'.*choose one of"):
        load_potential(tmp_path)  # a trial folder works too


def test_calculator_loads_a_trial_from_its_mlflow_run(trained: dict[str, Path], tmp_path: Path) -> None:
    """A trial's run logs its files as artifacts; ``runs:/<run_id>`` rebuilds the same model without the folder."""
    import shutil

    from mlflow import MlflowClient

    from engine.sweep.tracking import SweepTracker

    run_dir = tmp_path / "trial"
    shutil.copytree(trained["fcn"].parent, run_dir)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = SweepTracker(uri, "calc-sweep", "params")
    tracker.start_parent({"axis": "params"}, None)
    run_id = tracker.start_trial("fcn-f1", {"model": "fcn"}, checkpoint_path=str(run_dir / "checkpoint.pt"))
    tracker.end_trial("fcn-f1", "FINISHED", "completed")
    run = MlflowClient(uri).get_run(run_id)
    assert run.data.tags["engine.artifacts"] == "config.json,metrics.jsonl,checkpoint.pt"
    names = sorted(f.path for f in MlflowClient(uri).list_artifacts(run_id))
    assert names == ["checkpoint.pt", "config.json", "metrics.jsonl"]

    atoms = _strained_cu()
    atoms.calc = EngineCalculator(run_dir / "checkpoint.pt")
    expected = (atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress())
    shutil.rmtree(run_dir)  # the cluster is gone: only MLflow is left
    atoms = _strained_cu()
    atoms.calc = EngineCalculator(f"runs:/{run_id}", tracking_uri=uri)
    assert atoms.get_potential_energy() == expected[0]
    assert np.array_equal(atoms.get_forces(), expected[1]) and np.array_equal(atoms.get_stress(), expected[2])
    assert load_potential(f"runs:/{run_id}/checkpoint.pt", tracking_uri=uri).name == "fcn"

    with pytest.raises(CheckpointError, match=r"cannot fetch checkpoint runs:/0123456789abcdef/checkpoint.pt .*run id"):
        EngineCalculator("runs:/0123456789abcdef", tracking_uri=uri)


@pytest.mark.parametrize("name", models.names())
def test_every_registered_family_round_trips_through_a_checkpoint(name: str, tmp_path: Path) -> None:
    """Save a (randomly initialized) model in the fixed format; the calculator reproduces its outputs."""
    from ase.build import bulk

    from models.base import MAX_Z, Normalization
    from models.checkpoint import save_checkpoint

    torch.manual_seed(0)
    preset = next(iter(models.presets(name)))
    model = models.build(name, preset=preset)
    ref = [0.0] * MAX_Z
    ref[29] = -3.5  # eV per Cu atom
    model.set_normalization(Normalization(energy_ref=ref, energy_scale=0.1, forces_scale=0.5, stress_scale=0.01))
    payload = {
        "format": "engine-checkpoint/1",
        "model": name,
        "model_config": dataclasses.asdict(model.config),
        "normalization": model.get_normalization().to_dict(),
        "model_state": model.state_dict(),
        "ema_state": None,
        "optimizer_state": {},
        "scheduler_state": {},
        "scaler_state": None,
        "epoch": 0,
        "step": 0,
        "flops_cum": 0.0,
        "wall_s": 0.0,
        "rng": {},
        "trial_config": {},
        "metrics_history": [],
    }
    path = save_checkpoint(tmp_path / "checkpoint.pt", payload)

    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 1, 1))
    atoms.rattle(0.05, seed=1)
    atoms.calc = EngineCalculator(path)
    torch.manual_seed(1)  # equiformer_v2 draws a random roll per edge; outputs agree to float error anyway
    energy, forces = atoms.get_potential_energy(), atoms.get_forces()
    direct = EngineCalculator(model.double().eval())
    torch.manual_seed(1)
    assert energy == pytest.approx(direct.get_potential_energy(atoms), rel=1e-9, abs=1e-9)
    assert np.allclose(forces, direct.get_forces(atoms), atol=1e-8)
    assert energy / len(atoms) == pytest.approx(-3.5, abs=2.0)  # the per-element reference is applied
