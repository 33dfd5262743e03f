"""engine.simulate: the frontier policy and ASHA against the full grid, on synthetic studies and a replay."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from engine import simulate
from engine.sweep import simulation as sim

ROOT = Path(__file__).resolve().parents[2]
# the benchmark surface of BENCHMARKS.md "Compute axis: the frontier policy in simulation": α ≠ β, 6 sizes over
# 2 decades of N, 8 rungs over 3.5 decades of C; the grid's best size changes 4 times within the budgets
SURFACE = "E=1.0,A=40,alpha=0.3,B=200,beta=0.42"
SIZES = "1e4,2.5e4,6.3e4,1.6e5,4e5,1e6"
BUDGETS = "1e11,3.2e11,1e12,3.2e12,1e13,3.2e13,1e14,3.2e14"
ARGS = ["--surface", SURFACE, "--flops-per-param-structure", "100", "--sizes", SIZES, "--budgets", BUDGETS,
        "--seeds", "2", "--noise", "0.03"]


def _run(capsys, argv: list[str]) -> dict:
    assert simulate.main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_the_frontier_policy_keeps_the_grid_frontier_for_half_the_flops(capsys) -> None:
    out = _run(capsys, [*ARGS, "--studies", "60"])
    assert out["optimal_size_changes"] >= 3
    assert out["frontier_gap_p95"] <= 0.01
    assert out["abs_dbeta_median"] <= 0.01 and out["abs_dbeta_p95"] <= 0.03
    assert out["n_opt_match_rate"] >= 0.95
    assert out["flops_fraction"] <= 0.5


def test_asha_cuts_the_size_that_wins_the_last_budget(capsys) -> None:
    out = _run(capsys, [*ARGS, "--studies", "60", "--scheduler", "asha"])
    assert out["n_opt_match_rate"] < 0.2  # small models first: the first rung cuts every larger size
    assert out["frontier_gap_p95"] > 0.1


def test_a_noiseless_study_is_the_surface() -> None:
    s = sim.parse_surface(SURFACE)
    sizes = [float(v) for v in SIZES.split(",")]
    budgets = [float(v) for v in BUDGETS.split(",")]
    (study,) = sim.synthetic_studies(s, 100.0, sizes, budgets, seeds=2, noise=0.0, studies=1, report_noise=0.0)
    truth = np.log(sim.surface_loss(s, np.array(sizes), np.array(budgets), 100.0))
    np.testing.assert_allclose(sim.seed_mean_log(study), truth, rtol=1e-12)
    env, size = sim.envelope(sim.seed_mean_log(study), study.budgets)
    np.testing.assert_allclose(env, truth.min(axis=0))
    assert list(size) == list(np.argmin(truth, axis=0))


def test_replay_of_the_seed_grid_keeps_its_last_winner(capsys) -> None:
    runs = ROOT / "reports/gallery/seed/runs/seed-cpu-eqv2-compute.json"
    out = _run(capsys, ["--replay", str(runs)])
    assert out["keeps_last_winner"] and out["winner_grid"] == "e1-n1600"
    assert out["frontier_gap"] == 0.0
    asha = _run(capsys, ["--replay", str(runs), "--scheduler", "asha"])
    assert not asha["keeps_last_winner"]  # ASHA stops e1 at the first rung; e0 ends alone


@pytest.mark.parametrize(("argv", "message"), [
    (["--surface", "E=1,A=2", "--sizes", SIZES, "--budgets", BUDGETS], "missing"),
    (["--surface", SURFACE, "--sizes", "1e4", "--budgets", BUDGETS], "--sizes needs"),
    (["--surface", "E=1,A=2,alpha=x,B=1,beta=1", "--sizes", SIZES, "--budgets", BUDGETS], "not a number"),
    (["--replay", "/nonexistent/runs.json"], "cannot read"),
])
def test_bad_input_is_one_error_line(argv: list[str], message: str, capsys) -> None:
    from engine.cli import run_cli

    assert run_cli(simulate.main, argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and message in err[0]


def test_replay_refuses_a_sweep_that_is_not_a_full_grid(tmp_path, capsys) -> None:
    runs = json.loads((ROOT / "reports/gallery/seed/runs/seed-cpu-eqv2-params.json").read_text())
    path = tmp_path / "params.json"
    path.write_text(json.dumps(runs))
    from engine.cli import run_cli

    assert run_cli(simulate.main, ["--replay", str(path)]) == 2
    assert "rung" in capsys.readouterr().err


def test_the_simulators_envelope_is_the_reports_estimator() -> None:
    from engine.fit.frontier import Curve, seed_mean_envelope

    s = sim.parse_surface(SURFACE)
    (study,) = sim.synthetic_studies(s, 100.0, [float(v) for v in SIZES.split(",")],
                                     [float(v) for v in BUDGETS.split(",")], seeds=2, noise=0.03, studies=1, seed=3)
    alive, policy = sim.run_frontier(study)
    assert policy.stops
    for mask in (np.ones_like(alive), alive):  # the grid, and what the policy kept
        curves = []
        for i, name in enumerate(study.sizes):
            for k in range(study.seeds):
                rungs = np.flatnonzero(mask[i, k])
                curves.append(Curve(study.trial_ids[i][k], study.n_params[i], 1000.0, study.budgets[rungs],
                                    study.loss[i, k, rungs], key=rungs.astype(float), seed=float(k), size_key=name))
        front = seed_mean_envelope(curves)
        env, _ = sim.envelope(sim.seed_mean_log(study, mask), study.budgets)
        falls = np.r_[True, env[1:] < env[:-1]]
        np.testing.assert_allclose(front["flops"], study.budgets[falls], rtol=1e-12)
        np.testing.assert_allclose(np.log(front["loss"]), env[falls], rtol=1e-12)
