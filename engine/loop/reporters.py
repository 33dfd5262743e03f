"""Reporters for the command line: a tqdm bar per epoch, one summary line per report, a final table.

The loop itself writes every report as a JSON line to ``run_dir/metrics.jsonl``; these only
show progress. (The sweep's reporter, which calls Ray, lives in ``engine.sweep``.)
"""

from __future__ import annotations

import sys
from typing import IO, Any

from engine import metrics as M

SUMMARY_KEYS = (M.VAL_LOSS, "val_" + M.ENERGY_MAE, "val_" + M.FORCES_L2MAE, "val_" + M.STRESS_MAE)
TABLE_KEYS = (
    M.EPOCH, M.STEP, M.N_PARAMS, M.TRAIN_SIZE, M.FLOPS_CUM, M.WALL_S, M.THROUGHPUT_STRUCT_S, M.THROUGHPUT_ATOMS_S,
    M.EPOCHS_RUN, M.BEST_EPOCH, M.DIVERGED_EPOCH,
    *(M.split_key(s, t) for s in ("train", "val", "test") for t in M.TARGETS),
)  # fmt: skip


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e5 else f"{value:.3e}"
    return str(value)


class ProgressReporter:
    """tqdm bar over each epoch's optimizer steps; a line per report (epoch 0 = untrained model)."""

    def __init__(self, epochs: int, stream: IO[str] | None = None, bar: bool = True) -> None:
        self.epochs = epochs
        self.stream = stream if stream is not None else sys.stderr
        self.bar_enabled = bar
        self._bar = None
        self.history: list[dict] = []

    def on_batch(self, epoch: int, index: int, total: int, step: int) -> None:
        """Called by the loop after every optimizer step (rank 0 only)."""
        if not self.bar_enabled:
            return
        from tqdm import tqdm

        if self._bar is None:
            self._bar = tqdm(total=total, desc=f"epoch {epoch}/{self.epochs}", file=self.stream, leave=False)
        self._bar.update(1)
        if index >= total:
            self._close_bar()

    def _close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def report(self, metrics: dict[str, float], checkpoint_dir: str | None = None) -> None:
        self._close_bar()
        self.history.append(dict(metrics))
        parts = [f"epoch {metrics.get(M.EPOCH)}"] + [f"{k}={_fmt(metrics[k])}" for k in SUMMARY_KEYS if k in metrics]
        print("  ".join(parts), file=self.stream, flush=True)


def metrics_table(metrics: dict[str, Any], keys: tuple[str, ...] = TABLE_KEYS) -> str:
    """Two-column text table of the named metrics that are present."""
    rows = [(k, _fmt(metrics[k])) for k in keys if k in metrics]
    width = max((len(k) for k, _ in rows), default=0)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
