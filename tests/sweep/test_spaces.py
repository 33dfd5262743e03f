"""Search spaces: the shipped defaults load, and bad ones fail with one clear line."""

from __future__ import annotations

import pytest
import yaml

from engine.errors import ConfigError
from engine.sweep.spaces import (
    AXES,
    default_space_path,
    expand,
    load_space,
    space_from_dict,
    with_overrides,
)

BASE = {
    "axis": "params",
    "model": "transformer",
    "sizes": ["p0", "p1"],
    "train_sizes": [40],
    "seeds": [0],
    "fixed": {"epochs": 2, "data": {"emt_size": 60}},
}


def make(**changes):
    values = {k: (dict(v) if isinstance(v, dict) else v) for k, v in BASE.items()}
    values.update(changes)
    return values


@pytest.mark.parametrize("axis", AXES)
def test_default_spaces_load_and_say_how_to_run(axis):
    path = default_space_path(axis)
    text = path.read_text()
    assert text.startswith("#"), "a space opens with a comment: what it is for and the command"
    assert "python -m engine." in text.split("\n\n")[0]
    space = load_space(path, axis=axis)
    assert space.axis == axis
    specs = expand(space)
    assert len({s.trial_id for s in specs}) == len(specs)


def test_default_grids_meet_the_issue_minimums():
    assert len(load_space(axis="params").sizes) >= 5
    assert len(load_space(axis="data").train_sizes) >= 4
    compute = load_space(axis="compute")
    assert len(compute.sizes) >= 3 and len(compute.flop_budgets) >= 2
    assert all(s.config.max_flops == compute.flop_budgets[-1] for s in expand(compute))


def test_expand_is_deterministic_and_complete():
    space = space_from_dict(make(seeds=[0, 1], train_sizes=[20, 40]))
    specs = expand(space)
    assert [s.trial_id for s in specs] == [s.trial_id for s in expand(space)]
    assert len(specs) == 2 * 2 * 2
    first = specs[0]
    assert first.trial_id == "transformer-p0-n20-s0"
    assert first.config.preset == "p0" and first.config.data.train_size == 20 and first.config.seed == 0
    assert first.config.epochs == 2 and first.config.data.emt_size == 60


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"colour": "red"}, "unknown key(s) colour"),
        ({"axis": "size"}, "'axis' must be one of"),
        ({"sizes": []}, "'sizes' is an empty grid"),
        ({"sizes": "p0"}, "'sizes' must be a list"),
        ({"sizes": ["p0", "big"]}, "size 'big' is not a preset of model 'transformer'"),
        ({"model": "mystery"}, "unknown model 'mystery'"),
        ({"train_sizes": [0]}, "'train_sizes' entries must be positive integers"),
        ({"train_sizes": ["many"]}, "'train_sizes' entries must be positive integers"),
        ({"seeds": [0, 0]}, "'seeds' has duplicate values"),
        ({"fixed": {"epochs": "ten"}}, "fixed.epochs must be an integer"),
        ({"fixed": {"optimizer": {}}}, "unknown key(s) optimizer"),
        ({"fixed": {"seed": 3}}, "set 'seed' with the top-level 'seeds'"),
        ({"fixed": {"data": {"train_size": 3}}}, "top-level 'train_sizes'"),
        ({"resources": {"workers": 0}}, "workers ≥ 1"),
        ({"resources": {"gpus": 1}}, "unknown key(s) gpus"),
        ({"flop_budgets": [1e9, 3e9]}, "only applies to axis compute"),
        ({"axis": "compute"}, "missing 'flop_budgets'"),
        ({"axis": "compute", "scheduler": "asha", "flop_budgets": [1e9, 2e9, 8e9]}, "must be geometric under"),
        ({"axis": "compute", "flop_budgets": [3e9, 1e9]}, "must increase"),
        ({"axis": "compute", "flop_budgets": [1e9]}, "at least two rungs"),
        ({"axis": "hpo", "search": {"lr_min": 1e-2, "lr_max": 1e-3}}, "0 < lr_min < lr_max"),
        ({"axis": "hpo", "search": {"batch_sizes": []}}, "batch_sizes must be a non-empty list"),
        ({"axis": "hpo"}, "tunes one model size"),
        ({"search": {"num_samples": 2}}, "only applies to axis hpo"),
        # the ranges engine.train checks (engine.config.check_ranges), per grid point
        ({"fixed": {"epochs": 0}}, "transformer-p0-n40-s0: epochs must be ≥ 1, got 0; fix fixed.epochs"),
        ({"fixed": {"optim": {"lr": -1e-3}}}, "lr must be > 0, got -0.001; fix fixed.optim.lr"),
        ({"fixed": {"batch_size": 0}}, "batch_size must be ≥ 1"),
        ({"fixed": {"max_atoms_per_batch": 0}}, "max_atoms_per_batch must be ≥ 1"),
        ({"fixed": {"optim": {"ema_decay": 1.0}}}, "ema_decay must be in (0, 1)"),
        ({"fixed": {"model_config": {"width": 3}}}, "unknown transformer config key(s) width"),
    ],
)
def test_bad_spaces_raise_one_line_config_errors(changes, message):
    with pytest.raises(ConfigError) as info:
        space_from_dict(make(**changes), source="space.yaml")
    text = str(info.value)
    assert message in text
    assert "\n" not in text
    assert text.startswith(("space.yaml", "unknown key"))


def test_load_space_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_space(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("axis: [params\n")
    with pytest.raises(ConfigError, match=r"cannot parse .*broken\.yaml"):
        load_space(broken)
    data = tmp_path / "data.yaml"
    data.write_text(yaml.safe_dump(make(axis="data")))
    with pytest.raises(ConfigError, match="pass --axis data"):
        load_space(data, axis="params")


def test_overrides_apply_and_revalidate():
    space = space_from_dict(make())
    out = with_overrides(space, epochs=5, lr=1e-2, seeds=3, amp=True, batch_size=4)
    specs = expand(out)
    assert {s.config.seed for s in specs} == {0, 1, 2}
    assert all(s.config.epochs == 5 and s.config.optim.lr == 1e-2 and s.config.amp for s in specs)
    assert all(s.config.batch_size == 4 for s in specs)
    with pytest.raises(ConfigError, match="has no preset"):
        with_overrides(space, model="fcn")
    fcn = with_overrides(space, model="fcn", sizes=["f0", "f1"])
    assert [s.config.model for s in expand(fcn)] == ["fcn", "fcn"]


@pytest.mark.parametrize("fixed", [{"epochs": 0}, {"optim": {"lr": -0.01}}])
def test_sweep_with_bad_ranges_stops_with_one_line_and_writes_nothing(tmp_path, monkeypatch, capsys, fixed):
    """engine.scale on such a space: one ``error:`` line, exit 2, no Ray, no sweep folder, no MLflow store."""
    import sys

    from engine.cli import run_cli
    from engine.scale import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ENGINE_SWEEPS", str(tmp_path / "sweeps"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump(make(fixed={**BASE["fixed"], **fixed})))
    assert run_cli(main, ["--space", str(space), "--name", "bad", "--no-report"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "transformer-p0-n40-s0" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["space.yaml"]
    assert "ray" not in sys.modules or not sys.modules["ray"].is_initialized()


def test_a_bad_override_is_caught_like_a_bad_space():
    space = space_from_dict(make(), source="space.yaml")
    with pytest.raises(ConfigError, match="epochs must be ≥ 1, got 0"):
        with_overrides(space, epochs=0)
    with pytest.raises(ConfigError, match="lr must be > 0"):
        with_overrides(space, lr=-1.0)
