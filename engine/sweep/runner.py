"""Run a sweep: search space → Ray Tune trials → MLflow runs → (optional) report.

``run_sweep`` is the library function behind ``python -m engine.scale`` and ``python -m engine.tune``.
The driver's folder ``sweeps/<name>/`` holds the resolved space (``space.json``), the driver lock
(``driver.lock``) and a ``summary.json``. Trial state (``trials/<trial_id>/``: checkpoint, metrics,
completion marker) and Ray Tune's results (``ray/``) live in the sweep's storage
(:mod:`engine.sweep.storage`): by default the same folder, on a cluster a shared path or an object
store every node reaches (``--storage``). Storage and MLflow runs are keyed by the sweep name, so
``--resume`` (``resume=True``) reruns only the trials without a completion marker (after
reconciling markers with MLflow), and those continue from their last checkpoint inside the same
MLflow child runs.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from engine import paths
from engine.errors import ConfigError, DataError, ResourceError
from engine.sweep.lock import DriverLock
from engine.sweep.spaces import SearchSpace, TrialSpec, expand, space_from_dict
from engine.sweep.storage import TrialStorage, check_visible_from_workers, is_uri
from engine.sweep.trial import DONE_FILE

SPACE_FILE = "space.json"
SUMMARY_FILE = "summary.json"
STORAGE_FILE = "storage.json"  # where the sweep's trial state lives (so --resume finds it again)


@dataclass
class SweepOptions:
    """How to run a sweep (not what: that is the :class:`SearchSpace`)."""

    name: str
    address: str | None = None  # None: start a local Ray; "auto": join the running cluster
    storage: str | None = None  # trial state: None → $ENGINE_STORAGE, else the sweep folder (see engine.sweep.storage)
    resume: bool = False
    tracking_uri: str | None = None  # None: $MLFLOW_TRACKING_URI or sqlite:///./mlflow.db
    max_failures: int = 2  # Tune retries of a trial whose worker died (each resumes from its checkpoint)
    report: bool = True  # run engine.report.build at the end when it exists
    progress_interval_s: float = 10.0
    # how often a trial samples CPU/memory/GPU use for MLflow's system metrics (0 = off; engine.sweep.sysmetrics)
    system_metrics_interval_s: float = field(
        default_factory=lambda: float(os.environ.get("ENGINE_SYSTEM_METRICS_INTERVAL_S", "10"))
    )
    register: bool = True  # register the best trial of each size in MLflow's Model Registry (engine.sweep.registry)
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
    storage: str | None = None  # where the trials' state lives (engine.sweep.storage); None: the sweep folder

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


def finished_trials(storage: TrialStorage | Path) -> dict[str, str]:
    """Trials whose storage folder holds the driver's completion marker: trial_id → completed|stopped."""
    if isinstance(storage, Path):
        storage = TrialStorage(str(storage))
    out = {}
    for trial_id in storage.list_dirs("trials"):
        text = storage.read_text(f"trials/{trial_id}/{DONE_FILE}")
        if text is None:
            continue
        try:
            out[trial_id] = json.loads(text)["status"]
        except (ValueError, KeyError):
            continue
    return out


def resolve_storage(options: SweepOptions, sweep_dir: Path) -> TrialStorage:
    """The sweep's storage: --storage, else the one saved by its first run, else $ENGINE_STORAGE/<name>, else
    the sweep folder. A resumed sweep must keep its storage (its checkpoints are there)."""
    saved_path = sweep_dir / STORAGE_FILE
    saved = json.loads(saved_path.read_text())["storage"] if saved_path.is_file() else None
    location = options.storage
    if location is None and saved is None and os.environ.get("ENGINE_STORAGE"):
        base = os.environ["ENGINE_STORAGE"]
        location = base.rstrip("/") + "/" + options.name if is_uri(base) else str(Path(base) / options.name)
    if location is not None and not is_uri(location):
        location = str(Path(location).expanduser().resolve())
    if saved is not None and location is not None and location != saved:
        raise ConfigError(f"sweep {options.name!r} keeps its trials in {saved}; resume it without --storage {location}")
    return TrialStorage(location or saved or str(sweep_dir))


