"""System metrics: MLflow's names, plausible values, averages that reset after each report."""

from __future__ import annotations

import time

import psutil

from engine.sweep import sysmetrics as S


def test_one_sample_has_mlflow_names_and_plausible_values() -> None:
    values = S.sample()
    assert {S.CPU, S.MEMORY_MB, S.MEMORY_PERCENT, S.PROCESS_RSS_MB} <= set(values)
    assert all(k.startswith("system/") for k in values)
    assert 0.0 <= values[S.MEMORY_PERCENT] <= 100.0
    total_mb = psutil.virtual_memory().total / 2**20
    assert 0.0 < values[S.MEMORY_MB] <= total_mb
    assert 0.0 < values[S.PROCESS_RSS_MB] <= total_mb


def test_sampler_averages_its_samples_and_resets() -> None:
    with S.SystemSampler(interval_s=0.01) as sampler:
        deadline = time.monotonic() + 30.0
        while sampler._count < 3 and time.monotonic() < deadline:  # wait on the sampler's own count
            time.sleep(0.005)
        assert sampler._count >= 3
        first = sampler.averages()
    assert S.CPU in first and first[S.PROCESS_RSS_MB] > 0
    assert not sampler._thread.is_alive()  # the context manager stopped its thread
