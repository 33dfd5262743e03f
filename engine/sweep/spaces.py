"""Search spaces: a YAML file → a validated :class:`SearchSpace` → one :class:`TrialSpec` per Tune trial.

A space names one *axis* of a scaling study and the grid along it:

- ``params``:  the model size ladder (``sizes``: preset names of ``model``), one training-set size;
- ``data``:    the training-set sizes (``train_sizes``), one model size;
- ``compute``: a size ladder trained on FLOP budgets (``flop_budgets``: the rungs, increasing, the last one
               the full budget per trial), stopped early by ``scheduler``: ``frontier`` (default; the policy of
               engine.sweep.frontier_policy, which keeps the compute-optimal frontier) or ``asha`` (geometric
               budgets; for hyperparameter search, not for a frontier across sizes);
- ``hpo``:     learning rate (log-uniform) and batch size for one size (``search``), sampled by Optuna.

``fixed`` is a :class:`~engine.config.TrialConfig`-shaped mapping shared by every trial and
``resources`` says what one trial gets (DDP workers, CPUs and GPUs per worker). Every key is
checked on load; a bad one raises a one-line :class:`~engine.errors.ConfigError`.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path

from engine.config import TrialConfig, check_ranges, check_type, from_dict, trial_config_from_dict
from engine.errors import ConfigError

AXES = ("params", "data", "compute", "hpo")
SCHEDULERS = ("frontier", "asha")
SPACES_DIR = Path(__file__).resolve().parents[2] / "search_spaces"
# keys of ``fixed`` that the grid itself sets: say where they belong instead
_GRID_KEYS = {"model": "model", "preset": "sizes", "seed": "seeds"}


@dataclass
class Resources:
    """Per-trial resources. ``workers`` > 1 runs the trial as a Ray Train DDP job."""

    workers: int = 1
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    max_concurrent: int | None = None  # trials at once; None = as many as the cluster's CPUs/GPUs hold


@dataclass
class HpoSearch:
    """Optuna + ASHA over the learning rate (log-uniform, [lr_min, lr_max]) and the batch size."""

    lr_min: float = 1e-4
    lr_max: float = 1e-2
    batch_sizes: list = field(default_factory=lambda: [8, 16, 32])
    num_samples: int = 8
    grace_epochs: int = 1  # ASHA: first rung, in epochs
    reduction_factor: float = 2.0


@dataclass
class SearchSpace:
    """One validated search space (see the module docstring)."""

    axis: str
    model: str = "transformer"
    sizes: list = field(default_factory=list)  # preset names of ``model``
    train_sizes: list = field(default_factory=lambda: [None])  # structures; None = the whole training pool
    seeds: list = field(default_factory=lambda: [0])
    fixed: dict = field(default_factory=dict)  # TrialConfig-shaped
    resources: Resources = field(default_factory=Resources)
    flop_budgets: list | None = None  # compute: rungs in FLOPs (increasing), last = per-trial budget
    early_stop: bool = True  # compute: the scheduler stops trials at rungs; False = the full grid (the reference)
    scheduler: str = "frontier"  # compute: frontier (keeps the frontier) | asha (geometric budgets)
    frontier: dict = field(default_factory=dict)  # compute: knobs of engine.sweep.frontier_policy.PolicyConfig
    search: HpoSearch | None = None  # hpo only
    # preset → {"lr", "batch_size", "tuned_by"}: each size's tuned values (engine.scale --lr-from a per-size tuning)
    per_size: dict = field(default_factory=dict)
    source: str = ""  # file it came from (for messages and the MLflow artifact)

    # -- derived -------------------------------------------------------------------
    @property
    def reduction_factor(self) -> float:
        """ASHA reduction factor implied by the geometric ``flop_budgets``."""
        b = self.flop_budgets or []
        return b[1] / b[0] if len(b) > 1 else 2.0

    def trial_config(self, preset: str | None, train_size: int | None, seed: int) -> TrialConfig:
        """The full TrialConfig of one grid point: ``fixed`` plus the point's model, size, data and seed."""
        values = copy.deepcopy(self.fixed)
        values["model"] = self.model
        values["preset"] = preset
        values["seed"] = int(seed)
        values.setdefault("data", {})["train_size"] = train_size
        tuned = self.per_size.get(preset) or {}
        if "lr" in tuned:
            values.setdefault("optim", {})["lr"] = float(tuned["lr"])
        if "batch_size" in tuned:
            values["batch_size"] = int(tuned["batch_size"])
        if self.axis == "compute" and self.flop_budgets:
            values["max_flops"] = float(self.flop_budgets[-1])
            # compare annealed models only: WSD, a cooldown branch scored at every rung (engine.loop.cooldown)
            values["rung_flops"] = [float(b) for b in self.flop_budgets]
            values.setdefault("optim", {}).setdefault("schedule", "wsd")
        return trial_config_from_dict(values)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class TrialSpec:
    """One grid point: a deterministic id (folder and MLflow identity) and its resolved config."""

    trial_id: str
    config: TrialConfig

    def to_dict(self) -> dict:
        return {"trial_id": self.trial_id, "config": self.config.to_dict()}


