"""Names of trial metrics, shared by the loop, the sweep, MLflow and the report.

One dict per report (after each epoch, plus epoch 0 = the untrained model). Units are in
the names. Per-target MAEs are reported on train and validation with these prefixes.
"""

from __future__ import annotations

from typing import Protocol

EPOCH = "epoch"
STEP = "step"  # optimizer steps so far
FLOPS_CUM = "flops_cum"  # FLOPs (forward + backward) of every training step so far
WALL_S = "wall_s"  # seconds inside the training loop so far
LR = "lr"
TRAIN_SIZE = "train_size"  # structures in the training subset
N_PARAMS = "n_params"  # trainable parameters
THROUGHPUT_STRUCT_S = "throughput_structures_per_s"
THROUGHPUT_ATOMS_S = "throughput_atoms_per_s"
CHECKPOINT = "checkpoint_path"

# per split ("train", "val"): f"{split}_{name}"
LOSS = "loss"  # weighted total (the optimized objective, dimensionless)
ENERGY_MAE = "energy_mae_mev_per_atom"
FORCES_MAE = "forces_mae_mev_per_a"  # mean |ΔF| component-wise, meV/Å
FORCES_L2MAE = "forces_l2mae_mev_per_a"  # mean over atoms of |ΔF| (vector norm), meV/Å
STRESS_MAE = "stress_mae_mev_per_a3"  # meV/Å³
TARGETS = (LOSS, ENERGY_MAE, FORCES_MAE, FORCES_L2MAE, STRESS_MAE)

VAL_LOSS = f"val_{LOSS}"  # the metric sweeps optimize and reports fit by default


def split_key(split: str, name: str) -> str:
    return f"{split}_{name}"


class Reporter(Protocol):
    """Receives the loop's metrics. The CLI's prints and writes JSON lines; the sweep's calls Ray."""

    def report(self, metrics: dict[str, float], checkpoint_dir: str | None = None) -> None: ...
