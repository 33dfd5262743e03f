"""A small real MLflow store populated the way the sweep's tracking does (experiment, parent, children)."""

from __future__ import annotations

import zlib

import numpy as np
import pytest


def log_sweep(uri: str, artifact_root: str, sweep: str, axis: str, sizes, data_sizes, seeds=(0, 1), epochs: int = 6,
              exponent: float = 0.35, stopped: int = 0) -> str:
    """Create experiment ``sweep`` with a parent run and one child run per (N, D, seed) trial.

    The first ``stopped`` trials end as ASHA leaves them: MLflow FINISHED, tag engine.status=stopped.
    """
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment(sweep, artifact_location=f"{artifact_root}/{sweep}")
    parent = client.create_run(exp, tags={"engine.kind": "sweep", "engine.sweep": sweep, "engine.axis": axis},
                               run_name=sweep)
    pid = parent.info.run_id
    client.log_param(pid, "search_space", "{}")
    client.log_metric(pid, "baseline_predict_mean_val_loss", 3.0)
    rng = np.random.default_rng(zlib.crc32(sweep.encode()))
    k = 0
    for n in sizes:
        for d in data_sizes:
            for seed in seeds:
                k += 1
                tid = f"t{k:03d}"
                run = client.create_run(exp, run_name=tid, tags={
                    "engine.kind": "trial", "engine.sweep": sweep, "engine.trial_id": tid, "engine.axis": axis,
                    "mlflow.parentRunId": pid})
                rid = run.info.run_id
                params = {"model": "transformer", "preset": f"p{n}", "n_params": int(n), "train_size": int(d),
                          "seed": seed, "epochs": epochs, "lr": 1e-3, "batch_size": 16, "optim.weight_decay": 1e-3}
                ts = 1_700_000_000_000
                metrics = []
                for ep in range(epochs + 1):
                    seen = max(ep, 0.05) * d
                    base = 0.05 + 40.0 * n**-exponent + 30.0 * seen**-0.3
                    noise = np.exp(rng.normal(0, 0.01))
                    flops = 6.0 * n * d * ep * 10
                    vals = {"epoch": ep, "step": ep * 10, "flops_cum": flops, "wall_s": 0.5 * ep,
                            "val_loss": base * noise, "train_loss": base * noise * 0.9,
                            "val_energy_mae_mev_per_atom": 200 * base * noise,
                            "val_forces_mae_mev_per_a": 500 * base * noise,
                            "n_params": float(n), "train_size": float(d)}
                    metrics += [Metric(key, float(v), ts + ep, ep) for key, v in vals.items()]
                state = "stopped" if k <= stopped else "completed"
                client.log_batch(rid, metrics=metrics, params=[Param(a, str(b)) for a, b in params.items()],
                                 tags=[RunTag("engine.checkpoint_path", f"/tmp/{tid}/checkpoint.pt"),
                                       RunTag("engine.status", state)])
                client.set_terminated(rid, "FINISHED")
    client.set_terminated(pid, "FINISHED")
    return pid


@pytest.fixture(scope="module")
def mlflow_store(tmp_path_factory):
    """(tracking URI, artifact root) of a fresh SQLite store holding two sweeps."""
    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root}/mlflow.db"
    art = str(root / "artifacts")
    log_sweep(uri, art, "params-tiny", "params", sizes=[2e3, 8e3, 3e4, 1.2e5, 5e5], data_sizes=[800], stopped=1)
    log_sweep(uri, art, "params-other", "params", sizes=[2e3, 8e3, 3e4, 1.2e5], data_sizes=[800], seeds=(0,),
              exponent=0.25)
    log_sweep(uri, art, "grid-tiny", "compute", sizes=[2e3, 3e4, 5e5], data_sizes=[200, 800, 3200], seeds=(0,),
              epochs=4)
    return uri, art