def trial_id_for(model: str, preset: str | None, train_size: int | None, seed: int) -> str:
    """``<model>-<preset>-n<train_size|all>-s<seed>``: stable across reruns, so resume finds its trials."""
    n = "all" if not train_size else str(int(train_size))
    return f"{model}-{preset or 'default'}-n{n}-s{int(seed)}"


def expand(space: SearchSpace) -> list[TrialSpec]:
    """The grid (sizes × train sizes × seeds) as trial specs, small models first."""
    sizes = space.sizes or [None]
    specs = []
    for preset in sizes:
        for n in space.train_sizes:
            for seed in space.seeds:
                specs.append(
                    TrialSpec(trial_id_for(space.model, preset, n, seed), space.trial_config(preset, n, seed))
                )
    return specs


# ---------------------------------------------------------------------------------------
# loading and validation


def _nonempty_list(values: dict, key: str, where: str) -> list:
    value = values.get(key)
    if value is None:
        raise ConfigError(f"{where}: missing '{key}'; list at least one value")
    if not isinstance(value, list):
        raise ConfigError(f"{where}: '{key}' must be a list, got {type(value).__name__}")
    if not value:
        raise ConfigError(f"{where}: '{key}' is an empty grid; list at least one value")
    if len(set(map(str, value))) != len(value):
        raise ConfigError(f"{where}: '{key}' has duplicate values {value}; list each once")
    return value


def _check_sizes(model: str, sizes: list, where: str) -> None:
    import models

    table = models.presets(model)
    for s in sizes:
        if not isinstance(s, str) or s not in table:
            raise ConfigError(
                f"{where}: size {s!r} is not a preset of model {model!r}; choose from: {', '.join(table) or '(none)'}"
            )


def _check_ints(values: list, key: str, where: str, allow_none: bool = False) -> list:
    out = []
    for v in values:
        if v is None and allow_none:
            out.append(None)
            continue
        if isinstance(v, bool) or not isinstance(v, int) or v < (1 if key == "train_sizes" else 0):
            kind = "positive" if key == "train_sizes" else "non-negative"
            raise ConfigError(f"{where}: '{key}' entries must be {kind} integers, got {v!r}")
        out.append(int(v))
    return out


