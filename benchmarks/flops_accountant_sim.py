"""The FLOP accountant on eqV2-L-sized steps (10¹³–10¹⁴ FLOPs each): bookkeeping cost, counted steps, errors.

    .venv/bin/python -m benchmarks.flops_accountant_sim [steps]

A simulation, not a training run: OMat24-like batches (24–64 structures of 8–160 atoms, 20–60 edges per
atom) and a known integer law with eqV2-L-sized coefficients stand in for the counted FLOPs, so every
solved step can be checked against the exact count. ``verify_every=50`` as in the loop.
"""

from __future__ import annotations

import sys
import time

import numpy as np
import torch

from engine.loop.flops import FlopAccountant, batch_features

COEF = (7_919_411, 3_104_557_219, 48_611_203, 187_336_419, 12_345, 678_901, 2_718_281)  # per FEATURES entry


def simulate(steps: int = 2000, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    features = []
    for _ in range(steps):
        sizes = rng.integers(8, 161, size=int(rng.integers(24, 65)))
        edges = int(sum(int(k) * int(rng.integers(20, 61)) for k in sizes))
        features.append(batch_features(torch.as_tensor(sizes), edges))
    exact = [sum(c * int(v) for c, v in zip(COEF, x)) for x in features]
    accountant = FlopAccountant(verify_every=50)
    wrong = 0
    t0 = time.perf_counter()
    for x, y in zip(features, exact):
        if accountant.must_count(x):
            accountant.record(x, y)
        elif accountant.record(x, None) != y:
            wrong += 1
    seconds = time.perf_counter() - t0
    return {
        "us_per_step": seconds / steps * 1e6,
        "counted": accountant.counted,
        "steps": steps,
        "wrong": wrong,
        "fallback": accountant.count_all,
        "flops_range": (min(exact), max(exact)),
    }


if __name__ == "__main__":
    print(simulate(int(sys.argv[1]) if len(sys.argv) > 1 else 2000))
