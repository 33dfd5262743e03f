"""Shared helpers for the thin CLIs: run a main function, print user errors as one line."""

from __future__ import annotations

import sys
from collections.abc import Callable

import yaml

from engine.errors import PREEMPTED_EXIT_CODE, ConfigError, Preempted, UserError


def run_cli(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> int:
    """Call ``main(argv)``; a :class:`UserError` becomes one ``error:`` line and exit code 2; a trial stopped by a
    SIGTERM after saving (:class:`Preempted`) one ``preempted:`` line and exit code 75 (run it again to resume)."""
    try:
        code = main(argv)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Preempted as exc:
        print(f"preempted: {exc}", file=sys.stderr)
        return PREEMPTED_EXIT_CODE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return int(code or 0)


def parse_model_overrides(items: list[str]) -> dict:
    """``["d_model=128", "periodic=true"]`` → ``{"d_model": 128, "periodic": True}`` (YAML scalars)."""
    out = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--model-config expects KEY=VALUE, got {item!r}; e.g. --model-config d_model=128")
        try:
            out[key.strip()] = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise ConfigError(f"--model-config {item!r}: cannot parse the value ({exc}); quote it") from exc
    return out
