"""Process helpers the end-to-end tests share: they stop what they start by pid, never by name."""

from __future__ import annotations

import psutil


def alive_pids(pids: list[int]) -> list[int]:
    """The pids still running (zombies count as gone)."""
    out = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                out.append(pid)
        except psutil.NoSuchProcess:
            pass
    return out
