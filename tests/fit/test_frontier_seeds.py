"""The compute frontier averages seeds per size, then takes the envelope over sizes."""

import numpy as np
import pandas as pd
import pytest

from engine import metrics as M
from engine.fit.frontier import Curve, approach1, fit_frontier, pareto_frontier, seed_groups, seed_mean_envelope
from engine.report.analyze import curves_of
from engine.report.document import allocation_blocks

SIZES = (1e3, 1e4, 1e5)
SEEN = 100 * 2.0 ** np.arange(10)  # structures seen at each report key
# per size × seed, each row summing to zero (the seed mean is the truth); the middle size's seeds agree closely
OFFSETS_LOSS = np.array([[-0.15, 0.05, 0.10], [-0.03, 0.01, 0.02], [0.10, -0.15, 0.05]])
OFFSETS_FLOPS = np.array([0.03, -0.05, 0.02])


def true_log_curve(n: float) -> tuple[np.ndarray, np.ndarray]:
    """(log C, log L) of a size's expected curve: L = 40·N^−0.34 + 60·S^−0.28, C = 6·N·S."""
    return np.log(6 * n * SEEN), np.log(40 * n**-0.34 + 60 * SEEN**-0.28)


def seeded(offsets_loss=OFFSETS_LOSS) -> list[Curve]:
    """3 sizes × 3 seeds; each seed's log L is the truth plus a per-seed offset (varying with the key)."""
    out = []
    wiggle = 1 + 0.3 * np.sin(np.arange(len(SEEN)))  # offsets differ per report, still sum to zero per key
    for n, size_offsets in zip(SIZES, offsets_loss):
        lc, ly = true_log_curve(n)
        for s, (dl, dc) in enumerate(zip(size_offsets, OFFSETS_FLOPS)):
            out.append(Curve(f"n{n:g}s{s}", n, 1e3, np.exp(lc + dc * wiggle), np.exp(ly + dl * wiggle),
                             epoch=np.arange(len(SEEN), dtype=float), epochs_run=SEEN / 1e3, seed=s))
    return out


def truth() -> list[Curve]:
    return [Curve(f"n{n:g}", n, 1e3, *map(np.exp, true_log_curve(n)), epoch=np.arange(len(SEEN), dtype=float),
                  epochs_run=SEEN / 1e3) for n in SIZES]


def test_seed_mean_envelope_is_the_true_envelope_when_offsets_cancel():
    front, true = seed_mean_envelope(seeded()), seed_mean_envelope(truth())
    assert len(true["flops"]) >= 10 and len(set(true["n_params"])) == 3  # the sizes' curves cross
    for k in ("flops", "loss", "samples_seen"):
        np.testing.assert_allclose(front[k], true[k], rtol=1e-12)
    for k in ("size", "key", "n_params", "train_size"):
        np.testing.assert_array_equal(front[k], true[k])
    assert set(front["n_seeds"]) == {3} and set(true["n_seeds"]) == {1}


def test_a_lucky_seed_of_a_losing_size_does_not_take_the_frontier():
    curves = seeded()
    true = seed_mean_envelope(truth())
    # the envelope over single runs follows the luckiest seed: a seed of a size that loses on average beats the
    # winning size's mean (the true envelope) at some budgets
    runs = pareto_frontier(curves)
    at = np.searchsorted(true["flops"], runs["flops"], side="right") - 1
    ok = at >= 0
    lucky = (runs["n_params"][ok] != true["n_params"][at[ok]]) & (runs["loss"][ok] < true["loss"][at[ok]])
    assert lucky.sum() >= 2
    # the seed-mean envelope picks the winning size at every budget
    budgets = np.geomspace(true["flops"][0], true["flops"][-1], 25)
    front = seed_mean_envelope(curves)
    at = np.searchsorted(front["flops"], budgets, side="right") - 1
    at_true = np.searchsorted(true["flops"], budgets, side="right") - 1
    np.testing.assert_array_equal(front["n_params"][at], true["n_params"][at_true])


def test_seeds_align_by_key_and_an_early_stopped_seed_ends_its_size():
    long_ = Curve("a", 1e4, 800, np.array([1.0, 2.0, 4.0, 8.0]), np.array([4.0, 3.0, 2.0, 1.5]),
                  key=np.array([0, 1, 2, 3]), seed=0)
    short = Curve("b", 1e4, 800, np.array([1.2, 2.4]), np.array([5.0, 3.5]), key=np.array([0, 1]), seed=1)
    other = Curve("c", 1e4, 800, np.array([1.0, 2.0]), np.array([4.0, 3.0]), key=np.array([0, 1]), size_key="alt")
    groups = seed_groups([long_, short, other])
    assert [(g.label, g.n_seeds, len(g.keys), g.n_keys_dropped) for g in groups] == [
        ("N=1e+04, D=800", 2, 2, 2), ("alt", 1, 2, 0)]  # size_key overrides (n_params, train_size)
    front = seed_mean_envelope([long_, short])
    np.testing.assert_allclose(front["flops"], [np.sqrt(1.2), np.sqrt(2 * 2.4)])
    np.testing.assert_allclose(front["loss"], [np.sqrt(20.0), np.sqrt(10.5)])
    assert list(front["n_seeds"]) == [2, 2] and list(front["key"]) == [0, 1]


