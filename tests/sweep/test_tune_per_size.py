"""Per-size learning rates: ``engine.tune --sizes`` tunes each size, ``engine.scale --lr-from`` uses each size's
values, and the report states which LR each trial used."""

from __future__ import annotations

import json

import pytest
import yaml

from engine.errors import ConfigError
from engine.sweep.cli_common import build_space
from engine.sweep.spaces import expand, space_from_dict

TINY_FIXED = {"epochs": 2, "batch_size": 8, "optim": {"lr": 3e-3}, "data": {"emt_size": 60, "max_val": 8}}


def _space(**changes) -> dict:
    values = {"axis": "params", "model": "transformer", "sizes": ["p0", "p1"], "train_sizes": [40], "seeds": [0],
              "fixed": json.loads(json.dumps(TINY_FIXED))}
    values.update(changes)
    return values


def test_per_size_values_reach_each_trial_config():
    space = space_from_dict(_space(per_size={"p1": {"lr": 1e-2, "batch_size": 4, "tuned_by": "hpo-x"}}))
    configs = {s.config.preset: s.config for s in expand(space)}
    assert configs["p0"].optim.lr == pytest.approx(3e-3) and configs["p0"].batch_size == 8  # the space's fixed values
    assert configs["p1"].optim.lr == pytest.approx(1e-2) and configs["p1"].batch_size == 4
    with pytest.raises(ConfigError, match=r"per_size names 'p7', which is not in sizes"):
        space_from_dict(_space(per_size={"p7": {"lr": 1e-3}}))
    with pytest.raises(ConfigError, match=r"per_size\.p0\.lr must be a positive number"):
        space_from_dict(_space(per_size={"p0": {"lr": -1}}))
    with pytest.raises(ConfigError, match=r"per_size\.p0 takes lr, batch_size, tuned_by; got momentum"):
        space_from_dict(_space(per_size={"p0": {"momentum": 0.9}}))


def test_lr_from_a_per_size_tuning(tmp_path, monkeypatch):
    import argparse

    monkeypatch.setenv("ENGINE_SWEEPS", str(tmp_path / "sweeps"))
    (tmp_path / "sweeps" / "ladder").mkdir(parents=True)
    (tmp_path / "sweeps" / "ladder" / "best_config.json").write_text(json.dumps({"per_size": {
        "p0": {"lr": 2e-3, "batch_size": 4, "val_loss": 1.0, "trial_id": "a"},
        "p1": {"lr": 5e-4, "batch_size": 8, "val_loss": 0.9, "trial_id": "b"}}}))
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(_space()))

    def args(**kw):
        base = dict(space=path, model=None, sizes=None, epochs=None, lr=None, batch_size=None, amp=None, seeds=None,
                    workers=None, gpus_per_worker=None, train_sizes=None, tracking_uri=None, lr_from="ladder")
        base.update(kw)
        return argparse.Namespace(**base)

    space = build_space(args(), None)
    lrs = {s.config.preset: (s.config.optim.lr, s.config.batch_size) for s in expand(space)}
    assert lrs == {"p0": (pytest.approx(2e-3), 4), "p1": (pytest.approx(5e-4), 8)}
    assert space.per_size["p0"]["tuned_by"] == "ladder"
    # an explicit --lr wins over the tuned one; the tuned batch size stays
    space = build_space(args(lr=1e-3), None)
    assert {s.config.preset: (s.config.optim.lr, s.config.batch_size) for s in expand(space)} == {
        "p0": (pytest.approx(1e-3), 4), "p1": (pytest.approx(1e-3), 8)}
    with pytest.raises(ConfigError, match=r"--lr-from ladder tuned sizes p0, p1, not p2; tune them with "
                                          r"python -m engine\.tune --sizes p2"):
        build_space(args(sizes=["p0", "p2"]), None)


@pytest.mark.slow
def test_tune_each_size_then_scale_with_its_lr(ray_session, engine_env):
    from engine.report.build import build_report
    from engine.scale import main as scale_main
    from engine.tune import main as tune_main

    fixed = json.loads(json.dumps(TINY_FIXED))
    fixed["epochs"] = 1
    hpo = engine_env["tmp"] / "hpo.yaml"
    hpo.write_text(yaml.safe_dump({
        "axis": "hpo", "model": "transformer", "sizes": ["p0"], "train_sizes": [40], "seeds": [0], "fixed": fixed,
        "search": {"lr_min": 1e-4, "lr_max": 1e-1, "batch_sizes": [4, 8], "num_samples": 2, "grace_epochs": 1},
    }))
    assert tune_main(["--space", str(hpo), "--sizes", "p0,p1", "--name", "ladder"]) == 0
    best = json.loads((engine_env["sweeps"] / "ladder" / "best_config.json").read_text())["per_size"]
    assert set(best) == {"p0", "p1"} and all(1e-4 <= b["lr"] <= 1e-1 for b in best.values())
    assert {b["sweep"] for b in best.values()} == {"ladder-p0", "ladder-p1"}
    report = json.loads((engine_env["tmp"] / "reports" / "ladder" / "fits.json").read_text())
    assert [s["sweep"] for s in report["sweeps"]] == ["ladder-p0", "ladder-p1"]
    assert all("hpo" in s and s["frontier"] == {} for s in report["sweeps"])  # no compute frontier for a search

    params = engine_env["tmp"] / "params.yaml"
    params.write_text(yaml.safe_dump(_space()))
    assert scale_main(["--space", str(params), "--name", "tuned", "--lr-from", "ladder", "--no-report"]) == 0
    for preset in ("p0", "p1"):
        config = json.loads((engine_env["sweeps"] / "tuned" / "trials" / f"transformer-{preset}-n40-s0" /
                             "config.json").read_text())
        assert config["optim"]["lr"] == pytest.approx(best[preset]["lr"])
        assert config["batch_size"] == best[preset]["batch_size"]
    out = build_report(["tuned"], engine_env["uri"], engine_env["tmp"] / "rep", metrics=["val_loss"], n_boot=0,
                       log_to_mlflow=False)
    md = (out / "report.md").read_text()
    assert "Peak learning rate per size (tuned per size by engine.tune sweep ladder): " in md
    assert f"p0: {best['p0']['lr']:.3g}" in md and f"p1: {best['p1']['lr']:.3g}" in md