def trial_spec_dict(spec: TrialSpec, space: SearchSpace, storage: TrialStorage, start_timeout_s: float = 60.0,
                    system_metrics_interval_s: float = 10.0) -> dict:
    """The ``trial`` entry of a Tune config: id, resolved TrialConfig, storage, resources."""
    config = spec.config.to_dict()
    if not config["data"].get("cache_dir"):
        config["data"]["cache_dir"] = str(paths.cache_dir())  # workers may not share the driver's env
    return {
        "trial_id": spec.trial_id,
        "config": config,
        "storage": storage.location,
        "run_dir": storage.trial_dir(spec.trial_id),  # where a shared-path trial trains (informative)
        "trials_dir": storage.uri("trials"),
        "resources": dataclasses.asdict(space.resources),
        "start_timeout_s": start_timeout_s,  # how long a DDP trial waits for its workers' resources
        "system_metrics_interval_s": system_metrics_interval_s,  # engine.sweep.sysmetrics (0 = off)
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
        # "local": always a fresh instance of our own, never a `ray start` cluster that happens to run here
        ray.init(address="local", num_cpus=os.cpu_count() or 1, **kwargs)
    return True


def trial_resources(space: SearchSpace) -> dict[str, float]:
    """What Tune reserves for the trainable. A DDP trial's workers are reserved by its Train controller,
    so the trainable itself asks for a sliver of CPU (0 is rejected, docs/design.md Ray note 4)."""
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


def _worker_bundle(res: Any) -> dict[str, float]:
    bundle = {"CPU": float(res.cpus_per_worker)}
    if res.gpus_per_worker > 0:
        bundle["GPU"] = float(res.gpus_per_worker)
    return bundle


def _autoscaler_config_types(gcs_address: str) -> list[dict] | None:
    """Node types of the autoscaler serving ``gcs_address``, read from the config file its monitor process
    on this machine was started with (the driver runs on the head, as cluster.yaml has it); None if none."""
    import yaml

    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if not any(a.endswith("monitor.py") for a in args) or f"--gcs-address={gcs_address}" not in args:
            continue
        config = next((a.split("=", 1)[1] for a in args if a.startswith("--autoscaling-config=")), None)
        if config is None:
            continue
        try:
            values = yaml.safe_load(Path(config).expanduser().read_text())
        except (OSError, yaml.YAMLError):
            return None
        head = values.get("head_node_type")
        return [
            {"name": name, "resources": {k: float(v) for k, v in (t.get("resources") or {}).items()},
             "max": int(t.get("max_workers", values.get("max_workers", 0))), "autoscaled": name != head}
            for name, t in (values.get("available_node_types") or {}).items()
        ]
    return None


def cluster_node_types() -> tuple[list[dict], bool | None]:
    """Every kind of node the cluster has or can get: ``([{"name", "resources", "max"}], autoscaling)``.

    The autoscaler's node types (from the cluster config it reports to Ray's GCS, else from its
    config file on this machine) and the nodes alive now; ``max`` is how many such nodes there can
    be (None: unbounded). ``autoscaling`` is None when an autoscaler runs whose types are unknown.
    """
    import ray

    types: list[dict] = []
    autoscaling: bool | None = False
    try:
        from ray._private.state import state

        config = state.get_cluster_config()  # autoscaler v2 reports its node groups here
    except Exception:  # a private API: its absence only means no node types to read from it
        config = None
    for group in getattr(config, "node_group_configs", None) or []:
        if group.max_count == 0:
            continue
        autoscaling = autoscaling or group.max_count == -1 or group.max_count > group.min_count
        types.append({
            "name": group.name,
            "resources": {k: float(v) for k, v in group.resources.items()},
            "max": None if group.max_count == -1 else int(group.max_count),
        })
    if not types:
        from ray.experimental.internal_kv import _internal_kv_get

        if _internal_kv_get("__autoscaling_status"):  # an autoscaler (v1) runs: find its node types
            gcs = ray.get_runtime_context().gcs_address
            found = _autoscaler_config_types(gcs)
            if found is None:
                autoscaling = None
            else:
                types += [t for t in found if t.pop("autoscaled") and t["max"] > 0]
                autoscaling = bool(types)
    for node in ray.nodes():
        if node.get("Alive"):
            types.append({"name": f"node {node.get('NodeManagerAddress', '?')}", "resources": dict(node["Resources"]),
                          "max": 1})
    return types, autoscaling


def check_cluster_fits(space: SearchSpace) -> None:
    """Fail in one line when no node the cluster has or can start holds one of the trial's workers, or all of
    them together cannot; otherwise trials queue until the autoscaler (or a freed node) serves them."""
    res = space.resources
    bundle = _worker_bundle(res)
    types, autoscaling = cluster_node_types()
    if autoscaling is None:
        return  # an autoscaler whose node types this driver cannot read: trials queue until a node fits

    def holds(node: dict) -> int:  # how many of one trial's workers a node of this type holds
        return min(math.floor(node["resources"].get(k, 0.0) / v + 1e-9) for k, v in bundle.items() if v > 0)

    fits = [t for t in types if holds(t) >= 1]
    described = ", ".join(sorted({f"{t['name']} {_describe(t['resources'])}" for t in types})) or "no nodes"
    want = f"{res.workers} worker(s) of {_describe(bundle)}"
    if not fits:
        raise ResourceError(
            f"one trial needs {want} but no node {'type ' if autoscaling else ''}of the Ray cluster holds one "
            f"({described}); lower resources in the search space or add a node type that fits"
        )
    if all(t["max"] is not None for t in fits) and sum(holds(t) * t["max"] for t in fits) < res.workers:
        raise ResourceError(
            f"one trial needs {want} but the Ray cluster can hold at most "
            f"{sum(holds(t) * t['max'] for t in fits)} ({described}); lower workers or raise max_workers"
        )


def _describe(resources: dict) -> str:
    keys = [k for k in ("CPU", "GPU") if k in resources] or ["CPU"]
    return "{" + ", ".join(f"{k}: {resources.get(k, 0.0):g}" for k in keys) + "}"


def max_concurrent(space: SearchSpace, local: bool) -> int | None:
    """Trials at once: the space's setting, else (local Ray) as many as the CPUs/GPUs hold; a cluster
    queues the rest itself (pending trials are what make the autoscaler add nodes)."""
    import ray

    res = space.resources
    if res.max_concurrent:
        return int(res.max_concurrent)
    if not local:
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


def compute_scheduler(space: SearchSpace, specs: list[TrialSpec] | None = None, sweep_dir: Path | None = None,
                      storage: TrialStorage | None = None, max_running: int | None = None) -> Any:
    """The compute axis's early stopping at its FLOP rungs, or None (other axes, or ``early_stop: false``).

    ``scheduler: frontier`` (the default): :class:`engine.sweep.frontier_scheduler.FrontierScheduler`, the policy
    that never cuts a size that can still reach the compute-optimal frontier (engine.sweep.frontier_policy), its
    state in ``sweep_dir/frontier_policy.json`` and, on resume, rebuilt with every rung the trials stored.

    ``scheduler: asha``: ASHA on the annealed ``val_loss`` (a compute trial reports only at rungs, each after a
    cooldown branch, engine.loop.cooldown), with the rung's budget (``rung_flops``, the main run's FLOPs at the
    branch) as the time attribute, which equals ASHA's milestones exactly. ASHA ranks sizes at equal FLOPs and
    so cuts the larger size that wins the large budgets; keep it for trials of one size (hyperparameters).
    """
    if space.axis != "compute" or not space.flop_budgets or not space.early_stop:
        return None
    from engine import metrics as M

    budgets = space.flop_budgets
    if space.scheduler == "asha":
        from engine.sweep.asha import RecordingASHA

        return RecordingASHA(
            time_attr=M.RUNG_FLOPS,
            metric=M.VAL_LOSS,
            mode="min",
            grace_period=budgets[0],
            max_t=budgets[-1],
            reduction_factor=space.reduction_factor,
        )
    from engine.sweep.frontier_policy import PolicyConfig
    from engine.sweep.frontier_scheduler import STATE_FILE, FrontierScheduler, arms_for, load_policy
    from engine.sweep.mlflow_callback import stored_metrics

    specs = specs if specs is not None else expand(space)
    configs = {s.trial_id: s.config.to_dict() for s in specs}
    config = PolicyConfig(budgets=list(budgets), **space.frontier)
    stored = {t: stored_metrics(storage, t) for t in configs} if storage is not None else {}
    state = (sweep_dir / STATE_FILE) if sweep_dir is not None else None
    policy = load_policy(state, arms_for(configs), config, stored) if state is not None else None
    if policy is None:
        from engine.sweep.frontier_policy import FrontierPolicy

        policy = FrontierPolicy(arms_for(configs), config)
    return FrontierScheduler(policy, state, max_running=max_running)


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
    from engine.sweep.tracking import SweepTracker

    sweep_dir = sweep_dir_for(options.name)
    if options.resume:
        space = load_saved_space(sweep_dir)
    elif (sweep_dir / SPACE_FILE).exists():
        raise _exists_error(options.name, sweep_dir)
    if options.address is None:
        check_local_resources(space)
    storage = resolve_storage(options, sweep_dir)
    uri = options.tracking_uri or paths.default_tracking_uri()
    tracker = SweepTracker(uri, options.name, space.axis)
    if not options.resume and tracker.child_runs():
        # reusing them would skip the new metrics as "already logged"
        raise ConfigError(
            f"MLflow {uri} already has runs of a sweep named {options.name!r} (its folder is gone); "
            "choose another --name or delete that MLflow experiment"
        )
    new_dir = not sweep_dir.exists()
    lock = DriverLock(sweep_dir, options.name)
    lock.acquire()  # a second driver of this sweep stops here with one line
    try:
        if not options.resume and (sweep_dir / SPACE_FILE).exists():  # another driver created it meanwhile
            raise _exists_error(options.name, sweep_dir)
        return _run_locked(space, options, space_text, tuner_factory, sweep_dir, storage, tracker)
    finally:
        lock.release()
        if new_dir and not (sweep_dir / SPACE_FILE).exists():
            shutil.rmtree(sweep_dir, ignore_errors=True)  # stopped before it began: leave nothing behind


def _share_data(specs: list[TrialSpec], sweep_dir: Path, tracker: Any, stream: TextIO) -> None:
    """What every trial shares (engine.sweep.shared_data): the dataset's normalization file, which each
    trial's config then names; the naive baselines and the budget rule, on the parent run."""
    from engine.sweep.shared_data import prepare_shared_data

    if not specs:
        return
    shared = prepare_shared_data([s.config for s in specs], sweep_dir, stream)
    for s in specs:
        s.config.data.normalization_file = shared.normalization_file
    tracker.log_parent(metrics=shared.baselines, params={"budget_rule": shared.budget_rule})
    tracker.dataset = shared.dataset  # each trial run gets it as an MLflow dataset input (engine.sweep.datasets)


def _exists_error(name: str, sweep_dir: Path) -> ConfigError:
    return ConfigError(
        f"sweep {name!r} already exists in {sweep_dir}; pass --resume to continue it or --name for a new one"
    )


def _run_locked(
    space: SearchSpace,
    options: SweepOptions,
    space_text: str | None,
    tuner_factory: Any,
    sweep_dir: Path,
    storage: TrialStorage,
    tracker: Any,
) -> SweepResult:
    from ray import tune

    from engine.loop.cooldown import planned_flops
    from engine.sweep.mlflow_callback import MlflowCallback
    from engine.sweep.progress import SweepLedger, TrialState
    from engine.sweep.trial import tune_trainable

    t_start = time.perf_counter()
    stream = options.stream or sys.stdout
    uri = tracker.uri
    local = options.address is None
    specs = expand(space)
    done = finished_trials(storage) if options.resume else {}
    if local and any(s.trial_id not in done for s in specs):
        prepare_data([s.config.data for s in specs if s.trial_id not in done])

    started_ray = init_ray(options.address, sweep_dir)
    interrupted = False
    parent_id = ""
    states: dict[str, TrialState] = {}
    skipped: list[str] = []
    try:
        if not local:  # before anything is written: the cluster can hold a trial and its nodes see the storage
            check_cluster_fits(space)
            checked = check_visible_from_workers(storage)
            print(f"storage {storage.uri()}: visible from {checked} worker node(s)", file=stream)
        storage.write_probe()  # each trial checks it on start (a node that joins later included)
        if not options.resume:
            (sweep_dir / STORAGE_FILE).write_text(json.dumps({"storage": storage.location}) + "\n")
            if space_text is not None:
                (sweep_dir / "space.yaml").write_text(space_text)
            (sweep_dir / SPACE_FILE).write_text(json.dumps(space.to_dict(), indent=2, sort_keys=True) + "\n")
        elif space_text is None and (sweep_dir / "space.yaml").exists():
            space_text = (sweep_dir / "space.yaml").read_text()

        tracker.close_leftovers()  # runs a killed driver left RUNNING; reopened below if their trial reruns
        parent_id = tracker.start_parent(space.to_dict(), space_text)
        _share_data(specs, sweep_dir, tracker, stream)  # one normalization, the baselines, the budget rule
        limit = max_concurrent(space, local)
        scheduler = compute_scheduler(space, specs, sweep_dir, storage, limit) if tuner_factory is None else None
        policy = getattr(scheduler, "policy", None)
        if options.resume and policy is not None:
            done = _mark_policy_stops(policy, storage, done, stream)
        if options.resume:
            done = reconcile(tracker, storage, done, stream)
        todo = [s for s in specs if s.trial_id not in done]
        skipped = [s.trial_id for s in specs if s.trial_id in done]
        if skipped:
            print(f"resume: {len(skipped)} trial(s) already finished, {len(todo)} to run", file=stream)
        for s in specs if tuner_factory is None else []:  # a searcher's trials are not known in advance
            states[s.trial_id] = TrialState(
                status=done.get(s.trial_id, "pending"), epochs=s.config.epochs, max_flops=s.config.max_flops,
                planned_flops=planned_flops(s.config),
            )
        _restore_ledger(states, storage)

        ledger = SweepLedger(options.name, states, scheduler, options.progress_interval_s, options.stream)
        callbacks = [ledger, MlflowCallback(tracker, ledger, storage), *options.callbacks]
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # Tune's own tables off: SweepLedger prints progress
        run_config = tune.RunConfig(
            name=f"run-{_next_attempt(storage)}",
            storage_path=storage.uri("ray"),
            callbacks=callbacks,
            failure_config=tune.FailureConfig(max_failures=options.max_failures),
            verbose=0,
        )
        trainable = tune.with_resources(tune_trainable, trial_resources(space))
        tune_kwargs = {
            # the frontier scheduler enforces the limit itself: Tune's limiter counts paused trials as live
            "max_concurrent_trials": None if policy is not None else limit,
            "reuse_actors": True,
            "trial_name_creator": _trial_name,
            "trial_dirname_creator": _trial_name,
        }
        # a queued DDP trial on an autoscaling cluster waits for nodes that take minutes to boot
        start_timeout_s = 60.0 if local else 1800.0
        if tuner_factory is not None:
            base = trial_spec_dict(specs[0], space, storage, start_timeout_s, options.system_metrics_interval_s)
            tuner = tuner_factory(trainable, base, tune_kwargs, run_config)
            # a searcher's own ASHA decides which trials stop early: the ledger must ask that one
            ledger.scheduler = getattr(tuner_factory, "scheduler", None)
        elif todo:
            grid = [trial_spec_dict(s, space, storage, start_timeout_s, options.system_metrics_interval_s)
                    for s in todo]
            param_space = {"trial": tune.grid_search(grid)}
            if scheduler is not None:
                tune_kwargs["scheduler"] = scheduler
            tuner = tune.Tuner(trainable, param_space=param_space, tune_config=tune.TuneConfig(**tune_kwargs),
                               run_config=run_config)
        else:
            tuner = None
        if tuner is not None:
            results = tuner.fit()
            interrupted = _was_interrupted(results, states)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if parent_id:
            leftovers = tracker.close_leftovers()
            if leftovers:
                interrupted = True
        if started_ray:
            import ray

            ray.shutdown()

    result = _summarize(options.name, sweep_dir, uri, parent_id, states, skipped, t_start, interrupted)
    result.storage = storage.location
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
            "trials_diverged": sum(1 for t in result.trials.values() if t["status"] == "diverged"),
        },
    )
    if options.register and parent_id:
        _register(tracker, options.name, stream)
    tracker.end_parent("KILLED" if interrupted else "FINISHED")
    (sweep_dir / SUMMARY_FILE).write_text(json.dumps(result.to_dict(), indent=2, sort_keys=True, default=str) + "\n")
    return result