def test_samples_seen_come_from_epochs_run():
    # a trial's first rungs fall inside its first epoch: 96 and 800 structures seen, not 1,600
    cv = Curve("r", 1e4, 1600, np.array([1e9, 4e9, 9e9, 2e10]), np.array([9.0, 6.0, 4.0, 3.0]),
               epoch=np.array([1.0, 1.0, 1.0, 2.0]), epochs_run=np.array([0.06, 0.5, 1.0, 1.5]), key=np.arange(4))
    front = seed_mean_envelope([cv])
    np.testing.assert_allclose(front["samples_seen"], [96, 800, 1600, 2400])
    seen = approach1(front, n_budgets=4)["samples_seen_opt"]
    assert seen[0] == 96 and seen[-1] == 2400 and set(seen) <= {96, 800, 1600, 2400}
    # without epochs_run, the epoch stands in
    old = Curve("r", 1e4, 1600, cv.flops, cv.loss, epoch=cv.epoch, key=cv.key)
    np.testing.assert_allclose(seed_mean_envelope([old])["samples_seen"], [1600, 1600, 1600, 3200])


def test_curves_of_keys_rungs_and_passes_epochs_run():
    rows = []
    for run, seed, n_rungs in (("a", 0, 3), ("b", 1, 2)):
        rows.append({"run_id": run, "seed": seed, M.EPOCH: 0, M.RUNG: np.nan, M.FLOPS_CUM: 0.0, M.VAL_LOSS: 9.0,
                     M.EPOCHS_RUN: 0.0})  # an epoch-end report between rungs: left out
        for r in range(n_rungs):
            rows.append({"run_id": run, "seed": seed, M.EPOCH: 1 + r // 2, M.RUNG: r, M.FLOPS_CUM: 1e9 * 2**r,
                         M.VAL_LOSS: 5.0 - r + 0.1 * seed, M.EPOCHS_RUN: 0.06 * 4**r})
    frame = pd.DataFrame(rows).assign(**{M.N_PARAMS: 1e4, M.TRAIN_SIZE: 1600.0, "engine_status": "completed",
                                         "status": "FINISHED"})
    curves = curves_of(frame, M.VAL_LOSS)
    assert [(c.run_id, c.seed, list(c.key)) for c in curves] == [("a", 0, [0, 1, 2]), ("b", 1, [0, 1])]
    np.testing.assert_allclose(curves[0].epochs_run, [0.06, 0.24, 0.96])
    front = seed_mean_envelope(curves)
    assert list(front["key"]) == [0, 1] and list(front["n_seeds"]) == [2, 2]
    np.testing.assert_allclose(front["samples_seen"], [96, 384])


def ladder(winner: str) -> list[Curve]:
    """3 sizes, one seed each; the smallest (or largest) size's curve is below the others at every FLOP count."""
    c = np.geomspace(1e9, 1e12, 8)
    out = []
    for i, n in enumerate(SIZES):
        rank = i if winner == "smallest" else 2 - i
        out.append(Curve(f"n{n:g}", n, 1e3, c, 50 * c**-0.1 * (1 + 0.2 * rank),
                         epoch=np.arange(1.0, 9.0)))
    return out


@pytest.mark.parametrize("winner", ["smallest", "largest"])
def test_ladder_end_flag_fires_when_an_end_size_wins_every_budget(winner):
    out = fit_frontier(ladder(winner), n_boot=10)
    a1 = out["approach1"]
    assert a1["not_available"].startswith("one model size")
    assert a1["bounded_by_ladder"][winner] == pytest.approx(a1["budgets_flops"])
    assert a1["bounded_by_ladder"]["largest" if winner == "smallest" else "smallest"] == []
    way = "below" if winner == "smallest" else "above"
    assert "at 12 of 12 budgets" in a1["ladder_note"] and f"the {winner} swept" in a1["ladder_note"]
    assert f"may lie {way} the ladder" in a1["ladder_note"]
    text = " ".join(b.text for b in allocation_blocks(
        {"allocation": {"metric": "val_loss", "approach1": a1, "approach2": out["approach2"],
                        "approach3": {"not_available": "no joint law"}}}))
    assert f"Approach 1: {a1['ladder_note']}" in text


def test_no_ladder_note_when_the_optimum_is_interior():
    # a 5-size grid whose middle sizes take the envelope at every budget
    c = np.geomspace(1e9, 1e12, 8)
    curves = [Curve(f"n{n:g}", n, 1e3, c, 50 * c**-0.1 * (1 + 0.2 * abs(i - 2) + 0.01 * (i == 3) * np.log(c / 1e9)))
              for i, n in enumerate(np.geomspace(1e3, 1e7, 5))]
    a1 = approach1(seed_mean_envelope(curves), ladder=np.geomspace(1e3, 1e7, 5))
    assert a1["bounded_by_ladder"] == {"smallest": [], "largest": []} and "ladder_note" not in a1
