"""Cost of the physical probes (engine.loop.probes) and of one system-metrics reading, per trial.

    python -m benchmarks.probes_cost

Default ProbeConfig (4 validation structures of the embedded EMT set, 200 NVE steps of 1 fs, FIRE ≤ 100
steps, EMT as reference) on untrained fcn f0 and transformer p0, one torch thread. Prints one line each.
"""

from __future__ import annotations

import os
import platform
import tempfile
import time
import timeit


def main() -> None:
    import torch

    import models
    from engine.config import DataConfig, ProbeConfig
    from engine.data.dataset import load_splits
    from engine.loop.probes import probe_model
    from engine.sweep import sysmetrics

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="probes-bench-") as cache:
        splits = load_splits(DataConfig(emt_size=200, cache_dir=cache), progress=False)
    config = ProbeConfig(enabled=True)
    for name, preset in (("fcn", "f0"), ("transformer", "p0")):
        model = models.build(name, None, preset=preset)
        t0 = time.perf_counter()
        out = probe_model(model, splits.val, config, emt_labels=True, seed=0)
        print(f"probes {name} {preset} ({model.num_parameters()} params): {time.perf_counter() - t0:.1f} s/trial; "
              + ", ".join(f"{k} {v:.4g}" for k, v in sorted(out.items())))
    n = 200
    print(f"sysmetrics.sample(): {timeit.timeit(sysmetrics.sample, number=n) / n * 1e3:.2f} ms per reading")
    load = os.getloadavg()[0]
    print(f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, load average {load:.1f}")


if __name__ == "__main__":
    main()
