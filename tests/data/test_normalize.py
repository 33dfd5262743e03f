"""Normalization: least-squares element references and target scales on synthetic data."""

from __future__ import annotations

import numpy as np
import pytest

from engine.data.normalize import ENERGY_SCALE_FLOOR_EV_PER_ATOM, fit_normalization
from engine.data.records import Record
from engine.errors import DataError
from models.base import MAX_Z


def _record(numbers, energy=None, forces=None, stress=None) -> Record:
    n = len(numbers)
    pos = np.arange(n * 3, dtype=float).reshape(n, 3)
    return Record(
        numbers=numbers, positions=pos, cell=np.eye(3) * 10, pbc=True, energy=energy, forces=forces, stress=stress
    )


def test_recovers_known_references_and_scales():
    rng = np.random.default_rng(0)
    true_ref = {13: -3.5, 29: -4.1, 78: -6.2}
    records = []
    for k in range(60):
        n = int(rng.integers(2, 9))
        numbers = rng.choice(list(true_ref), size=n)
        energy = sum(true_ref[z] for z in numbers)  # exact linear model, no noise
        forces = rng.normal(0, 0.5, size=(n, 3))
        stress = rng.normal(0, 0.01, size=(3, 3)) if k % 2 == 0 else None  # half lack stress
        records.append(_record(numbers, energy, forces, stress))
    norm = fit_normalization(records)
    assert len(norm.energy_ref) == MAX_Z
    for z, ref in true_ref.items():
        assert norm.energy_ref[z] == pytest.approx(ref, abs=1e-9)
    assert norm.energy_ref[1] == 0.0 and norm.energy_ref[26] == 0.0  # absent elements
    assert norm.energy_scale == ENERGY_SCALE_FLOOR_EV_PER_ATOM  # zero residual → floor (eV/atom)
    all_f = np.concatenate([r.forces for r in records])
    assert norm.forces_scale == pytest.approx(np.sqrt(np.mean(all_f**2)))
    all_s = np.stack([r.stress for r in records if r.stress is not None])
    assert norm.stress_scale == pytest.approx(np.sqrt(np.mean(all_s**2)))


def test_energy_scale_is_std_of_per_atom_residual():
    # pure Cu cells: ref_Cu = mean per-atom energy weighted by least squares; residuals ±0.1 eV/atom
    records = [_record([29] * 4, energy=4 * (-4.0 + 0.1)), _record([29] * 4, energy=4 * (-4.0 - 0.1))]
    norm = fit_normalization(records)
    assert norm.energy_ref[29] == pytest.approx(-4.0)
    assert norm.energy_scale == pytest.approx(0.1)


def test_missing_labels_give_unit_scales():
    norm = fit_normalization([_record([1, 1]), _record([8])])
    assert norm.energy_scale == 1.0 and norm.forces_scale == 1.0 and norm.stress_scale == 1.0
    assert not any(norm.energy_ref)


def test_collinear_compositions_do_not_fail():
    # every cell is 1:1 CuAu: only the sum ref_Cu + ref_Au is determined (minimum-norm split)
    records = [_record([29, 79] * k, energy=-9.0 * k) for k in (1, 2, 3)]
    norm = fit_normalization(records)
    assert norm.energy_ref[29] + norm.energy_ref[79] == pytest.approx(-9.0)


def test_emt_normalization_is_sane(emt_cache):
    _, records = emt_cache
    norm = fit_normalization(records)
    assert 1e-3 <= norm.energy_scale < 1.0  # eV/atom
    assert 0.05 < norm.forces_scale < 5.0  # eV/Å
    assert 1e-4 < norm.stress_scale < 0.2  # eV/Å³ (|p| ≤ 20 GPa ≈ 0.125 eV/Å³)


# ---------------------------------------------------------------------------------------
# one normalization per dataset, whatever the training-set size


def _data(folder, **kw):
    from engine.config import DataConfig

    return DataConfig(emt_size=40, emt_seed=7, cache_dir=str(folder), val_fraction=0.2, max_val=8, **kw)


def test_every_training_set_size_gets_the_dataset_normalization(emt_cache, tmp_path):
    from engine.data.dataset import load_splits, reference_subset
    from engine.data.splits import split_indices

    folder, records = emt_cache
    small = load_splits(_data(folder, train_size=5), progress=False)
    large = load_splits(_data(folder, train_size=25), progress=False)
    assert small.normalization == large.normalization
    # fitted on the fixed reference subset (here the whole pool), not on either training subset
    pool = split_indices(records, 0.2, 0.05).pool
    assert small.normalization == fit_normalization(reference_subset(records, pool, 10000))
    assert small.normalization.fitted_on == len(pool) > len(large.train)
    assert small.normalization != fit_normalization(small.train)
    # a smaller reference subset is a nested prefix of the same pool order
    capped = load_splits(_data(folder, train_size=5, normalization_size=12), progress=False)
    assert capped.normalization == fit_normalization([records[k] for k in pool[:12]])
    assert {r.uid for r in capped.train} <= {records[k].uid for k in pool[:12]}


def test_a_saved_normalization_file_is_used_and_round_trips(emt_cache, tmp_path):
    from engine.data.dataset import load_splits
    from engine.data.normalize import Normalization

    folder, _ = emt_cache
    ref = [0.0] * MAX_Z
    ref[29] = -3.25
    saved = Normalization(energy_ref=ref, energy_scale=0.5, forces_scale=0.25, stress_scale=0.125, fitted_on=7)
    path = tmp_path / "normalization.json"
    saved.save(path)
    assert Normalization.load(path) == saved
    assert load_splits(_data(folder, train_size=5, normalization_file=str(path)), progress=False).normalization == saved
    missing = load_splits(_data(folder, train_size=5, normalization_file=str(tmp_path / "none.json")), progress=False)
    assert missing.normalization == load_splits(_data(folder, train_size=5), progress=False).normalization
    path.write_text("{not json")
    with pytest.raises(DataError, match="cannot read the normalization file"):
        Normalization.load(path)


def test_a_trial_trains_and_saves_the_dataset_normalization(emt_cache, tmp_path):
    import torch

    from engine.config import TrialConfig
    from engine.data.dataset import load_splits
    from engine.loop.loop import run_trial

    folder, _ = emt_cache
    cfg = TrialConfig(model="fcn", model_config={"hidden": 8, "num_rbf": 4}, epochs=1, batch_size=4,
                      data=_data(folder, train_size=6), device="cpu")
    splits = load_splits(cfg.data, progress=False)
    run_trial(cfg, tmp_path / "run", splits=splits)
    ck = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert ck["normalization"] == splits.normalization.to_dict()
