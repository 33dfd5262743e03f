"""Run a sweep: search space → Ray Tune trials → MLflow runs → (optional) report.

``run_sweep`` is the library function behind ``python -m engine.scale`` and ``python -m engine.tune``.
The sweep's folder ``sweeps/<name>/`` holds the resolved space (``space.json``), one folder per
trial (``trials/<trial_id>/``: checkpoint, metrics, status), Ray Tune's results (``ray/``) and a
``summary.json``. Both the folder and the MLflow runs are keyed by the sweep name, so ``--resume``
(``resume=True``) reruns only the trials without a completion marker, and those continue from their
last checkpoint inside the same MLflow child runs.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from engine import paths
from engine.errors import ConfigError, DataError, ResourceError
from engine.sweep.spaces import SearchSpace, TrialSpec, expand, space_from_dict
from engine.sweep.trial import DONE_FILE

SPACE_FILE = "space.json"
SUMMARY_FILE = "summary.json"


@dataclass
class SweepOptions:
    """How to run a sweep (not what: that is the :class:`SearchSpace`)."""

    name: str
    address: str | None = None  # None: start a local Ray; "auto": join the running cluster
    resume: bool = False
    tracking_uri: str | None = None  # None: $MLFLOW_TRACKING_URI or sqlite:///./mlflow.db
    max_failures: int = 2  # Tune retries of a trial whose worker died (each resumes from its checkpoint)
    report: bool = True  # run engine.report.build at the end when it exists
    progress_interval_s: float = 10.0
    callbacks: list = field(default_factory=list)  # extra Tune callbacks (tests, tooling)
    stream: TextIO | None = None  # where progress goes (stdout)


@dataclass
class SweepResult:
    """What a finished (or interrupted) sweep leaves behind."""

    name: str
    sweep_dir: Path
    tracking_uri: str
    parent_run_id: str
    trials: dict[str, dict]  # trial_id → {"status", "flops_cum", "wall_s", "last": metrics}
    skipped: list[str]  # finished before this run (resume)
    flops_used: float
    flops_full_estimate: float | None
    wall_s: float
    loop_wall_s: float  # Σ seconds inside the training loop over trials run now
    interrupted: bool
    report_path: str | None = None
    best: dict | None = None  # {"trial_id", "val_loss", "config"} (hpo)

    @property
    def compute_fraction(self) -> float | None:
        if not self.flops_full_estimate:
            return None
        return self.flops_used / self.flops_full_estimate

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["sweep_dir"] = str(self.sweep_dir)
        out["compute_fraction"] = self.compute_fraction
        return out


# ---------------------------------------------------------------------------------------
# folders and resume


def sweep_dir_for(name: str) -> Path:
    if not name or any(c in name for c in "/\\:") or name.startswith("."):
        raise ConfigError(f"sweep name {name!r} must be a plain folder name (letters, digits, - and _)")
    return paths.sweeps_dir() / name


def load_saved_space(sweep_dir: Path) -> SearchSpace:
    path = sweep_dir / SPACE_FILE
    if not path.is_file():
        raise ConfigError(f"no sweep to resume in {sweep_dir} ({SPACE_FILE} missing); run it without --resume first")
    values = json.loads(path.read_text())
    source = values.pop("source", str(path))
    return space_from_dict(values, source=source)


def finished_trials(sweep_dir: Path) -> dict[str, str]:
    """Trials whose folder holds the driver's completion marker: trial_id → completed|stopped."""
    out = {}
    for marker in sorted((sweep_dir / "trials").glob(f"*/{DONE_FILE}")):
        try:
            out[marker.parent.name] = json.loads(marker.read_text())["status"]
        except (OSError, ValueError, KeyError):
            continue
    return out


def trial_spec_dict(spec: TrialSpec, space: SearchSpace, sweep_dir: Path) -> dict:
    """The ``trial`` entry of a Tune config: id, resolved TrialConfig, run folder, resources."""
    config = spec.config.to_dict()
    if not config["data"].get("cache_dir"):
        config["data"]["cache_dir"] = str(paths.cache_dir())  # workers may not share the driver's env
    return {
        "trial_id": spec.trial_id,
        "config": config,
        "run_dir": str(sweep_dir / "trials" / spec.trial_id),
        "trials_dir": str(sweep_dir / "trials"),
        "resources": dataclasses.asdict(space.resources),
        "storage_path": str(sweep_dir / "ray"),
    }