def _check_budgets(values: list, where: str, geometric: bool) -> list[float]:
    budgets = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            raise ConfigError(f"{where}: 'flop_budgets' entries must be positive numbers (FLOPs), got {v!r}")
        budgets.append(float(v))
    if len(budgets) < 2:
        raise ConfigError(f"{where}: 'flop_budgets' needs at least two rungs (e.g. [1e9, 3e9, 9e9])")
    ratios = [b / a for a, b in itertools.pairwise(budgets)]
    if any(r <= 1.0 for r in ratios):
        raise ConfigError(f"{where}: 'flop_budgets' must increase, got {values}")
    if geometric and max(ratios) / min(ratios) > 1.01:
        raise ConfigError(
            f"{where}: 'flop_budgets' must be geometric under scheduler asha (its rungs grow by a constant factor), "
            "got ratios "
            + ", ".join(f"{r:.3g}" for r in ratios)
        )
    return budgets


def space_from_dict(values: dict, source: str = "search space") -> SearchSpace:
    """Validate a parsed YAML mapping into a :class:`SearchSpace`."""
    where = source
    if not isinstance(values, dict):
        raise ConfigError(f"{where} must be a mapping, got {type(values).__name__}")
    names = {f.name for f in dataclasses.fields(SearchSpace)} - {"source"}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(f"unknown key(s) {', '.join(unknown)} in {where}; valid keys: {', '.join(sorted(names))}")
    axis = values.get("axis")
    if axis not in AXES:
        raise ConfigError(f"{where}: 'axis' must be one of {', '.join(AXES)}, got {axis!r}")
    model = values.get("model", "transformer")
    if not isinstance(model, str):
        raise ConfigError(f"{where}: 'model' must be a string, got {model!r}")
    import models

    if model not in models.names():
        raise ConfigError(f"{where}: unknown model {model!r}; choose one of: {', '.join(models.names())}")

    sizes = _nonempty_list(values, "sizes", where)
    _check_sizes(model, sizes, where)
    train_sizes = _check_ints(_nonempty_list(values, "train_sizes", where), "train_sizes", where, allow_none=True)
    seeds = _check_ints(_nonempty_list(values, "seeds", where), "seeds", where)

    fixed = values.get("fixed") or {}
    if not isinstance(fixed, dict):
        raise ConfigError(f"{where}: 'fixed' must be a mapping of TrialConfig keys, got {type(fixed).__name__}")
    for key, home in _GRID_KEYS.items():
        if key in fixed:
            raise ConfigError(f"{where}: set '{key}' with the top-level '{home}' key, not inside 'fixed'")
    if "train_size" in (fixed.get("data") or {}):
        raise ConfigError(f"{where}: set the training-set size with the top-level 'train_sizes', not fixed.data")
    # validate now (unknown keys, types) so a typo fails before Ray starts
    from_dict(TrialConfig, copy.deepcopy(fixed), f"{where}: fixed")

    resources = from_dict(Resources, values.get("resources") or {}, f"{where}: resources")
    assert isinstance(resources, Resources)
    if resources.workers < 1 or resources.cpus_per_worker <= 0 or resources.gpus_per_worker < 0:
        raise ConfigError(f"{where}: resources need workers ≥ 1, cpus_per_worker > 0 and gpus_per_worker ≥ 0")

    scheduler = values.get("scheduler", "frontier")
    if scheduler not in SCHEDULERS:
        raise ConfigError(f"{where}: 'scheduler' is one of {', '.join(SCHEDULERS)}, got {scheduler!r}")
    frontier = _check_frontier(values.get("frontier") or {}, where)
    budgets = None
    if axis == "compute":
        budgets = _check_budgets(_nonempty_list(values, "flop_budgets", where), where, geometric=scheduler == "asha")
    else:  # a saved space (space.json) carries the defaults of every key: only a set value is an error
        for key, default in (("flop_budgets", None), ("scheduler", "frontier"), ("frontier", {})):
            if values.get(key) is not None and values.get(key) != default:
                raise ConfigError(f"{where}: '{key}' only applies to axis compute; remove it")
    early_stop = values.get("early_stop", True)
    if not isinstance(early_stop, bool) or (axis != "compute" and not early_stop):
        raise ConfigError(f"{where}: 'early_stop' is true or false and only applies to axis compute; fix it")
    if axis == "compute" and (fixed.get("optim") or {}).get("schedule", "wsd") != "wsd":
        raise ConfigError(f"{where}: the compute axis compares annealed models and needs fixed.optim.schedule: wsd")

    search = None
    if axis == "hpo":
        search = from_dict(HpoSearch, values.get("search") or {}, f"{where}: search")
        assert isinstance(search, HpoSearch)
        if not 0 < search.lr_min < search.lr_max:
            raise ConfigError(f"{where}: search needs 0 < lr_min < lr_max, got {search.lr_min}, {search.lr_max}")
        bs = check_type(search.batch_sizes, list, f"{where}: search.batch_sizes")
        if not bs or any(isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in bs):
            raise ConfigError(f"{where}: search.batch_sizes must be a non-empty list of positive integers")
        if search.num_samples < 1 or search.grace_epochs < 1 or search.reduction_factor <= 1:
            raise ConfigError(f"{where}: search needs num_samples ≥ 1, grace_epochs ≥ 1, reduction_factor > 1")
        if len(sizes) != 1 or len(train_sizes) != 1:
            raise ConfigError(f"{where}: an hpo space tunes one model size and one train size; list one of each")
    elif values.get("search") is not None:
        raise ConfigError(f"{where}: 'search' only applies to axis hpo; remove it")

    per_size = _check_per_size(values.get("per_size") or {}, sizes, where)
    space = SearchSpace(
        axis=axis,
        model=model,
        sizes=list(sizes),
        train_sizes=train_sizes,
        seeds=seeds,
        fixed=copy.deepcopy(fixed),
        resources=resources,
        flop_budgets=budgets,
        early_stop=early_stop,
        scheduler=scheduler,
        frontier=frontier,
        search=search,
        per_size=per_size,
        source=source,
    )
    _check_trials(space, where)
    return space


