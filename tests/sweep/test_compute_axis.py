"""The compute axis: annealed rung reports under ASHA, and ``--no-early-stop`` (the full grid, the reference)."""

from __future__ import annotations

import copy
import json

import pytest
import yaml

from engine import metrics as M
from engine.errors import ConfigError
from engine.scale import build_parser, build_space
from engine.sweep.runner import compute_scheduler
from engine.sweep.spaces import expand, load_space, space_from_dict
from engine.sweep.tracking import report_step

TINY_FIXED = {"epochs": 1000, "batch_size": 8, "optim": {"lr": 3e-3}, "data": {"emt_size": 60, "max_val": 8}}
TINY_COMPUTE = {
    "axis": "compute", "model": "transformer", "sizes": ["p0", "p1"], "train_sizes": [40], "seeds": [0],
    "flop_budgets": [1.0e8, 3.0e8, 9.0e8], "fixed": TINY_FIXED,
}


def _write(path, values):
    path.write_text("# test space\n" + yaml.safe_dump(values))
    return path


def test_no_early_stop_parses_into_a_grid_run():
    from engine.sweep.frontier_scheduler import FrontierScheduler

    frontier = build_space(build_parser().parse_args(["--axis", "compute"]), "compute")
    grid = build_space(build_parser().parse_args(["--axis", "compute", "--no-early-stop"]), "compute")
    assert frontier.early_stop is True and grid.early_stop is False and frontier.scheduler == "frontier"
    assert compute_scheduler(grid) is None  # no early stopping: every trial runs to the last budget
    scheduler = compute_scheduler(frontier)
    assert isinstance(scheduler, FrontierScheduler)  # the default keeps the frontier (engine.sweep.frontier_policy)
    assert scheduler.policy.config.budgets == frontier.flop_budgets
    assert {a.trial_id for a in scheduler.policy.arms} == {s.trial_id for s in expand(frontier)}
    orders = {a.size: a.order for a in scheduler.policy.arms}
    assert len(set(orders.values())) == len(frontier.sizes)  # sizes ordered by their parameter counts
    for space in (frontier, grid):  # the same trials either way: WSD with a cooldown branch at every budget
        for spec in expand(space):
            assert spec.config.rung_flops == space.flop_budgets
            assert spec.config.max_flops == space.flop_budgets[-1]
            assert spec.config.optim.schedule == "wsd"
    assert [s.config for s in expand(frontier)] == [s.config for s in expand(grid)]
    again = space_from_dict({k: v for k, v in grid.to_dict().items() if k != "source"}, source="saved")
    assert again.early_stop is False  # a resumed grid sweep stays a grid sweep


def test_asha_stays_available_by_name():
    values = copy.deepcopy(TINY_COMPUTE) | {"scheduler": "asha"}
    asha = compute_scheduler(space_from_dict(values, source="tiny"))
    assert asha._metric == M.VAL_LOSS and asha._time_attr == M.RUNG_FLOPS  # annealed, at its rung
    assert asha._max_t == TINY_COMPUTE["flop_budgets"][-1]
    uneven = copy.deepcopy(TINY_COMPUTE) | {"flop_budgets": [1.0e8, 2.0e8, 9.0e8]}
    assert space_from_dict(uneven, source="tiny").scheduler == "frontier"  # the policy needs no geometric rungs
    with pytest.raises(ConfigError, match="geometric under scheduler asha"):
        space_from_dict(uneven | {"scheduler": "asha"}, source="tiny")
    with pytest.raises(ConfigError, match="'scheduler' is one of frontier, asha"):
        space_from_dict(copy.deepcopy(TINY_COMPUTE) | {"scheduler": "hyperband"}, source="tiny")
    with pytest.raises(ConfigError, match="unknown frontier knob"):
        space_from_dict(copy.deepcopy(TINY_COMPUTE) | {"frontier": {"margin": 0.1}}, source="tiny")
    knobs = space_from_dict(copy.deepcopy(TINY_COMPUTE) | {"frontier": {"margin_default": 0.05}}, source="tiny")
    assert compute_scheduler(knobs).policy.config.margin_default == 0.05


def test_compute_space_checks():
    with pytest.raises(ConfigError, match="applies to the compute axis"):
        build_space(build_parser().parse_args(["--axis", "params", "--no-early-stop"]), "params")
    bad = copy.deepcopy(TINY_COMPUTE)
    bad["fixed"]["optim"]["schedule"] = "cosine"
    with pytest.raises(ConfigError, match=r"needs fixed\.optim\.schedule: wsd"):
        space_from_dict(bad, source="tiny")
    params = {k: v for k, v in TINY_COMPUTE.items() if k != "flop_budgets"} | {"axis": "params", "early_stop": False}
    with pytest.raises(ConfigError, match="only applies to axis compute"):
        space_from_dict(params, source="tiny")
    default = load_space(axis="compute")
    assert default.fixed["optim"]["schedule"] == "wsd" and 0.1 <= default.fixed["optim"]["cooldown_fraction"] <= 0.2


def test_mlflow_step_is_the_report_index():
    assert report_step({M.REPORT: 3, M.EPOCH: 1}) == 3  # several rungs can fall in one epoch
    assert report_step({M.EPOCH: 2}) == 2  # rows written before the report index existed
    assert report_step({}, 5) == 5


@pytest.mark.slow
def test_grid_run_reports_only_annealed_points(ray_session, engine_env, capsys):
    from mlflow import MlflowClient

    from engine.scale import main

    space = _write(engine_env["tmp"] / "compute.yaml", TINY_COMPUTE)
    assert main(["--space", str(space), "--name", "tiny-grid", "--no-early-stop", "--no-report"]) == 0
    summary = json.loads((engine_env["sweeps"] / "tiny-grid" / "summary.json").read_text())
    assert {t["status"] for t in summary["trials"].values()} == {"completed"}  # nothing stopped early
    client = MlflowClient(engine_env["uri"])
    exp = client.get_experiment_by_name("tiny-grid")
    children = [r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("engine.kind") == "trial"]
    assert len(children) == 2
    lr, floor = TINY_FIXED["optim"]["lr"], 0.01
    for run in children:
        history = {k: sorted(client.get_metric_history(run.info.run_id, k), key=lambda m: m.step)
                   for k in (M.VAL_LOSS, M.FLOPS_CUM, M.FLOPS_SPENT, M.LR_COOLDOWN_END, M.RUNG)}
        assert [m.step for m in history[M.VAL_LOSS]] == [0, 1, 2, 3]  # the untrained model, then three rungs
        assert [m.value for m in history[M.RUNG]] == [0.0, 1.0, 2.0]
        assert all(m.value <= 1.5 * floor * lr for m in history[M.LR_COOLDOWN_END])  # every point annealed
        flops = [m.value for m in history[M.FLOPS_CUM]]
        spent = [m.value for m in history[M.FLOPS_SPENT]]  # the sweep's cost: every cooldown branch included
        assert flops[-1] >= TINY_COMPUTE["flop_budgets"][-1] and summary["trials"][run.data.tags[
            "engine.trial_id"]]["flops_cum"] == spent[-1] > flops[-1]
    assert summary["compute_fraction"] == pytest.approx(1.0, abs=0.2)  # the grid is its own full estimate