def _mark_policy_stops(policy: Any, storage: TrialStorage, done: dict[str, str], stream: TextIO) -> dict[str, str]:
    """Resume: trials the frontier policy stopped whose completion marker the driver did not write before it
    died get it now (status ``stopped``), so they are not trained again; reconcile then closes their runs."""
    from engine.sweep.mlflow_callback import stored_metrics, write_marker
    from engine.sweep.progress import spent_flops

    done = dict(done)
    marked = []
    for trial_id in sorted(policy.stops):
        if trial_id in done:
            continue
        rows = stored_metrics(storage, trial_id)
        write_marker(storage, trial_id, "stopped", spent_flops(rows[-1]) if rows else 0.0)
        done[trial_id] = "stopped"
        marked.append(trial_id)
    if marked:
        print(f"resume: {len(marked)} trial(s) the frontier policy had stopped are marked stopped: "
              f"{', '.join(marked[:5])}{' …' if len(marked) > 5 else ''}", file=stream)
    return done


def _register(tracker: Any, name: str, stream: TextIO) -> None:
    """Register the best finished trial of each model size (engine.sweep.registry); say what, on stdout and
    as parent-run tags. A store without a Model Registry (a file store) is a warning, not a failed sweep."""
    from mlflow.exceptions import MlflowException

    from engine.sweep.registry import register_best

    try:
        versions = register_best(tracker.uri, name, tracker.experiment_id)
    except MlflowException as exc:
        print(f"registry: nothing registered ({str(exc).strip().splitlines()[0][:200]})", file=stream)
        return
    if not versions:
        print("registry: no finished trial with artifacts to register", file=stream)
        return
    listed = ", ".join(f"{v.size} → version {v.version} (val_loss {v.val_loss:.4g})" for v in versions)
    print(f"registry: model {versions[0].name!r}: {listed}; load one with "
          f"EngineCalculator('models:/{versions[0].name}/{versions[-1].version}')", file=stream)
    tracker.log_parent(tags={
        "engine.registered_model": versions[0].name,
        "engine.registered_versions": ",".join(f"{v.size}:{v.version}" for v in versions),
    })


