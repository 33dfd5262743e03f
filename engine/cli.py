"""Shared helpers for the thin CLIs: run a main function, print user errors as one line."""

from __future__ import annotations

import sys
from collections.abc import Callable

from engine.errors import UserError


def run_cli(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> int:
    """Call ``main(argv)``; a :class:`UserError` becomes one ``error:`` line and exit code 2."""
    try:
        code = main(argv)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return int(code or 0)
