"""Model registry: ``build(name, config)`` and ``names()``.

A new family is one module with a :class:`~models.base.Potential` subclass decorated by
:func:`register`, plus one line in ``_FAMILY_MODULES`` so it is imported on demand.
Size presets (for the params axis) are registered beside each family with ``presets=``.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable

from engine.errors import ConfigError
from models.base import ModelConfig, ModelOutput, Normalization, Potential, RawOutput

__all__ = [
    "ModelConfig",
    "ModelOutput",
    "Normalization",
    "Potential",
    "RawOutput",
    "build",
    "config_from_dict",
    "names",
    "presets",
    "register",
]

# name -> module that registers it (imported lazily so `import models` stays cheap)
_FAMILY_MODULES = {
    "transformer": "models.transformer",
    "fcn": "models.fcn",
    "schnet": "models.schnet",
    "equiformer_v2": "models.equiformer_v2.model",
    "mace": "models.mace",
}
_REGISTRY: dict[str, type[Potential]] = {}
_PRESETS: dict[str, dict[str, dict]] = {}


def register(name: str, presets: dict[str, dict] | None = None) -> Callable[[type[Potential]], type[Potential]]:
    """Class decorator: make a Potential subclass buildable by ``name``."""

    def deco(cls: type[Potential]) -> type[Potential]:
        cls.name = name
        _REGISTRY[name] = cls
        _PRESETS[name] = dict(presets or {})
        return cls

    return deco


def names() -> list[str]:
    return sorted(_FAMILY_MODULES)


def _load(name: str) -> type[Potential]:
    if name not in _FAMILY_MODULES:
        raise ConfigError(f"unknown model {name!r}; choose one of: {', '.join(names())}")
    if name not in _REGISTRY:
        importlib.import_module(_FAMILY_MODULES[name])
    return _REGISTRY[name]


def model_class(name: str) -> type[Potential]:
    return _load(name)


def presets(name: str) -> dict[str, dict]:
    """Named size configs of a family (ordered small → large), as plain dicts."""
    _load(name)
    return dict(_PRESETS[name])


def config_from_dict(name: str, values: dict | None = None, preset: str | None = None) -> ModelConfig:
    """Typed config for family ``name``: preset values, then ``values`` on top. Unknown keys are rejected."""
    cls = _load(name)
    merged: dict = {}
    if preset is not None:
        table = _PRESETS[name]
        if preset not in table:
            raise ConfigError(
                f"unknown preset {preset!r} for model {name!r}; choose one of: {', '.join(table) or '(none)'}"
            )
        merged.update(table[preset])
    merged.update(values or {})
    fields = {f.name: f for f in dataclasses.fields(cls.config_class)}
    unknown = sorted(set(merged) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown {name} config key(s) {', '.join(unknown)}; valid keys: {', '.join(sorted(fields))}"
        )
    try:
        return cls.config_class(**merged)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"bad {name} config: {exc}") from exc


def build(name: str, config: ModelConfig | dict | None = None, preset: str | None = None) -> Potential:
    """Instantiate family ``name`` from a typed config, a dict of overrides, or a preset."""
    cls = _load(name)
    if not isinstance(config, ModelConfig):
        config = config_from_dict(name, config, preset)
    return cls(config)