def _check_trials(space: SearchSpace, where: str) -> None:
    """Every grid point passes the checks ``engine.train`` makes (ranges, model config), so a space with
    ``epochs: 0`` or a negative lr stops with one line before Ray, the sweep folder or MLflow see it."""
    import models

    for spec in expand(space):
        at = f"{where}: {spec.trial_id}"
        check_ranges(spec.config, where=at)
        try:
            models.config_from_dict(spec.config.model, spec.config.model_config, preset=spec.config.preset)
        except ConfigError as exc:
            raise ConfigError(f"{at}: {exc}; fix fixed.model_config") from exc


def _check_frontier(values: dict, where: str) -> dict:
    """Validate ``frontier``: knobs of :class:`engine.sweep.frontier_policy.PolicyConfig` (budgets excluded)."""
    from engine.sweep.frontier_policy import PolicyConfig

    if not isinstance(values, dict):
        raise ConfigError(f"{where}: 'frontier' must map policy knobs to numbers")
    knobs = {f.name for f in dataclasses.fields(PolicyConfig)} - {"budgets"}
    bad = sorted(set(values) - knobs)
    if bad:
        raise ConfigError(f"{where}: unknown frontier knob(s) {', '.join(bad)}; valid: {', '.join(sorted(knobs))}")
    for k, v in values.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise ConfigError(f"{where}: frontier.{k} must be a non-negative number, got {v!r}")
    try:
        PolicyConfig(budgets=[1.0, 2.0], **values)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: frontier: {exc}") from exc
    return dict(values)