def prepare_data(data_configs: list) -> None:
    """Build each distinct embedded dataset once in the driver before any trial starts, so concurrent
    trials find the cache filled instead of each generating it; a missing dataset file fails here."""
    from engine.data.dataset import load_records

    seen = set()
    for cfg in data_configs:
        pool = dataclasses.replace(cfg, train_size=None)
        key = json.dumps(dataclasses.asdict(pool), sort_keys=True, default=str)
        if key in seen:
            continue
        seen.add(key)
        if pool.path is not None:  # a file dataset is read by each trial; here only check that it is there
            if not Path(pool.path).expanduser().exists():
                raise DataError(f"dataset {pool.path} not found; fix fixed.data.path in the search space")
            continue
        if not pool.cache_dir:
            pool.cache_dir = str(paths.cache_dir())
        load_records(pool, progress=False)


# ---------------------------------------------------------------------------------------
# Ray


def init_ray(address: str | None, sweep_dir: Path) -> bool:
    """Connect to (``address``) or start a local Ray; True when this call started it."""
    import ray

    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = {"include_dashboard": False, "configure_logging": True, "logging_level": "WARNING"}
    if address:
        ray.init(address=address, **kwargs)
    else:
        ray.init(num_cpus=os.cpu_count() or 1, **kwargs)
    return True


def trial_resources(space: SearchSpace) -> dict[str, float]:
    """What Tune reserves for the trainable. A DDP trial's workers are reserved by its Train controller,
    so the trainable itself asks for a sliver of CPU (0 is rejected, DESIGN.md Ray note 4)."""
    res = space.resources
    if res.workers > 1:
        return {"cpu": 0.01}
    out = {"cpu": float(res.cpus_per_worker)}
    if res.gpus_per_worker > 0:
        out["gpu"] = float(res.gpus_per_worker)
    return out


def _per_trial_cpus(res: Any) -> float:
    return res.workers * res.cpus_per_worker + (0.01 if res.workers > 1 else 0.0)


def _resource_error(res: Any, where: str, cpus: float, gpus: float) -> ResourceError:
    return ResourceError(
        f"one trial needs {_per_trial_cpus(res):g} CPUs and {res.workers * res.gpus_per_worker:g} GPUs but {where} "
        f"has {cpus:g} CPUs and {gpus:g} GPUs; lower resources in the search space"
    )


def check_local_resources(space: SearchSpace) -> None:
    """Fail before anything is written when one trial cannot fit on this machine (local Ray only)."""
    res = space.resources
    cpus = float(os.cpu_count() or 1)
    gpus = 0.0
    if res.gpus_per_worker > 0:
        import torch

        gpus = float(torch.cuda.device_count())
    if _per_trial_cpus(res) > cpus + 1e-9 or res.workers * res.gpus_per_worker > gpus + 1e-9:
        raise _resource_error(res, "this machine", cpus, gpus)


def max_concurrent(space: SearchSpace, local: bool) -> int | None:
    """Trials at once: the space's setting, else (local Ray) as many as the CPUs/GPUs hold; a cluster
    queues the rest itself (pending trials are what make the autoscaler add nodes)."""
    import ray

    res = space.resources
    if res.max_concurrent:
        return int(res.max_concurrent)
    if not local and res.workers == 1:
        return None
    total = ray.cluster_resources()
    cpus = float(total.get("CPU", 1.0))
    fit = math.floor(cpus / _per_trial_cpus(res) + 1e-9)
    if res.gpus_per_worker > 0:
        fit = min(fit, math.floor(float(total.get("GPU", 0.0)) / (res.workers * res.gpus_per_worker) + 1e-9))
    if fit < 1:
        raise _resource_error(res, "the Ray cluster", cpus, float(total.get("GPU", 0.0)))
    return fit


# ---------------------------------------------------------------------------------------
# the sweep


