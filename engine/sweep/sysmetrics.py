"""System metrics of a trial's process, sampled in the background and merged into its reports.

MLflow's UI shows metrics named ``system/...`` in a run's "System metrics" tab. MLflow's own monitor
logs from the process that owns the run; here every run is written by the sweep driver (one writer
keeps SQLite safe), so the trial samples on its own node and sends the averages with each report,
under MLflow's metric names. CPU and memory come from psutil; GPU utilisation (NVML, when the
``pynvml`` module is importable) and this process's allocated GPU memory from torch.
"""

from __future__ import annotations

import contextlib
import threading

import psutil

PREFIX = "system/"
CPU = f"{PREFIX}cpu_utilization_percentage"
MEMORY_MB = f"{PREFIX}system_memory_usage_megabytes"
MEMORY_PERCENT = f"{PREFIX}system_memory_usage_percentage"
PROCESS_RSS_MB = f"{PREFIX}process_rss_megabytes"
GPU_UTIL = f"{PREFIX}gpu_0_utilization_percentage"
GPU_MEMORY_MB = f"{PREFIX}gpu_0_memory_usage_megabytes"

DEFAULT_INTERVAL_S = 10.0  # MLflow's own monitor defaults to 10 s as well


def _gpu_sample() -> dict[str, float]:
    import torch

    if not torch.cuda.is_available():
        return {}
    out = {GPU_MEMORY_MB: torch.cuda.memory_allocated() / 2**20}
    with contextlib.suppress(Exception):  # no NVML (pynvml) on this node: memory only
        out[GPU_UTIL] = float(torch.cuda.utilization())
    return out


def sample(process: psutil.Process | None = None) -> dict[str, float]:
    """One reading of every metric (CPU % since the previous call of psutil.cpu_percent)."""
    process = process or psutil.Process()
    vm = psutil.virtual_memory()
    return {
        CPU: float(psutil.cpu_percent(interval=None)),
        MEMORY_MB: (vm.total - vm.available) / 2**20,
        MEMORY_PERCENT: float(vm.percent),
        PROCESS_RSS_MB: process.memory_info().rss / 2**20,
        **_gpu_sample(),
    }


class SystemSampler:
    """Samples every ``interval_s`` in a daemon thread; :meth:`averages` returns and resets the means.

    Use as a context manager around training. A report between samples still gets one fresh reading.
    """

    def __init__(self, interval_s: float = DEFAULT_INTERVAL_S) -> None:
        self.interval_s = float(interval_s)
        self._process = psutil.Process()
        self._sums: dict[str, float] = {}
        self._count = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="system-metrics", daemon=True)
        psutil.cpu_percent(interval=None)  # prime: the first call has no interval to measure

    def _add(self, values: dict[str, float]) -> None:
        with self._lock:
            for key, value in values.items():
                self._sums[key] = self._sums.get(key, 0.0) + value
            self._count += 1

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._add(sample(self._process))

    def averages(self) -> dict[str, float]:
        with self._lock:
            sums, count = self._sums, self._count
            self._sums, self._count = {}, 0
        if count == 0:
            return sample(self._process)
        return {key: value / count for key, value in sums.items()}

    def __enter__(self) -> SystemSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=self.interval_s + 1.0)
