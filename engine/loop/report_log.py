"""Where one trial's reports go: ``run_dir/metrics.jsonl`` (rank 0) and the caller's reporter."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from engine import metrics as M
from engine.loop import checkpoint as ckpt_io
from engine.loop.preemption import SigtermWatch


class ReportLog:
    """Writes each report row as a JSON line and hands it to the reporter (:class:`~engine.metrics.Reporter`)."""

    def __init__(self, run_dir: Path, reporter: M.Reporter | None, is_main: bool, watch: SigtermWatch) -> None:
        self.run_dir, self.reporter, self.is_main, self.watch = run_dir, reporter, is_main, watch

    @property
    def path(self) -> Path:
        return self.run_dir / "metrics.jsonl"

    def start(self) -> None:
        """A fresh trial: no rows from an earlier one in this run folder."""
        if self.is_main:
            self.path.unlink(missing_ok=True)

    def write_config(self, config: dict) -> None:
        """``run_dir/config.json``: the resolved trial config (rank 0)."""
        if self.is_main:
            ckpt_io.atomic_write_text(self.run_dir / "config.json", json.dumps(config, indent=2, sort_keys=True) + "\n")

    def rewrite(self, history: list[dict]) -> None:
        """A resumed trial: the rows its checkpoint holds, and nothing after them."""
        if self.is_main:
            ckpt_io.atomic_write_text(self.path, "".join(json.dumps(m, sort_keys=True) + "\n" for m in history))

    def write(self, row: dict[str, Any], checkpoint_path: Path) -> None:
        """Append ``row`` (rank 0) and report it with the checkpoint it can resume from."""
        if self.is_main:
            with open(self.path, "a") as fh:
                fh.write(json.dumps(row, sort_keys=True) + "\n")
        # a reporter with ``all_ranks = True`` (Ray Train's report is a barrier) is called on every rank
        if self.reporter is not None and (self.is_main or getattr(self.reporter, "all_ranks", False)):
            in_steps, self.watch.in_steps = self.watch.in_steps, False  # a report may block (a paused trial)
            try:
                self.reporter.report(dict(row, **{M.CHECKPOINT: str(checkpoint_path)}), str(self.run_dir))
            finally:
                self.watch.in_steps = in_steps

    def checkpoint_saved(self) -> None:
        """A checkpoint inside an epoch, without a report: the reporter's ``on_checkpoint(run_dir)``, if any, gets it
        (rank 0; remote storage uploads it)."""
        on_checkpoint = getattr(self.reporter, "on_checkpoint", None) if self.is_main else None
        if on_checkpoint is not None:
            on_checkpoint(str(self.run_dir))

    def batch_hook(self) -> Any:
        """The reporter's ``on_batch(epoch, batch, n_batches, step)`` (a progress bar), on rank 0; else None."""
        return getattr(self.reporter, "on_batch", None) if self.is_main else None