def run_sweep(
    space: SearchSpace,
    options: SweepOptions,
    space_text: str | None = None,
    tuner_factory: Any = None,
) -> SweepResult:
    """Run (or resume) the sweep ``options.name`` over ``space``; see the module docstring.

    ``tuner_factory(trainable, param_space, tune_config_kwargs, run_config)`` builds the Tuner
    (``engine.tune`` passes one with Optuna); the default runs the grid with ``tune.grid_search``
    and, for axis ``compute``, ASHA with cumulative FLOPs as the time attribute.
    """
    # Tune warns when a driver callback takes > 0.5 s; logging to SQLite on a busy machine often does
    os.environ.setdefault("TUNE_WARN_THRESHOLD_S", "5")
    from ray import tune

    from engine.sweep.progress import MlflowCallback, RecordingASHA, SweepLedger, TrialState
    from engine.sweep.tracking import SweepTracker
    from engine.sweep.trial import tune_trainable

    t_start = time.perf_counter()
    stream = options.stream or sys.stdout
    sweep_dir = sweep_dir_for(options.name)
    if options.resume:
        space = load_saved_space(sweep_dir)
    elif (sweep_dir / SPACE_FILE).exists():
        raise ConfigError(
            f"sweep {options.name!r} already exists in {sweep_dir}; "
            "pass --resume to continue it or --name for a new one"
        )
    if options.address is None:
        check_local_resources(space)
    uri = options.tracking_uri or paths.default_tracking_uri()
    tracker = SweepTracker(uri, options.name, space.axis)
    if not options.resume and tracker.child_runs():
        # reusing them would skip the new metrics as "already logged"
        raise ConfigError(
            f"MLflow {uri} already has runs of a sweep named {options.name!r} (its folder is gone); "
            "choose another --name or delete that MLflow experiment"
        )
    sweep_dir.mkdir(parents=True, exist_ok=True)
    (sweep_dir / "trials").mkdir(exist_ok=True)
    if not options.resume:
        (sweep_dir / SPACE_FILE).write_text(json.dumps(space.to_dict(), indent=2, sort_keys=True) + "\n")
        if space_text is not None:
            (sweep_dir / "space.yaml").write_text(space_text)
    elif space_text is None and (sweep_dir / "space.yaml").exists():
        space_text = (sweep_dir / "space.yaml").read_text()

    tracker.close_leftovers()  # runs a killed driver left RUNNING; reopened below if their trial reruns
    parent_id = tracker.start_parent(space.to_dict(), space_text)

    specs = expand(space)
    done = finished_trials(sweep_dir) if options.resume else {}
    todo = [s for s in specs if s.trial_id not in done]
    skipped = [s.trial_id for s in specs if s.trial_id in done]
    if skipped:
        print(f"resume: {len(skipped)} trial(s) already finished, {len(todo)} to run", file=stream)

    states: dict[str, TrialState] = {}
    for s in specs if tuner_factory is None else []:  # a searcher's trials are not known in advance
        states[s.trial_id] = TrialState(
            status=done.get(s.trial_id, "pending"), epochs=s.config.epochs, max_flops=s.config.max_flops
        )
    _restore_ledger(states, sweep_dir)

    if options.address is None and todo:
        prepare_data([s.config.data for s in todo])
    started_ray = init_ray(options.address, sweep_dir)
    interrupted = False
    scheduler = None
    try:
        local = options.address is None
        if space.axis == "compute" and space.flop_budgets:
            budgets = space.flop_budgets
            scheduler = RecordingASHA(
                time_attr="flops_cum",
                metric="val_loss",
                mode="min",
                grace_period=budgets[0],
                max_t=budgets[-1],
                reduction_factor=space.reduction_factor,
            )
        ledger = SweepLedger(options.name, states, scheduler, options.progress_interval_s, options.stream)
        callbacks = [ledger, MlflowCallback(tracker, ledger), *options.callbacks]
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # Tune's own tables off: SweepLedger prints progress
        run_config = tune.RunConfig(
            name=f"run-{_next_attempt(sweep_dir)}",
            storage_path=str(sweep_dir / "ray"),
            callbacks=callbacks,
            failure_config=tune.FailureConfig(max_failures=options.max_failures),
            verbose=0,
        )
        trainable = tune.with_resources(tune_trainable, trial_resources(space))
        tune_kwargs = {
            "max_concurrent_trials": max_concurrent(space, local),
            "reuse_actors": True,
            "trial_name_creator": _trial_name,
            "trial_dirname_creator": _trial_name,
        }
        if tuner_factory is not None:
            tuner = tuner_factory(trainable, trial_spec_dict(specs[0], space, sweep_dir), tune_kwargs, run_config)
            # a searcher's own ASHA decides which trials stop early: the ledger must ask that one
            ledger.scheduler = getattr(tuner_factory, "scheduler", None)
        elif todo:
            param_space = {"trial": tune.grid_search([trial_spec_dict(s, space, sweep_dir) for s in todo])}
            if scheduler is not None:
                tune_kwargs["scheduler"] = scheduler
            tuner = tune.Tuner(trainable, param_space=param_space, tune_config=tune.TuneConfig(**tune_kwargs),
                               run_config=run_config)
        else:
            tuner = None
        if tuner is not None:
            grid = tuner.fit()
            interrupted = _was_interrupted(grid, states)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        leftovers = tracker.close_leftovers()
        if leftovers:
            interrupted = True
        if started_ray:
            import ray

            ray.shutdown()

    result = _summarize(options.name, sweep_dir, uri, parent_id, states, skipped, t_start, interrupted)
    tracker.log_parent(
        metrics={
            "flops_used": result.flops_used,
            "flops_full_grid_estimate": result.flops_full_estimate or float("nan"),
            "compute_fraction": result.compute_fraction if result.compute_fraction is not None else float("nan"),
            "sweep_wall_s": result.wall_s,
            "loop_wall_s": result.loop_wall_s,
            "trials_completed": sum(1 for t in result.trials.values() if t["status"] == "completed"),
            "trials_stopped": sum(1 for t in result.trials.values() if t["status"] == "stopped"),
            "trials_failed": sum(1 for t in result.trials.values() if t["status"] == "failed"),
        },
    )
    tracker.end_parent("KILLED" if interrupted else "FINISHED")
    (sweep_dir / SUMMARY_FILE).write_text(json.dumps(result.to_dict(), indent=2, sort_keys=True, default=str) + "\n")
    return result


