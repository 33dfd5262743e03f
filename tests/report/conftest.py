"""A small real MLflow store populated the way the sweep's tracking does (experiment, parent, children)."""

from __future__ import annotations

import zlib

import numpy as np
import pytest


def log_sweep(uri: str, artifact_root: str, sweep: str, axis: str, sizes, data_sizes, seeds=(0, 1), epochs: int = 6,
              exponent: float = 0.35, stopped: int = 0, diverged: int = 0, model: str = "transformer",
              force_floor: float = 0.0) -> str:
    """Create experiment ``sweep`` with a parent run and one child run per (N, D, seed) trial.

    The first ``stopped`` trials end as ASHA leaves them: MLflow FINISHED, tag engine.status=stopped.
    The last ``diverged`` trials end as the loop leaves a diverged one: NaN losses at epoch 3, a
    ``diverged_epoch`` metric, tag engine.status=diverged. Every other trial logs ``test_*`` metrics at
    its last report and ``epochs_run`` at each; the parent logs naive baselines and the budget rule.
    ``force_floor`` (meV/Å) adds a floor to the force error (a family whose forces plateau).
    """
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment(sweep, artifact_location=f"{artifact_root}/{sweep}")
    parent = client.create_run(exp, tags={"engine.kind": "sweep", "engine.sweep": sweep, "engine.axis": axis},
                               run_name=sweep)
    pid = parent.info.run_id
    client.log_param(pid, "search_space", "{}")
    client.log_param(pid, "budget_rule", f"epochs={epochs}")
    client.log_metric(pid, "baseline_predict_mean_val_loss", 3.0)
    client.log_metric(pid, "baseline_predict_zero_val_loss", 4.5)
    client.log_metric(pid, "baseline_predict_zero_val_forces_mae_mev_per_a", 2500.0)
    rng = np.random.default_rng(zlib.crc32(sweep.encode()))
    n_trials = len(sizes) * len(data_sizes) * len(seeds)
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
                params = {"model": model, "preset": f"p{n:g}", "n_params": int(n), "train_size": int(d),
                          "seed": seed, "epochs": epochs, "lr": 1e-3, "batch_size": 16, "optim.weight_decay": 1e-3}
                ts = 1_700_000_000_000
                metrics = []
                diverges = k > n_trials - diverged
                for ep in range(epochs + 1):
                    seen = max(ep, 0.05) * d
                    base = 0.05 + 40.0 * n**-exponent + 30.0 * seen**-0.3
                    noise = np.exp(rng.normal(0, 0.01))
                    flops = 6.0 * n * d * ep * 10
                    vals = {"epoch": ep, "step": ep * 10, "flops_cum": flops, "wall_s": 0.5 * ep,
                            "val_loss": base * noise, "train_loss": base * noise * 0.9,
                            "val_energy_mae_mev_per_atom": 200 * base * noise,
                            "val_forces_mae_mev_per_a": force_floor + 500 * base * noise,
                            "n_params": float(n), "train_size": float(d), "epochs_run": float(ep)}
                    if diverges and ep == 3:
                        vals.update(val_loss=float("nan"), train_loss=float("nan"), diverged_epoch=3.0)
                    elif ep == epochs:
                        vals.update({f"test_{key[4:]}": v * 1.05 for key, v in vals.items() if key.startswith("val_")})
                    metrics += [Metric(key, float(v), ts + ep, ep) for key, v in vals.items()]
                    if diverges and ep == 3:
                        break
                state = "diverged" if diverges else "stopped" if k <= stopped else "completed"
                client.log_batch(rid, metrics=metrics, params=[Param(a, str(b)) for a, b in params.items()],
                                 tags=[RunTag("engine.checkpoint_path", f"/tmp/{tid}/checkpoint.pt"),
                                       RunTag("engine.status", state)])
                client.set_terminated(rid, "FINISHED")
    client.set_terminated(pid, "FINISHED")
    return pid


@pytest.fixture(scope="module")
def mlflow_store(tmp_path_factory):
    """(tracking URI, artifact root) of a fresh SQLite store holding three scaling sweeps and a tuning sweep."""
    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root}/mlflow.db"
    art = str(root / "artifacts")
    log_sweep(uri, art, "params-tiny", "params", sizes=[2e3, 8e3, 3e4, 1.2e5, 5e5], data_sizes=[800], stopped=1,
              diverged=1, model="equiformer_v2")
    log_sweep(uri, art, "params-other", "params", sizes=[2e3, 8e3, 3e4, 1.2e5], data_sizes=[800], seeds=(0,),
              exponent=0.25, force_floor=3000.0)  # a transformer whose force error plateaus
    log_hpo_sweep(uri, art, "hpo-tiny", sizes=[2e3, 3e4], lrs=np.geomspace(3e-4, 3e-2, 5))
    log_sweep(uri, art, "grid-tiny", "compute", sizes=[2e3, 3e4, 5e5], data_sizes=[200, 800, 3200], seeds=(0,),
              epochs=4)
    return uri, art


def log_hpo_sweep(uri: str, artifact_root: str, sweep: str, sizes, lrs, batch_sizes=(8, 16),
                  lr_range=(3e-4, 3e-2)) -> str:
    """An engine.tune sweep: one trial per (size, lr, batch size); the loss is a parabola in log lr whose
    minimum moves up with size (the largest size's best LR sits at the top of the range)."""
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment(sweep, artifact_location=f"{artifact_root}/{sweep}")
    parent = client.create_run(exp, tags={"engine.kind": "sweep", "engine.sweep": sweep, "engine.axis": "hpo"},
                               run_name=sweep)
    pid = parent.info.run_id
    client.log_batch(pid, params=[Param("space.search.lr_min", str(lr_range[0])),
                                  Param("space.search.lr_max", str(lr_range[1])),
                                  Param("space.search.batch_sizes", str(list(batch_sizes)))])
    k = 0
    for i, n in enumerate(sizes):
        best_log_lr = np.log(3e-3) + i * np.log(10) / max(1, len(sizes) - 1)
        for lr in lrs:
            for b in batch_sizes:
                k += 1
                tid = f"h{k:03d}"
                run = client.create_run(exp, run_name=tid, tags={
                    "engine.kind": "trial", "engine.sweep": sweep, "engine.trial_id": tid, "engine.axis": "hpo",
                    "mlflow.parentRunId": pid})
                loss = 1.0 + 0.3 * (np.log(lr) - best_log_lr) ** 2 + 0.01 * b / 8
                metrics = [Metric("val_loss", float(loss * (1 + 1 / (ep + 1))), 1_700_000_000_000 + ep, ep)
                           for ep in range(4)] + [Metric("epoch", float(ep), 1_700_000_000_000 + ep, ep)
                                                  for ep in range(4)]
                params = {"model": "transformer", "preset": f"p{i}", "n_params": int(n), "train_size": 300,
                          "seed": 0, "epochs": 3, "lr": lr, "batch_size": b}
                client.log_batch(run.info.run_id, metrics=metrics, params=[Param(a, str(v)) for a, v in params.items()],
                                 tags=[RunTag("engine.status", "completed")])
                client.set_terminated(run.info.run_id, "FINISHED")
    client.set_terminated(pid, "FINISHED")
    return pid


@pytest.fixture
def sweep_logger():
    """:func:`log_sweep`, for tests that need a store of their own."""
    return log_sweep
