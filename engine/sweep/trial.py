"""One Tune trial: the training loop run directly (one worker) or as a Ray Train DDP job (several).

The Tune config of a trial is ``{"trial": TrialSpec.to_dict() + run_dir + resources}``. The trial's
``run_dir`` (``sweeps/<sweep>/trials/<trial_id>/``) is deterministic, and the loop checkpoints
there every epoch and resumes from it, so a retry after a worker died (Tune's
``FailureConfig(max_failures)``) or a resumed sweep continues the step count where it stopped.

A one-worker trial calls :func:`engine.loop.loop.run_trial` inside the Tune trainable (a Ray Train
controller costs ~15 s to start, DESIGN.md Ray note 3). A trial with ``workers > 1`` runs a
:class:`ray.train.torch.TorchTrainer` (gloo on CPU, NCCL on GPU) inside the function trainable,
because Train V2 trainers cannot be passed to a Tuner (Ray note 1); workers report with
``ray.train.report`` and ``TuneReportCallback`` forwards rank 0's metrics to Tune.
"""

from __future__ import annotations

import copy
import json
import os
import time
from pathlib import Path
from typing import Any

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
    tmp.write_text(json.dumps({"attempts": attempts, "pid": os.getpid(), "time": time.time()}))
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
    """The loop's Reporter inside a one-worker Tune trial: every report becomes ``tune.report``."""

    def __init__(self, extra: dict[str, Any]) -> None:
        self.extra = dict(extra)

    def report(self, metrics: dict[str, float], checkpoint_dir: str | None = None) -> None:
        from ray import tune

        tune.report({**metrics, **self.extra})


class TrainReporter:
    """The loop's Reporter inside a Ray Train worker: ``ray.train.report`` on every rank (it is a barrier)."""

    all_ranks = True  # the loop calls it on every rank, not only rank 0

    def __init__(self, extra: dict[str, Any]) -> None:
        self.extra = dict(extra)

    def report(self, metrics: dict[str, float], checkpoint_dir: str | None = None) -> None:
        import ray.train

        ray.train.report({**metrics, **self.extra})


def _trial_config(spec: dict):
    from engine.config import trial_config_from_dict

    return trial_config_from_dict(spec["config"])


def _train_worker(loop_config: dict) -> None:
    """Body of each Ray Train worker: join the process group Ray set up and run the loop on this rank."""
    import ray.train
    import ray.train.torch

    from engine.loop.loop import DistContext, run_trial

    ctx = ray.train.get_context()
    device = ray.train.torch.get_device()
    cfg = _trial_config(loop_config["spec"])
    cfg.threads = cfg.threads or max(1, int(loop_config.get("cpus_per_worker", 1)))
    cfg.device = "cuda" if device.type == "cuda" else "cpu"
    dist = DistContext(rank=ctx.get_world_rank(), world_size=ctx.get_world_size(), device=device)
    run_trial(cfg, loop_config["run_dir"], reporter=TrainReporter(loop_config["extra"]), dist=dist)


def _run_ddp(spec: dict, run_dir: Path, extra: dict[str, Any]) -> None:
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    res = spec["resources"]
    gpus = float(res.get("gpus_per_worker", 0.0))
    per_worker = {"CPU": float(res.get("cpus_per_worker", 1.0))}
    if gpus > 0:
        per_worker["GPU"] = gpus
    trainer = TorchTrainer(
        _train_worker,
        train_loop_config={
            "spec": spec,
            "run_dir": str(run_dir),
            "extra": extra,
            "cpus_per_worker": per_worker["CPU"],
        },
        torch_config=TorchConfig(backend="nccl" if gpus > 0 else "gloo"),
        scaling_config=ray.train.ScalingConfig(
            num_workers=int(res["workers"]), use_gpu=gpus > 0, resources_per_worker=per_worker
        ),
        run_config=ray.train.RunConfig(
            name=f"train-{spec['trial_id']}",
            storage_path=str(Path(spec["storage_path"]).resolve()),
            callbacks=[TuneReportCallback()],
            # a dead worker restarts the group, which resumes from run_dir/checkpoint.pt;
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
    spec["run_dir"] = str(Path(spec["trials_dir"]) / spec["trial_id"])
    return spec


def tune_trainable(config: dict) -> None:
    """The Tune function trainable of every sweep trial (see the module docstring)."""
    spec = resolve_spec(config)
    run_dir = Path(spec["run_dir"])
    run_dir.mkdir(parents=True, exist_ok=True)
    attempt = _bump_attempt(run_dir)
    extra = {"attempt": float(attempt), **_resume_info(run_dir)}
    workers = int(spec["resources"].get("workers", 1))
    if workers > 1:
        _run_ddp(spec, run_dir, extra)
        return
    from engine.loop.loop import run_trial

    cfg = _trial_config(spec)
    cfg.threads = cfg.threads or max(1, int(spec["resources"].get("cpus_per_worker", 1)))
    run_trial(cfg, run_dir, reporter=TuneReporter(extra))

