"""The frontier-preserving policy (engine.sweep.frontier_policy) on constructed learning curves."""

from __future__ import annotations

import itertools
import json
import math
import random

import pytest

from engine.sweep.frontier_policy import Arm, FrontierPolicy, PolicyConfig, run_synchronous

BUDGETS = [1e9 * 3**k for k in range(6)]


def _policy(sizes: dict[str, float], seeds: int = 1, **knobs) -> FrontierPolicy:
    arms = [Arm(f"{name}-s{s}", name, order, s) for name, order in sizes.items() for s in range(seeds)]
    return FrontierPolicy(arms, PolicyConfig(budgets=list(BUDGETS), **knobs))


def _power(l0: float, slope: float, floor: float = 0.0) -> list[float]:
    """A curve floor + (l0 − floor)·(C/C0)^−slope at the rungs."""
    return [floor + (l0 - floor) * (b / BUDGETS[0]) ** -slope for b in BUDGETS]


def test_a_larger_size_worse_at_first_and_best_at_the_last_budget_is_never_stopped() -> None:
    small = _power(4.0, 0.10, floor=2.5)  # flattens early
    large = _power(6.0, 0.30)  # behind at rung 0 by 50 %, ahead from rung 3 on
    assert large[0] > small[0] and large[-1] < small[-1]
    policy = run_synchronous(_policy({"p0": 1e4, "p1": 1e5}), {"p0-s0": small, "p1-s0": large})
    assert "p1-s0" not in policy.stops
    assert policy.status("p1-s0") == "finished"


def test_a_size_overtaken_twice_by_more_than_the_margin_is_stopped() -> None:
    small = [5.0, 4.0, 3.6, 3.5, 3.45, 3.42]
    large = [6.0, 3.9, 3.2, 2.9, 2.6, 2.4]  # ahead by 2.5 % at rung 1 (within 3 %), then by 11 % and 19 %
    policy = run_synchronous(_policy({"p0": 1e4, "p1": 1e5}), {"p0-s0": small, "p1-s0": large})
    stop = policy.stops["p0-s0"]
    assert stop.rule == "overtaken" and stop.rung == 3  # rungs 2 and 3 are the two beyond the margin
    assert len(policy.losses["p0-s0"]) == 4  # nothing reported after the stop
    assert "p1-s0" not in policy.stops


def test_one_rung_ahead_is_not_enough() -> None:
    small = [5.0, 4.0, 3.6, 3.6, 3.6, 3.6]
    large = [6.0, 4.5, 3.4, 3.62, 3.61, 3.59]  # ahead by 6 % at rung 2 only (noise), then level
    policy = run_synchronous(_policy({"p0": 1e4, "p1": 1e5}), {"p0-s0": small, "p1-s0": large})
    assert "p0-s0" not in policy.stops


def test_a_smaller_size_ahead_never_stops_a_larger_one_by_ranking() -> None:
    # p2 is 40 % behind at rung 1 but falls steeply: along its own slope it can still reach the leader
    curves = {"p0-s0": [4.0, 3.5, 3.2, 3.0, 2.9, 2.85], "p2-s0": [8.0, 5.6, 4.2, 3.2, 2.6, 2.2]}
    policy = run_synchronous(_policy({"p0": 1e4, "p2": 1e6}), curves)
    assert "p2-s0" not in policy.stops


def test_a_size_that_cannot_reach_the_envelope_is_stopped_out_of_reach() -> None:
    # p3 is 4× worse and flattening: even at its steepest secant (plus slack) it stays above p0's loss now
    curves = {"p0-s0": [4.0, 3.5, 3.2, 3.0, 2.9, 2.85], "p3-s0": [30.0, 25.0, 22.0, 20.0, 19.0, 18.5]}
    policy = run_synchronous(_policy({"p0": 1e4, "p3": 1e7}), curves)
    stop = policy.stops["p3-s0"]
    # rungs 0 and 1 assume slope_cap (1.0): one secant does not show that the curve has started to flatten
    assert stop.rule == "out of reach" and stop.rung == 2
    assert "p0-s0" not in policy.stops


