"""Typed configs for one trial, loaded from dicts/YAML with unknown keys rejected.

A trial is (data subset, model, optimizer, schedule). The sweep builds one
:class:`TrialConfig` per Tune trial; ``engine.train`` builds one from the command line.
The resolved config is saved as ``config.json`` beside every trial's results.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path

from engine.errors import ConfigError

# data files data.lazy cannot read (it reads .aselmdb files or folders of them)
_NOT_LMDB_SUFFIXES = (".extxyz", ".xyz", ".json", ".bz2", ".gz", ".db", ".traj", ".xml", ".cif", ".vasp", ".out")


@dataclass
class DataConfig:
    """Where the structures come from and which subset trains.

    ``path=None`` uses the embedded EMT dataset of ``emt_size`` structures generated from
    ``emt_seed``. Validation and test sets are fixed by a hash of each structure's uid
    (``val_fraction``/``test_fraction`` of the pool); ``train_size`` takes a nested prefix of
    the rest (``None``/0 = all of it).
    """

    path: str | None = None
    # reader of path's files when their names mislead: an ASE format (extxyz, vasp-out, ...), aselmdb, db, json
    format: str | None = None
    emt_size: int = 3000
    emt_seed: int = 0
    # OMat24-shaped EMT subsets (engine.data.emt_subsets), e.g. [rattled-1000, aimd-3000, rattled-relax];
    # empty = the default near-equilibrium alloy dataset
    emt_subsets: list[str] = field(default_factory=list)
    train_size: int | None = None
    val_fraction: float = 0.1
    test_fraction: float = 0.05
    max_val: int | None = 500  # cap on validation structures evaluated per epoch
    # cap on test structures scored once at a trial's end (None = the whole test split). The test split is 5 %
    # of the pool: ~5·10⁶ structures on OMat24, hours per trial. 10⁴ puts the standard error of a test MAE near
    # 1 % of it (errors spread about as wide as their mean: σ/√n), finer than the gaps between sizes a law fits,
    # in a few minutes of one GPU for eqV2-M. Like max_val, the structures with the smallest holdout hash: the
    # same set for every trial of a dataset (engine.data.splits)
    max_test: int | None = 10000
    skip_bad_records: bool = False
    cache_dir: str | None = None  # default: $ENGINE_CACHE or ./cache
    # split groups (engine.data.splits): key of an ASE row's key_value_pairs/data/info naming each
    # structure's trajectory or parent; MPtrj (mp_id) and Alexandria (entry id) need none; None = per structure
    group_key: str | None = None
    # normalization (engine.data.normalize) is fitted once per dataset on a fixed reference subset: the
    # first ``normalization_size`` structures of the pool's seed-0 order (None/0 = the whole pool)
    normalization_size: int | None = 10000
    normalization_file: str | None = None  # a saved fit to use (a sweep's normalization.json); None = fit
    # streaming (engine.data.lazy): read .aselmdb rows on demand instead of loading every record; same splits,
    # batches and graphs as in memory. num_workers: DataLoader worker processes that read rows, build neighbor
    # lists and collate (0 = in the training process); prefetch_factor: batches each worker keeps ready
    lazy: bool = False
    num_workers: int = 0
    prefetch_factor: int = 2

    def __post_init__(self) -> None:
        for key in ("max_val", "max_test"):
            cap = getattr(self, key)
            if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 1):
                raise ConfigError(f"data.{key} must be a positive number of structures or null (no cap), got {cap!r}")
        if self.num_workers < 0 or self.prefetch_factor < 1:
            raise ConfigError("data.num_workers must be ≥ 0 and data.prefetch_factor ≥ 1; fix --num-workers")
        if self.num_workers > 0 and not self.lazy:
            raise ConfigError("data.num_workers needs data.lazy (--lazy) with an .aselmdb source; set both or neither")
        if not self.lazy:
            return
        if self.path is None:
            raise ConfigError(
                "data.lazy reads .aselmdb files, not the embedded EMT dataset; set data.path (--data) to an .aselmdb "
                "file or folder (python -m engine.data.convert makes them from MPtrj/Alexandria JSON) or drop --lazy"
            )
        p = Path(self.path).expanduser()
        named_other = p.suffix.lower() in _NOT_LMDB_SUFFIXES or (p.is_file() and p.suffix != ".aselmdb")
        if self.format not in (None, "aselmdb") or (self.format is None and named_other):
            raise ConfigError(
                f"data.lazy reads only .aselmdb files, not {self.path}"
                f"{f' (format {self.format})' if self.format else ''}; convert it (python -m engine.data.convert, "
                "or ase.db) or drop --lazy"
            )


@dataclass
class LossWeights:
    """OMat24 recipe: 2.5·E/atom MAE + 20·force L2-MAE + 5·iso stress MAE + 5·aniso stress MAE."""

    energy: float = 2.5
    forces: float = 20.0
    stress_iso: float = 5.0
    stress_aniso: float = 5.0


@dataclass
class OptimConfig:
    """AdamW with cosine decay after linear warmup (seed study / fairchem defaults)."""

    lr: float = 1e-3
    weight_decay: float = 1e-3
    warmup_fraction: float = 0.01
    warmup_factor: float = 0.2
    min_lr_factor: float = 0.01
    grad_clip: float = 1.0
    ema_decay: float | None = None  # e.g. 0.999; None = no EMA
    schedule: str = "cosine"  # cosine | wsd (warmup–stable–decay; engine.loop.schedule)
    cooldown_fraction: float = 0.2  # wsd: share of the steps spent decaying (Hägele et al. 2024: 0.1–0.2)
    cooldown_shape: str = "sqrt"  # wsd cooldown: linear | sqrt (1 − √t)
    # compute axis: a rung's cooldown branch takes at least this many steps (never more than the run before it),
    # so early rungs of every model size are annealed over a comparable number of updates (engine.loop.cooldown)
    cooldown_min_steps: int = 10

    def __post_init__(self) -> None:
        if self.schedule not in ("cosine", "wsd"):
            raise ConfigError(f"optim.schedule must be cosine or wsd, got {self.schedule!r}; fix optim.schedule")
        if self.cooldown_shape not in ("linear", "sqrt"):
            raise ConfigError(f"optim.cooldown_shape must be linear or sqrt, got {self.cooldown_shape!r}; fix it")
        if not 0.0 < self.cooldown_fraction < 1.0:
            raise ConfigError(
                f"optim.cooldown_fraction must be in (0, 1) (typically 0.1–0.2), got {self.cooldown_fraction}; fix it"
            )
        if self.cooldown_min_steps < 0:
            raise ConfigError(
                f"optim.cooldown_min_steps must be ≥ 0 optimizer steps (default 10), got {self.cooldown_min_steps}"
            )


@dataclass
class ProbeConfig:
    """Physical probes after training (engine.loop.probes): NVE drift/stability and a relaxation.

    Off unless ``enabled``; ``structures`` validation cells, ``nve_steps`` × ``dt_fs`` fs from
    ``temperature_k`` K; relaxation by FIRE to ``fmax`` eV/Å in at most ``relax_steps`` (0 = skip).
    """

    enabled: bool = False
    structures: int = 4
    nve_steps: int = 200
    dt_fs: float = 1.0
    temperature_k: float = 300.0
    max_temperature_factor: float = 5.0
    min_distance_a: float = 0.5
    relax_steps: int = 100
    fmax: float = 0.05


@dataclass
class EarlyStopConfig:
    """Stop when ``val_loss`` has not improved by more than ``min_delta`` for ``patience`` epochs."""

    patience: int = 5  # epochs
    min_delta: float = 0.0  # improvement below this (absolute, in val_loss units) does not count


@dataclass
class BudgetConfig:
    """How long a trial trains (the data axis must not confound D with optimizer steps).

    Neither set: ``epochs`` epochs (steps then grow with the training-set size). ``steps``: the same
    number of optimizer steps for every training-set size (epochs derived per trial; the LR schedule
    spans the steps). ``early_stop``: train up to ``epochs`` epochs until the validation loss stops
    improving, then restore the best weights (EMA included) and end with them.
    """

    steps: int | None = None
    early_stop: EarlyStopConfig | None = None

    def __post_init__(self) -> None:
        if self.steps is not None and self.early_stop is not None:
            raise ConfigError("budget: give either steps or early_stop, not both; e.g. budget: {steps: 600}")
        if self.steps is not None and self.steps < 1:
            raise ConfigError(f"budget.steps must be ≥ 1 optimizer steps, got {self.steps}; fix budget.steps")
        if self.early_stop is not None and self.early_stop.patience < 1:
            raise ConfigError(
                f"budget.early_stop.patience must be ≥ 1 epoch, got {self.early_stop.patience}; fix it"
            )
        if self.early_stop is not None and self.early_stop.min_delta < 0:
            raise ConfigError("budget.early_stop.min_delta must be ≥ 0; fix it")

    @property
    def rule(self) -> str:
        """One line for MLflow (``budget_rule``) and the report."""
        if self.steps is not None:
            return f"steps={self.steps}"
        if self.early_stop is not None:
            return f"early_stop(patience={self.early_stop.patience}, min_delta={self.early_stop.min_delta:g})"
        return "epochs"


@dataclass
class CheckpointConfig:
    """When a trial saves inside an epoch, besides every epoch's end and every rung (``engine.loop.preemption``).

    ``every_steps`` optimizer steps and/or ``every_minutes`` of wall time since the last save (None: off). On a
    GPU node one OMat24 epoch is most of a run, so the default saves every 30 minutes (about 1 % of a run's time
    for a checkpoint of a few seconds) and has no step cadence. A SIGTERM saves at the next step boundary too.
    The trial keeps one file, ``checkpoint.pt``, replaced atomically at every save.
    """

    every_steps: int | None = None
    every_minutes: float | None = 30.0

    def __post_init__(self) -> None:
        if self.every_steps is not None and self.every_steps < 1:
            raise ConfigError(f"checkpoint.every_steps must be ≥ 1 optimizer steps or null, got {self.every_steps}")
        if self.every_minutes is not None and not self.every_minutes > 0:
            raise ConfigError(f"checkpoint.every_minutes must be > 0 or null, got {self.every_minutes}")


@dataclass
class TrialConfig:
    """Everything one training run needs; the unit the sweep schedules."""

    model: str = "transformer"
    preset: str | None = None
    model_config: dict = field(default_factory=dict)  # overrides on top of the preset
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossWeights = field(default_factory=LossWeights)
    probes: ProbeConfig = field(default_factory=ProbeConfig)  # physical checks after training (opt-in)
    epochs: int = 10  # with budget.early_stop: the most epochs; with budget.steps: ignored (derived)
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)  # step/time cadence inside epochs
    batch_size: int = 16  # structures per batch (global, across DDP ranks)
    max_atoms_per_batch: int = 1024  # atom budget per batch (global)
    # mixed precision (engine.loop.precision): false | bf16 | fp16 (+ GradScaler) | true = bf16 where the
    # device supports it (CPU, Ampere+ GPUs), else fp16
    amp: bool | str = False
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    count_flops: bool = True  # exact FLOPs of every step with torch.utils.flop_counter
    max_flops: float | None = None  # stop once cumulative FLOPs pass this budget
    # compute axis: main-run FLOPs at which an annealed cooldown branch is scored and reported
    # (engine.loop.cooldown); the last one ends the trial with its cooldown. Needs optim.schedule wsd.
    rung_flops: list | None = None
    threads: int | None = None  # torch intra-op threads; None = leave as is

    def __post_init__(self) -> None:
        if isinstance(self.amp, str):
            mode = self.amp.strip().lower()
            if mode not in AMP_MODES:
                raise ConfigError(f"amp must be one of {', '.join(AMP_MODES)} (or true/false), got {self.amp!r}")
            self.amp = {"true": True, "false": False}.get(mode, mode)

    def to_dict(self) -> dict:
        return asdict(self)


AMP_MODES = ("false", "true", "bf16", "fp16")  # TrialConfig.amp as text


# ---------------------------------------------------------------------------------------
# dict → dataclass with validation


def check_type(value: object, annotation: object, where: str) -> object:
    """Coerce/validate one value against a (simple) type annotation."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(annotation)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return check_type(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{where}: bad value {value!r}")
    if dataclasses.is_dataclass(annotation):
        if isinstance(value, annotation):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a mapping, got {type(value).__name__}")
        return from_dict(annotation, value, where)
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        return float(value)
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{where} must be an integer, got {value!r}")
        return value
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}")
        return value
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, got {value!r}")
        return value
    if origin is dict or annotation is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a mapping, got {type(value).__name__}")
        return dict(value)
    if origin is list or annotation is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {type(value).__name__}")
        return list(value)
    return value


