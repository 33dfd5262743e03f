"""Run every benchmark and write its rows into BENCHMARKS.md.

    python -m benchmarks.run                 # all benchmarks
    python -m benchmarks.run data fit        # only these (module names without bench_)

Each ``benchmarks/bench_<name>.py`` exposes ``run() -> list[dict]`` with rows
``{name, value, unit, notes}``. The section of BENCHMARKS.md between the
``<!-- bench:<name> -->`` markers is replaced with a fresh table; the rest of the file is kept.
"""

from __future__ import annotations

import importlib
import os
import platform
import re
import sys
import time
from pathlib import Path

NAMES = ["data", "train", "models", "fit", "engine"]
ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "BENCHMARKS.md"


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, Python {platform.python_version()}"


def table(name: str, rows: list[dict], seconds: float) -> str:
    lines = [
        f"<!-- bench:{name} -->",
        f"`python -m benchmarks.run {name}` — {time.strftime('%Y-%m-%d')}, {machine()}, took {seconds:.0f} s",
        "",
        "| benchmark | value | unit | notes |",
        "|---|---:|---|---|",
    ]
    for r in rows:
        v = r["value"]
        vs = f"{v:.4g}" if isinstance(v, float) else str(v)
        lines.append(f"| {r['name']} | {vs} | {r.get('unit', '')} | {r.get('notes', '')} |")
    lines.append(f"<!-- /bench:{name} -->")
    return "\n".join(lines)


def update(text: str, name: str, section: str) -> str:
    pattern = re.compile(rf"<!-- bench:{name} -->.*?<!-- /bench:{name} -->", re.S)
    if pattern.search(text):
        return pattern.sub(lambda _m: section, text)
    return text.rstrip() + f"\n\n## {name}\n\n{section}\n"


def main(argv: list[str] | None = None) -> int:
    names = (argv if argv is not None else sys.argv[1:]) or NAMES
    text = OUT.read_text() if OUT.exists() else "# Benchmarks\n\nWritten by `python -m benchmarks.run`.\n"
    for name in names:
        module = importlib.import_module(f"benchmarks.bench_{name}")
        start = time.perf_counter()
        rows = module.run()
        seconds = time.perf_counter() - start
        for r in rows:
            print(f"{name:8s} {r['name']:60s} {r['value']!s:>14} {r.get('unit', '')}")
        text = update(text, name, table(name, rows, seconds))
        OUT.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