def test_a_large_size_still_in_warmup_is_not_judged_by_its_flat_start() -> None:
    # p3 sits at its initial loss for a rung (warmup, or one step of a large model), then falls fast and wins:
    # its first secants (0, then steeper) bound nothing about what comes next
    curves = {"p0-s0": [4.0, 3.5, 3.2, 3.0, 2.9, 2.85], "p3-s0": [30.0, 30.0, 20.0, 8.0, 3.0, 2.0]}
    policy = run_synchronous(_policy({"p0": 1e4, "p3": 1e7}), curves)
    assert "p3-s0" not in policy.stops and policy.status("p3-s0") == "finished"


def _noisy_study(seed: int) -> dict[str, list[float]]:
    rng = random.Random(seed)
    out = {}
    for name, l0, slope, floor in (("p0", 4.0, 0.3, 2.6), ("p1", 5.0, 0.35, 2.0), ("p2", 7.0, 0.4, 1.6)):
        for s in range(2):
            offset = rng.gauss(0, 0.03)
            out[f"{name}-s{s}"] = [v * math.exp(offset + rng.gauss(0, 0.01)) for v in _power(l0, slope, floor)]
    return out


SIZES = {"p0": 1e4, "p1": 1e5, "p2": 1e6}


def test_decisions_do_not_depend_on_the_order_trials_report() -> None:
    curves = _noisy_study(1)
    reference = run_synchronous(_policy(SIZES, seeds=2), curves).stopped_at()
    assert reference  # the study stops something, so the comparison means something
    for perm in itertools.islice(itertools.permutations(sorted(curves)), 0, 720, 97):
        policy = _policy(SIZES, seeds=2)
        # every trial runs as far as it is allowed before the next one starts (the most lopsided order)
        pending = list(perm)
        next_rung = {t: 0 for t in curves}
        while pending:
            t = pending.pop(0)
            while policy.status(t) == "running" and next_rung[t] < len(BUDGETS):
                policy.report(t, next_rung[t], curves[t][next_rung[t]])
                policy.advance()
                go = policy.may_continue(t, next_rung[t])
                next_rung[t] += 1
                if go is None:  # paused at the barrier: back of the queue
                    pending.append(t)
                    break
        assert policy.stopped_at() == reference


def test_state_saved_mid_study_continues_with_the_same_decisions() -> None:
    curves = _noisy_study(2)
    reference = run_synchronous(_policy(SIZES, seeds=2), curves)
    policy = _policy(SIZES, seeds=2)
    for rung in range(3):
        for t in policy.live_at(rung):
            policy.report(t, rung, curves[t][rung])
        policy.advance()
    restored = FrontierPolicy.from_dict(json.loads(json.dumps(policy.to_dict())))
    finished = run_synchronous(restored, curves)
    assert finished.stopped_at() == reference.stopped_at()
    assert finished.to_dict() == reference.to_dict()


def test_the_margin_ignores_offsets_that_persist_over_rungs() -> None:
    base = _power(4.0, 0.3, 2.0)
    lucky = [v * 0.9 for v in base]  # a seed 10 % better at every rung
    policy = _policy({"p0": 1e4}, seeds=2)
    for rung in range(3):
        policy.report("p0-s0", rung, base[rung])
        policy.report("p0-s1", rung, lucky[rung])
    assert policy.margin(2) == pytest.approx(policy.config.margin_min)
    one_seed = _policy({"p0": 1e4})
    assert one_seed.margin(2) == one_seed.config.margin_default


def test_a_diverged_trial_leaves_the_barrier() -> None:
    policy = _policy({"p0": 1e4, "p1": 1e5})
    policy.report("p0-s0", 0, 4.0)
    policy.report("p1-s0", 0, float("nan"))
    assert policy.status("p1-s0") == "failed"
    policy.advance()
    assert policy.decided == 0 and policy.may_continue("p0-s0", 0) is True


def test_bad_budgets_are_refused() -> None:
    with pytest.raises(ValueError, match="increasing"):
        PolicyConfig(budgets=[3e9, 1e9])


def test_a_rung_where_every_trial_failed_is_decided_without_a_comparison() -> None:
    policy = _policy({"p0": 1e4, "p1": 1e5})
    policy.report("p0-s0", 0, 4.0)
    policy.report("p1-s0", 0, 5.0)
    policy.advance()
    policy.fail("p0-s0")
    policy.fail("p1-s0")
    assert policy.advance() == [] and policy.decided == policy.n_rungs - 2