def _trial_name(trial: Any) -> str:
    from engine.sweep.trial import resolve_spec

    return resolve_spec(trial.config)["trial_id"]


def _next_attempt(sweep_dir: Path) -> int:
    runs = [p for p in (sweep_dir / "ray").glob("run-*") if p.is_dir()]
    return len(runs) + 1


def _was_interrupted(grid: Any, states: dict) -> bool:
    """A trial neither finished nor failed (Tune stopped on SIGINT) means the sweep is incomplete."""
    return any(st.status in ("pending", "running") for st in states.values())


def _restore_ledger(states: dict, sweep_dir: Path) -> None:
    """FLOPs and wall time of trials that ran before a resume (finished or not), from their metrics.jsonl."""
    for trial_id in states:
        path = sweep_dir / "trials" / trial_id / "metrics.jsonl"
        if not path.exists():
            continue
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        st = states[trial_id]
        for row in rows:
            if int(row.get("epoch", 0)) == 1:
                st.flops_per_epoch = float(row.get("flops_cum", 0.0))
        if rows:
            st.flops_cum = float(rows[-1].get("flops_cum", 0.0))
            st.wall_s = float(rows[-1].get("wall_s", 0.0))
            st.last = rows[-1]


def _summarize(
    name: str,
    sweep_dir: Path,
    uri: str,
    parent_id: str,
    states: dict,
    skipped: list[str],
    t_start: float,
    interrupted: bool,
) -> SweepResult:
    fulls = [st.full_flops() for st in states.values()]
    full = sum(f for f in fulls if f) if any(fulls) else None
    used = sum(st.flops_cum for st in states.values())
    trials = {
        k: {"status": st.status, "flops_cum": st.flops_cum, "wall_s": st.wall_s, "attempts": st.attempts,
            "last": st.last}
        for k, st in states.items()
    }
    loop_wall = sum(st.wall_s for k, st in states.items() if k not in skipped)
    return SweepResult(
        name=name,
        sweep_dir=sweep_dir,
        tracking_uri=uri,
        parent_run_id=parent_id,
        trials=trials,
        skipped=skipped,
        flops_used=used,
        flops_full_estimate=full,
        wall_s=time.perf_counter() - t_start,
        loop_wall_s=loop_wall,
        interrupted=interrupted,
    )


def run_report(result: SweepResult, stream: TextIO | None = None) -> str | None:
    """Run the report stage (``engine.report.build``) when that module exists; returns the report folder."""
    stream = stream or sys.stdout
    try:
        from engine.report.build import build_report
    except ImportError:
        print("report: engine.report.build is not available; skipped", file=stream)
        return None
    out_dir = paths.reports_dir() / result.name
    try:
        built = build_report(sweeps=[result.name], tracking_uri=result.tracking_uri, out_dir=out_dir)
    except Exception as exc:  # the sweep's runs are safe in MLflow; a report failure must not hide that
        print(f"report: failed ({type(exc).__name__}: {exc}); rerun it with python -m engine.report", file=stream)
        return None
    return str(built if isinstance(built, (str, Path)) else out_dir)