def reconcile(tracker: Any, storage: TrialStorage, done: dict[str, str], stream: TextIO) -> dict[str, str]:
    """Make completion markers and MLflow agree before a resume (returns the trials finished now).

    - a marker whose run is not FINISHED (or missing: a store reset, or a sweep from before markers
      followed the run's close): the run is completed from the stored metrics and artifacts, then closed;
    - a FINISHED run of a completed or stopped trial without a marker (the driver died between closing
      the run and writing the marker): the marker is written, the trial is not trained again.
    """
    from engine.sweep.mlflow_callback import backfill, close_trial, stored_metrics, write_marker
    from engine.sweep.progress import spent_flops
    from engine.sweep.tracking import trial_params

    done = dict(done)
    runs = {r.data.tags.get("engine.trial_id"): r for r in tracker.child_runs()}
    fixed = []
    for trial_id, status in sorted(done.items()):
        run = runs.get(trial_id)
        if run is not None and run.info.status == "FINISHED":
            continue
        text = storage.read_text(f"trials/{trial_id}/config.json")
        config = json.loads(text) if text else {}
        tracker.start_trial(trial_id, trial_params(trial_id, config), storage.uri(f"trials/{trial_id}/checkpoint.pt"))
        backfill(tracker, storage, trial_id)
        rows = stored_metrics(storage, trial_id)
        close_trial(tracker, storage, trial_id, "FINISHED", status, spent_flops(rows[-1]) if rows else 0.0)
        fixed.append(trial_id)
    for trial_id, run in sorted(runs.items(), key=lambda kv: str(kv[0])):
        status = run.data.tags.get("engine.status")
        finished = status in ("completed", "stopped", "diverged")
        if trial_id and trial_id not in done and run.info.status == "FINISHED" and finished:
            rows = stored_metrics(storage, trial_id)
            write_marker(storage, trial_id, status, spent_flops(rows[-1]) if rows else 0.0)
            done[trial_id] = status
            fixed.append(trial_id)
    if fixed:
        print(f"resume: reconciled {len(fixed)} trial(s) between completion markers and MLflow: "
              f"{', '.join(map(str, fixed[:5]))}{' …' if len(fixed) > 5 else ''}", file=stream)
    return done


def _trial_name(trial: Any) -> str:
    from engine.sweep.trial import resolve_spec

    return resolve_spec(trial.config)["trial_id"]


def _next_attempt(storage: TrialStorage) -> int:
    return sum(1 for name in storage.list_dirs("ray") if name.startswith("run-")) + 1


def _was_interrupted(grid: Any, states: dict) -> bool:
    """A trial neither finished nor failed (Tune stopped on SIGINT) means the sweep is incomplete."""
    return any(st.status in ("pending", "running") for st in states.values())


def _restore_ledger(states: dict, storage: TrialStorage) -> None:
    """FLOPs and wall time of trials that ran before a resume (finished or not), from their stored metrics.jsonl."""
    from engine.sweep.mlflow_callback import stored_metrics
    from engine.sweep.progress import spent_flops

    for trial_id in states:
        rows = stored_metrics(storage, trial_id)
        st = states[trial_id]
        for row in rows:
            if int(row.get("epoch", 0)) == 1:
                st.flops_per_epoch = spent_flops(row)
        if rows:
            st.flops_cum = spent_flops(rows[-1])
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
