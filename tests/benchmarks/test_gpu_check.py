"""The device check's CPU rehearsal: ``benchmarks/gpu_check.sh --dry-run`` end to end.

Runs the real shell script (tiny EquiformerV2 and transformer, fp32/bf16/fp16 on CPU, gloo instead
of NCCL, one engine sweep on CPU with the frontier policy) and checks the section it writes; ``--into`` replaces the
``gpu`` section of a copy of BENCHMARKS.md and keeps the rest.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"


def _run(args: list[str], tmp_path: Path, timeout: float = 900) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHON=sys.executable, TMPDIR=str(tmp_path), RAY_TMPDIR=str(tmp_path), OUT=str(tmp_path))
    return subprocess.run([str(SCRIPT), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_dry_run_writes_every_part_of_the_section(tmp_path):
    bench = tmp_path / "BENCHMARKS.md"
    bench.write_text("# Benchmarks\n\n## gpu\n\n<!-- bench:gpu -->\nold\n<!-- /bench:gpu -->\n\n## other\n\nkept\n")
    proc = _run(["--dry-run", "--into", str(bench)], tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    text = (tmp_path / "gpu_check.md").read_text()  # default: $OUT/gpu_check.md
    assert text.startswith("<!-- bench:gpu -->") and text.rstrip().endswith("<!-- /bench:gpu -->")
    cells = [[c.strip() for c in line.split("|")[1:-1]] for line in text.splitlines()[5:-1]]
    rows = {c[0]: c[1] for c in cells}
    notes = {c[0]: c[3] for c in cells}
    for precision in ("fp32", "tf32", "bf16", "fp16"):
        assert float(rows[f"matmul peak {precision} 128³"]) > 0
    assert rows["gloo init + all-reduce"] == "ok"
    for label in ("EquiformerV2 e0 (dry run)", "transformer t0 (dry run)"):
        for precision in ("fp32", "bf16", "fp16"):
            assert float(rows[f"train {label} {precision}: structures/s"]) > 0
            assert float(rows[f"train {label} {precision}: atoms/s"]) > 0
            assert float(rows[f"train {label} {precision}: utilisation"]) > 0
        for precision, bound in (("bf16", 8e-2), ("fp16", 2e-2)):  # test_autocast's tolerances, ×2 for these sizes
            key = f"agreement {label} {precision} vs fp32"
            assert float(rows[key]) < 2 * bound, notes[key]
    assert rows["engine sweep on the device"] == "ok", text
    merged = bench.read_text()
    assert "old" not in merged and "kept" in merged and merged.count("<!-- bench:gpu -->") == 1
    assert re.search(r"`benchmarks/gpu_check.sh --dry-run --into \S+` — ", merged)


def test_without_a_gpu_the_full_check_refuses_with_one_error_line(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible: the full check would run")
    proc = _run([], tmp_path, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: no CUDA GPU visible") and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "gpu_check.md").exists()
