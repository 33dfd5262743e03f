"""One Tune trial: the training loop run directly (one worker) or as a Ray Train DDP job (several).

The Tune config of a trial is ``{"trial": TrialSpec.to_dict() + storage + resources}``. Its state
lives in the sweep's storage (:mod:`engine.sweep.storage`): a shared folder it trains in directly, or
an object store it pulls from on start and pushes to after every checkpoint (each one once, streamed),
before the result reaches the driver. The loop checkpoints at every epoch's end and rung, every
``checkpoint.every_minutes``/``every_steps`` inside an epoch, and at the step after a SIGTERM (a preempted
node; :mod:`engine.loop.preemption`), and resumes from it at the next batch, so a retry after a worker or a
whole node died (Tune's ``FailureConfig(max_failures)``; a SIGTERM's ``Preempted`` counts as a failure) or
a resumed sweep continues the step count where it stopped, on whichever node it lands.

A one-worker trial calls :func:`engine.loop.loop.run_trial` inside the Tune trainable (a Ray Train
controller costs ~15 s to start, docs/design.md Ray note 3). A trial with ``workers > 1`` runs a
:class:`ray.train.torch.TorchTrainer` (gloo on CPU, NCCL on GPU) inside the function trainable,
because Train V2 trainers cannot be passed to a Tuner (Ray note 1); workers report with
``ray.train.report`` and ``TuneReportCallback`` forwards rank 0's metrics to Tune.

While it trains, the trial's process (rank 0 of a DDP trial) samples CPU, memory and GPU use
(:class:`engine.sweep.sysmetrics.SystemSampler`, every ``system_metrics_interval_s`` of the spec,
default 10 s; 0 turns it off) and merges the averages since the previous report into each report,
under MLflow's ``system/...`` names: the driver logs them to the trial's run like any metric.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from engine.sweep.storage import TrialStorage, check_trial_storage
from engine.sweep.sysmetrics import DEFAULT_INTERVAL_S, SystemSampler

ATTEMPT_FILE = "attempts.json"
DONE_FILE = "sweep_status.json"  # written by the driver when a trial ends (completed or stopped)


def _bump_attempt(run_dir: Path) -> int:
    """Count starts of this trial (1 = first), persisted in the run folder."""
    path = run_dir / ATTEMPT_FILE
    try:
        attempts = json.loads(path.read_text()).get("attempts", 0)
    except (OSError, ValueError):
        attempts = 0
    attempts += 1
    tmp = path.with_suffix(".tmp")
    node_id = None
    try:
        import ray

        if ray.is_initialized():
            node_id = ray.get_runtime_context().get_node_id()
    except ImportError:
        pass
    tmp.write_text(json.dumps({"attempts": attempts, "pid": os.getpid(), "node_id": node_id, "time": time.time()}))
    os.replace(tmp, path)
    return attempts


def _resume_info(run_dir: Path) -> dict[str, float]:
    """Epoch and step of the checkpoint a start resumes from (0 when starting fresh)."""
    path = run_dir / "checkpoint.pt"
    if not path.exists():
        return {"resumed_from_epoch": 0.0, "resumed_from_step": 0.0}
    import torch

    ck = torch.load(path, map_location="cpu", weights_only=True, mmap=True)  # reads two numbers, not the weights
    return {"resumed_from_epoch": float(ck.get("epoch", 0)), "resumed_from_step": float(ck.get("step", 0))}


class TuneReporter:
    """The loop's Reporter inside a one-worker Tune trial: push the checkpoint to storage, then ``tune.report``."""

    def __init__(self, extra: dict[str, Any], storage: TrialStorage | None = None, trial_id: str = "",
                 sampler: SystemSampler | None = None) -> None:
        self.extra = dict(extra)
        self.storage = storage
        self.trial_id = trial_id
        self.sampler = sampler  # system metrics merged into every report

    def report(self, metrics: dict[str, float], checkpoint_dir: str | None = None) -> None:
        from ray import tune

        if self.storage is not None and checkpoint_dir:
            self.storage.push(self.trial_id, checkpoint_dir)
        tune.report({**metrics, **self.extra, **_system(self.sampler)})

    def on_checkpoint(self, run_dir: str) -> None:
        """A checkpoint inside an epoch (no report follows): upload it now."""
        if self.storage is not None:
            self.storage.push(self.trial_id, run_dir)


class TrainReporter:
    """The loop's Reporter inside a Ray Train worker: ``ray.train.report`` on every rank (it is a barrier)."""

    all_ranks = True  # the loop calls it on every rank, not only rank 0

    def __init__(self, extra: dict[str, Any], storage: TrialStorage | None = None, trial_id: str = "",
                 sampler: SystemSampler | None = None) -> None:
        self.extra = dict(extra)
        self.storage = storage
        self.trial_id = trial_id
        self.sampler = sampler  # rank 0's system metrics (the rank whose report reaches Tune)

    def report(self, metrics: dict[str, float], checkpoint_dir: str | None = None) -> None:
        import ray.train

        if self.storage is not None and checkpoint_dir and ray.train.get_context().get_world_rank() == 0:
            self.storage.push(self.trial_id, checkpoint_dir)  # rank 0 writes the checkpoint
        ray.train.report({**metrics, **self.extra, **_system(self.sampler)})

    def on_checkpoint(self, run_dir: str) -> None:
        """A checkpoint inside an epoch (the loop calls this on rank 0, which writes it): upload it now."""
        if self.storage is not None:
            self.storage.push(self.trial_id, run_dir)


def _system(sampler: SystemSampler | None) -> dict[str, float]:
    return sampler.averages() if sampler is not None else {}


