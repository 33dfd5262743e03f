"""The Ray Tune adapter of the frontier policy makes the core's decisions, whatever order trials start in."""

from __future__ import annotations

import numpy as np
import pytest

from engine.sweep import simulation as sim

pytestmark = pytest.mark.slow


def _study(seed: int) -> sim.Study:
    # four sizes of the simulation benchmark's ladder over five of its rungs: the best size changes, and the
    # policy cuts the smallest sizes (overtaken) before the last budget
    surface = sim.parse_surface("E=1.0,A=40,alpha=0.3,B=200,beta=0.42")
    sizes = [1e4, 2.5e4, 6.3e4, 1.6e5]
    budgets = [1e11, 3.2e11, 1e12, 3.2e12, 1e13]
    (study,) = sim.synthetic_studies(surface, 100.0, sizes, budgets, seeds=2, noise=0.03, studies=1, seed=seed)
    return study


@pytest.mark.parametrize(("order", "seed"), [("small-first", 7), ("large-first", 7), ("random", 8)])
def test_the_tune_adapter_agrees_with_the_core(ray_session, tmp_path, order, seed) -> None:
    study = _study(seed)
    alive, core = sim.run_frontier(study)
    assert core.stops  # something is cut, so agreement means something
    tuned = sim.run_through_tune(study, tmp_path / order, max_running=2, order=order, seed=seed)
    assert tuned.stopped_at() == core.stopped_at()
    assert tuned.losses == core.losses  # the same cells reported: the same FLOPs spent
    np.testing.assert_array_equal(
        alive, [[[r in tuned.losses[t] for r in range(len(study.budgets))] for t in row] for row in study.trial_ids])
