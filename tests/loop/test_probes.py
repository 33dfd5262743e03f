"""Physical probes: hand-checkable cases (EMT probing itself) and a model that heats up."""

from __future__ import annotations

import numpy as np
from ase.build import bulk
from ase.calculators.calculator import Calculator, all_changes
from ase.calculators.emt import EMT

from engine.config import ProbeConfig
from engine.data.records import Record
from engine.loop import probes


def _cells(n: int = 2) -> list[Record]:
    rng = np.random.default_rng(3)
    out = []
    for k in range(n):
        atoms = bulk("Cu", "fcc", a=3.62, cubic=True).repeat((2, 1, 1))
        atoms.positions += rng.normal(0.0, 0.05, size=atoms.positions.shape)
        out.append(Record.from_atoms(atoms, uid=f"cu-{k}"))
    return out


class _Heater(Calculator):
    """A 'model' whose forces are large and non-conservative (a direct head gone wrong)."""

    implemented_properties = ["energy", "forces"]  # noqa: RUF012 - ASE's API

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        self.results = {"energy": 0.0, "forces": np.tile([5.0, 0.0, 0.0], (len(self.atoms), 1)) * np.sign(
            np.arange(len(self.atoms)) % 2 - 0.5
        )[:, None]}


def test_emt_probing_itself_conserves_energy_and_relaxes_to_its_own_minimum() -> None:
    cfg = ProbeConfig(enabled=True, structures=2, nve_steps=50, relax_steps=200, fmax=0.02)
    out = probes.run_probes(EMT, _cells(), cfg, reference=EMT)
    assert set(out) == set(probes.PROBE_METRICS)
    assert out[probes.NVE_STABLE] == 1.0
    # velocity Verlet at 1 fs on EMT copper: total energy is conserved to well below a meV/atom
    assert 0.0 < out[probes.NVE_DRIFT] < 1e-3
    # model == reference: the relaxed structure is the reference's minimum, energies agree to float error
    assert out[probes.RELAX_ENERGY_ERROR] < 1e-9
    assert out[probes.RELAX_MAX_FORCE] <= cfg.fmax


def test_a_heating_model_is_unstable_and_no_reference_gives_nan() -> None:
    cfg = ProbeConfig(enabled=True, structures=2, nve_steps=100, relax_steps=0)
    out = probes.run_probes(_Heater, _cells(), cfg, reference=None)
    assert out[probes.NVE_STABLE] == 0.0
    assert np.isnan(out[probes.NVE_DRIFT])  # no stable run to take a drift from
    assert np.isnan(out[probes.RELAX_MAX_FORCE]) and np.isnan(out[probes.RELAX_ENERGY_ERROR])


def test_the_loop_probes_its_final_weights_in_the_last_report_only(tmp_path) -> None:
    """probes.enabled: the last report carries the probe metrics; the trained model and every other number
    are those of the same trial without probes (the probes run on a float64 copy)."""
    from engine.config import DataConfig, OptimConfig, TrialConfig
    from engine.loop.loop import run_trial
    from tests.loop.conftest import TinySplits, emt_records

    records = emt_records(30, seed=4)
    splits = TinySplits(train=records[:20], val=records[20:25], test=records[25:], pool_size=20)

    class Rows:
        def __init__(self) -> None:
            self.rows: list[dict] = []

        def report(self, metrics, checkpoint_dir=None):
            self.rows.append(dict(metrics))

    def config(enabled: bool) -> TrialConfig:
        probe = ProbeConfig(enabled=enabled, structures=2, nve_steps=5, relax_steps=5)
        return TrialConfig(model="fcn", model_config={"hidden": 16, "num_rbf": 8}, epochs=2, batch_size=4, seed=1,
                           optim=OptimConfig(lr=3e-3, ema_decay=0.9), data=DataConfig(max_val=5), probes=probe)

    on, off = Rows(), Rows()
    run_trial(config(True), tmp_path / "on", reporter=on, splits=splits)
    run_trial(config(False), tmp_path / "off", reporter=off, splits=splits)
    last = on.rows[-1]
    assert set(probes.PROBE_METRICS) | {probes.PROBE_WALL_S, probes.PROBE_STRUCTURES} <= set(last)
    assert last[probes.PROBE_STRUCTURES] == 2.0 and 0.0 <= last[probes.NVE_STABLE] <= 1.0
    assert np.isfinite(last[probes.RELAX_MAX_FORCE])  # data.path None: the embedded EMT set, EMT scores it
    assert not any(k.startswith("probe_") for row in on.rows[:-1] for k in row)
    assert not any(k.startswith("probe_") for row in off.rows for k in row)
    for a, b in zip(on.rows, off.rows, strict=True):  # training is untouched by the probes
        assert a["val_loss"] == b["val_loss"] and a.get("test_loss") == b.get("test_loss")
