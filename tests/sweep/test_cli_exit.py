"""The sweep CLI's exit status: a sweep whose trials failed is not a success (one ``error:`` line, status 1)."""

from __future__ import annotations

from pathlib import Path

from engine.sweep.cli_common import failed_trials_exit
from engine.sweep.runner import SweepResult


def result_with(statuses: dict[str, str], tmp_path: Path) -> SweepResult:
    return SweepResult(
        name="ladder", sweep_dir=tmp_path / "ladder", tracking_uri="sqlite:///x.db", parent_run_id="r",
        trials={tid: {"status": s, "flops_cum": 0.0, "wall_s": 1.0, "last": {}} for tid, s in statuses.items()},
        skipped=[], flops_used=0.0, flops_full_estimate=None, wall_s=1.0, loop_wall_s=1.0, interrupted=False,
    )


def test_completed_stopped_and_diverged_trials_exit_zero(tmp_path, capsys):
    statuses = {"a": "completed", "b": "stopped", "c": "diverged"}  # diverged: recorded, excluded from fits
    assert failed_trials_exit(result_with(statuses, tmp_path), "engine.scale") == 0
    assert capsys.readouterr().err == ""


def test_failed_trials_give_one_error_line_and_status_one(tmp_path, capsys):
    statuses = {"p0": "completed", "p3": "failed", "p1": "failed", "p2": "failed", "p4": "failed"}
    assert failed_trials_exit(result_with(statuses, tmp_path), "engine.scale") == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("error: 4 trial(s) failed (p1, p2, p3 and 1 more)")
    assert "python -m engine.scale --name ladder --resume" in err[0]