def _check_per_size(per_size: dict, sizes: list, where: str) -> dict:
    """Validate ``per_size``: keys among ``sizes``, values with a positive lr and/or batch size."""
    if not isinstance(per_size, dict):
        raise ConfigError(f"{where}: 'per_size' must map preset names to {{lr, batch_size}}")
    out = {}
    for preset, entry in per_size.items():
        if preset not in sizes:
            raise ConfigError(f"{where}: per_size names {preset!r}, which is not in sizes {sizes}; remove it")
        bad = sorted(set(entry or {}) - {"lr", "batch_size", "tuned_by"}) if isinstance(entry, dict) else ["?"]
        if bad:
            raise ConfigError(f"{where}: per_size.{preset} takes lr, batch_size, tuned_by; got {', '.join(bad)}")
        lr, bs = entry.get("lr"), entry.get("batch_size")
        if lr is not None and (isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0):
            raise ConfigError(f"{where}: per_size.{preset}.lr must be a positive number, got {lr!r}")
        if bs is not None and (isinstance(bs, bool) or not isinstance(bs, int) or bs < 1):
            raise ConfigError(f"{where}: per_size.{preset}.batch_size must be a positive integer, got {bs!r}")
        out[str(preset)] = dict(entry)
    return out


def default_space_path(axis: str) -> Path:
    return SPACES_DIR / f"{axis}.yaml"


def load_space(path: str | Path | None = None, axis: str | None = None) -> SearchSpace:
    """Read and validate a search space (``yaml.safe_load``); ``path=None`` uses ``search_spaces/<axis>.yaml``."""
    import yaml

    if path is None:
        if axis is None:
            raise ConfigError("give a search space file (--space FILE) or an axis (--axis params|data|compute)")
        path = default_space_path(axis)
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"search space {p} not found; check the path (defaults live in {SPACES_DIR})")
    try:
        values = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0] if str(exc) else "syntax error"
        raise ConfigError(f"cannot parse {p}: {first}; fix the YAML syntax") from exc
    space = space_from_dict(values if values is not None else {}, source=str(p))
    if axis is not None and space.axis != axis:
        raise ConfigError(f"{p} is a space for axis {space.axis!r}, not {axis!r}; pass --axis {space.axis}")
    return space


def with_overrides(
    space: SearchSpace,
    model: str | None = None,
    sizes: list[str] | None = None,
    epochs: int | None = None,
    lr: float | None = None,
    batch_size: int | None = None,
    amp: bool | str | None = None,
    seeds: int | None = None,
    train_sizes: list[int] | None = None,
    per_size: dict | None = None,
) -> SearchSpace:
    """Apply command-line overrides and re-validate (so e.g. a new model's presets are checked)."""
    values = {
        "axis": space.axis,
        "model": model or space.model,
        "sizes": list(sizes) if sizes else list(space.sizes),
        "train_sizes": list(train_sizes) if train_sizes else list(space.train_sizes),
        "seeds": list(range(seeds)) if seeds else list(space.seeds),
        "fixed": copy.deepcopy(space.fixed),
        "resources": dataclasses.asdict(space.resources),
    }
    if seeds is not None and seeds < 1:
        raise ConfigError(f"--seeds must be ≥ 1, got {seeds}")
    if model and model != space.model and not sizes:
        import models

        table = list(models.presets(model))
        bad = [s for s in space.sizes if s not in table]
        if bad:
            raise ConfigError(
                f"model {model!r} has no preset(s) {', '.join(bad)} from {space.source}; "
                f"pass --sizes with some of: {', '.join(table) or '(none)'}"
            )
    if space.flop_budgets is not None:
        values["flop_budgets"] = list(space.flop_budgets)
        values["early_stop"] = space.early_stop
        values["scheduler"] = space.scheduler
        values["frontier"] = dict(space.frontier)
    if space.search is not None:
        values["search"] = dataclasses.asdict(space.search)
    kept = {p: e for p, e in space.per_size.items() if p in values["sizes"]}
    if per_size is not None or kept:
        values["per_size"] = per_size if per_size is not None else kept
    fixed = values["fixed"]
    if epochs is not None:
        fixed["epochs"] = epochs
    if lr is not None:
        fixed.setdefault("optim", {})["lr"] = lr
    if batch_size is not None:
        fixed["batch_size"] = batch_size
    if amp:
        fixed["amp"] = amp  # True, "bf16" or "fp16" (engine.loop.precision)
    return space_from_dict(values, source=space.source)