def from_dict(cls: type, values: dict, where: str = "config") -> object:
    """Build dataclass ``cls`` from ``values``; unknown keys and wrong types raise :class:`ConfigError`."""
    if not isinstance(values, dict):
        raise ConfigError(f"{where} must be a mapping, got {type(values).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(f"unknown key(s) {', '.join(unknown)} in {where}; valid keys: {', '.join(sorted(names))}")
    kwargs = {k: check_type(v, hints[k], f"{where}.{k}") for k, v in values.items()}
    return cls(**kwargs)


def trial_config_from_dict(values: dict) -> TrialConfig:
    cfg = from_dict(TrialConfig, values, "trial config")
    assert isinstance(cfg, TrialConfig)
    return cfg


def load_trial_config(path: str | Path) -> TrialConfig:
    """Read a trial config from JSON or YAML (``yaml.safe_load``)."""
    import json

    import yaml

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {p} not found; check the path")
    text = p.read_text()
    try:
        values = json.loads(text) if p.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot parse {p}: {exc}; fix the syntax") from exc
    return trial_config_from_dict(values or {})


def check_ranges(config: TrialConfig, where: str | None = None) -> None:
    """Ranges a type check cannot see, one line each.

    ``where=None`` (``engine.train``): the line names the command-line flag that sets the value. A search
    space passes ``where`` (its file and grid point): the line names the space's key instead, so a sweep
    stops on exactly the checks a single run does, before anything starts (``engine.sweep.spaces``).
    """
    ema = config.optim.ema_decay
    checks = [  # (ok, what is wrong, engine.train flag, key of a space's ``fixed``)
        (config.epochs >= 1, f"epochs must be ≥ 1, got {config.epochs}", "--epochs", "epochs"),
        (config.batch_size >= 1, f"batch_size must be ≥ 1, got {config.batch_size}", "--batch-size", "batch_size"),
        (
            config.max_atoms_per_batch >= 1,
            f"max_atoms_per_batch must be ≥ 1, got {config.max_atoms_per_batch}",
            "--max-atoms-per-batch",
            "max_atoms_per_batch",
        ),
        (config.optim.lr > 0, f"lr must be > 0, got {config.optim.lr}", "--lr", "optim.lr"),
        (
            config.data.train_size is None or config.data.train_size >= 0,
            f"train_size must be ≥ 0, got {config.data.train_size}",
            "--train-size",
            "train_sizes",
        ),
        (ema is None or 0 < ema < 1, f"ema_decay must be in (0, 1), got {ema}", "--ema-decay", "optim.ema_decay"),
    ]
    for ok, message, flag, key in checks:
        if not ok:
            if where is None:
                raise ConfigError(f"{message}; fix {flag}")
            home = key if key == "train_sizes" else f"fixed.{key}"
            raise ConfigError(f"{where}: {message}; fix {home}")