def system_sampler(spec: dict) -> contextlib.AbstractContextManager[SystemSampler | None]:
    """The trial's :class:`SystemSampler` (every ``system_metrics_interval_s``), or None when that is ≤ 0."""
    interval = float(spec.get("system_metrics_interval_s", DEFAULT_INTERVAL_S))
    return SystemSampler(interval) if interval > 0 else contextlib.nullcontext()


def _trial_config(spec: dict):
    from engine.config import trial_config_from_dict

    return trial_config_from_dict(spec["config"])


def _train_worker(loop_config: dict) -> None:
    """Body of each Ray Train worker: join the process group Ray set up and run the loop on this rank."""
    import ray
    import ray.train
    import ray.train.torch

    from engine.loop.loop import DistContext, run_trial

    ctx = ray.train.get_context()
    device = ray.train.torch.get_device()
    spec = loop_config["spec"]
    cfg = _trial_config(spec)
    cfg.threads = cfg.threads or max(1, int(loop_config.get("cpus_per_worker", 1)))
    cfg.device = "cuda" if device.type == "cuda" else "cpu"
    rank = ctx.get_world_rank()
    storage = TrialStorage(spec["storage"])
    run_dir = prepare_run_dir(storage, spec["trial_id"], suffix=f"-rank{rank}")  # every rank reads the checkpoint
    dist = DistContext(rank=rank, world_size=ctx.get_world_size(), device=device)
    where = {"rank": rank, "node_id": ray.get_runtime_context().get_node_id(), "pid": os.getpid()}
    storage.write_text(f"trials/{spec['trial_id']}/workers/rank{rank}.json", json.dumps(where) + "\n")
    with system_sampler(spec) if rank == 0 else contextlib.nullcontext() as sampler:
        reporter = TrainReporter(loop_config["extra"], storage, spec["trial_id"], sampler)
        run_trial(cfg, run_dir, reporter=reporter, dist=dist)


def _run_ddp(spec: dict, extra: dict[str, Any]) -> None:
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    res = spec["resources"]
    # how long the worker group waits for its placement group (Train propagates this to its controller):
    # on an autoscaling cluster a queued trial waits for nodes to boot, not a fixed minute
    os.environ["RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"] = str(float(spec.get("start_timeout_s", 60.0)))
    gpus = float(res.get("gpus_per_worker", 0.0))
    per_worker = {"CPU": float(res.get("cpus_per_worker", 1.0))}
    if gpus > 0:
        per_worker["GPU"] = gpus
    trainer = TorchTrainer(
        _train_worker,
        train_loop_config={
            "spec": spec,
            "extra": extra,
            "cpus_per_worker": per_worker["CPU"],
        },
        torch_config=TorchConfig(backend="nccl" if gpus > 0 else "gloo"),
        scaling_config=ray.train.ScalingConfig(
            num_workers=int(res["workers"]), use_gpu=gpus > 0, resources_per_worker=per_worker
        ),
        run_config=ray.train.RunConfig(
            name=f"train-{spec['trial_id']}",
            storage_path=TrialStorage(spec["storage"]).uri("ray"),
            callbacks=[TuneReportCallback()],
            # a dead worker restarts the group, which resumes from the stored checkpoint;
            # bounded controller failures so a start that cannot get resources fails instead of hanging
            failure_config=ray.train.FailureConfig(max_failures=1, controller_failure_limit=2),
        ),
    )
    trainer.fit()


def resolve_spec(config: dict) -> dict:
    """The trial spec of a Tune config. Grid trials carry it whole; an HPO trial carries a base spec
    plus the sampled ``hpo`` values (lr, batch_size), which also name its id and folder."""
    spec = config["trial"]
    hpo = config.get("hpo")
    if not hpo:
        return spec
    spec = copy.deepcopy(spec)
    lr, batch_size = float(hpo["lr"]), int(hpo["batch_size"])
    spec["config"].setdefault("optim", {})["lr"] = lr
    spec["config"]["batch_size"] = batch_size
    spec["trial_id"] = f"{spec['trial_id']}-lr{lr:.3e}-b{batch_size}"
    spec["run_dir"] = spec["trials_dir"].rstrip("/") + "/" + spec["trial_id"]
    return spec


def prepare_run_dir(storage: TrialStorage, trial_id: str, suffix: str = "") -> Path:
    """The folder this process trains the trial in, holding the trial's latest stored state.

    A shared path is used in place. With an object store the node's scratch folder is emptied (it may
    hold an older attempt's files) and refilled from storage.
    """
    if not storage.remote:
        run_dir = Path(storage.trial_dir(trial_id))
        run_dir.mkdir(parents=True, exist_ok=True)
        return run_dir
    run_dir = Path(storage.trial_dir(trial_id) + suffix)
    shutil.rmtree(run_dir, ignore_errors=True)
    storage.pull(trial_id, run_dir)
    return run_dir


def tune_trainable(config: dict) -> None:
    """The Tune function trainable of every sweep trial (see the module docstring)."""
    spec = resolve_spec(config)
    storage = TrialStorage(spec["storage"])
    check_trial_storage(storage)
    trial_id = spec["trial_id"]
    run_dir = prepare_run_dir(storage, trial_id)
    attempt = _bump_attempt(run_dir)
    storage.push(trial_id, run_dir, names=(ATTEMPT_FILE,))
    extra = {"attempt": float(attempt), **_resume_info(run_dir)}
    workers = int(spec["resources"].get("workers", 1))
    if workers > 1:
        _run_ddp(spec, extra)
        return
    from engine.loop.loop import run_trial

    cfg = _trial_config(spec)
    cfg.threads = cfg.threads or max(1, int(spec["resources"].get("cpus_per_worker", 1)))
    with system_sampler(spec) as sampler:
        run_trial(cfg, run_dir, reporter=TuneReporter(extra, storage, trial_id, sampler))
