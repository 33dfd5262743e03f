"""The ranks' FLOPs summed on the host: every step when a budget reads them, else once per report."""

from __future__ import annotations

import json

import torch
import torch.distributed as tdist
import torch.multiprocessing as mp

from engine.loop.flop_tally import FlopTally
from engine.loop.loop import DistContext

STEPS = {0: [5, 7, 11], 1: [2, 3, 13]}  # each rank's FLOPs of three steps: unequal shards


def test_a_single_process_counts_its_own():
    for per_step in (True, False):
        tally = FlopTally(None, per_step=per_step)
        assert [tally.step(f) for f in STEPS[0]] == STEPS[0] and tally.flush() == 0
    assert FlopTally(DistContext(0, 1, "cpu"), per_step=False).step(9) == 9  # a world of one


def _worker(rank: int, world: int, init_file: str, out: str) -> None:
    tdist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        dist = DistContext(rank, world, "cpu")
        seen = {}
        for own_group in (False, True):  # the default gloo group, and the separate one NCCL trials build
            per_step = FlopTally(dist, per_step=True, own_group=own_group)
            deferred = FlopTally(dist, per_step=False, own_group=own_group)
            seen[f"per_step-{own_group}"] = [per_step.step(f) for f in STEPS[rank]] + [per_step.flush()]
            seen[f"deferred-{own_group}"] = [deferred.step(f) for f in STEPS[rank]] + [deferred.flush()]
            seen[f"deferred-again-{own_group}"] = [deferred.flush()]
        with open(f"{out}-{rank}.json", "w") as fh:
            json.dump(seen, fh)
    finally:
        tdist.destroy_process_group()


def test_two_ranks_agree_on_the_sum_per_step_or_at_the_report(tmp_path):
    torch.set_num_threads(1)
    mp.start_processes(_worker, args=(2, str(tmp_path / "pg"), str(tmp_path / "out")), nprocs=2, start_method="fork")
    seen = [json.loads((tmp_path / f"out-{r}.json").read_text()) for r in (0, 1)]
    assert seen[0] == seen[1]  # every rank takes the same decisions
    sums = [a + b for a, b in zip(STEPS[0], STEPS[1], strict=True)]
    for own_group in (False, True):
        assert seen[0][f"per_step-{own_group}"] == [*sums, 0]
        assert seen[0][f"deferred-{own_group}"] == [0, 0, 0, sum(sums)]  # kept until the report, then summed
        assert seen[0][f"deferred-again-{own_group}"] == [0]
