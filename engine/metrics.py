"""Names of trial metrics, shared by the loop, the sweep, MLflow and the report.

One dict per report (after each epoch, plus epoch 0 = the untrained model). Units are in
the names. Per-target MAEs are reported on train and validation with these prefixes.
"""

from __future__ import annotations

from typing import Protocol

EPOCH = "epoch"
STEP = "step"  # optimizer steps so far
# executed matmul FLOPs (forward + backward, double backward of conservative models) so far: the x coordinate of
# a compute law. At a compute-axis rung: the main run's FLOPs plus this rung's own cooldown branch (what the
# annealed model scored was trained with), without the earlier, discarded branches
FLOPS_CUM = "flops_cum"
# what the trial has cost so far: the main run plus every cooldown branch (discarded ones included); the sweep's
# FLOP accounting reads it (falling back to flops_cum). Equal to flops_cum for trials without rungs
FLOPS_SPENT = "flops_spent"
WALL_S = "wall_s"  # seconds inside the training loop so far
LR = "lr"
TRAIN_SIZE = "train_size"  # structures in the training subset
N_PARAMS = "n_params"  # trainable parameters
THROUGHPUT_STRUCT_S = "throughput_structures_per_s"
THROUGHPUT_ATOMS_S = "throughput_atoms_per_s"
CHECKPOINT = "checkpoint_path"
# 1 once the FLOP accountant's exact linear law failed a check and every later step is counted (slower, exact)
FLOPS_FALLBACK = "flops_counting_fallback"
REPORT = "report"  # index of the report in the trial (0 = untrained): the MLflow step, unique per report
# compute axis (engine.loop.cooldown): a report at a FLOP rung scores a cooldown branch; its val_* and
# train_* are the annealed model's, and these say how the branch went
RUNG = "rung"  # index of the FLOP rung (0 = first budget)
RUNG_FLOPS = "rung_flops"  # the rung's budget: main-run FLOPs at which the branch was taken
COOLDOWN_STEPS = "cooldown_steps"  # optimizer steps of the branch
COOLDOWN_FLOPS = "cooldown_flops"  # FLOPs of the branch (counted in this row's flops_cum and in flops_spent)
LR_COOLDOWN_END = "lr_cooldown_end"  # LR of the branch's last step (≤ 1.5 · min_lr_factor · peak: annealed)
VAL_LOSS_UNANNEALED = "val_loss_unannealed"  # val_loss of the main run at the rung, before the cooldown
# passes over the training subset so far: structures seen / train_size (fractional). At a rung: the main run's
# structures plus this rung's own cooldown branch's, like flops_cum, so epochs_run · train_size pairs with it
EPOCHS_RUN = "epochs_run"
# last report: structures the test_* metrics were scored on (the test split capped at data.max_test; the cap is
# the run's param data.max_test)
TEST_STRUCTURES = "test_structures"
BEST_EPOCH = "best_epoch"  # early stopping: the epoch whose weights the trial ended with
DIVERGED_EPOCH = "diverged_epoch"  # only in the last report of a trial whose loss became NaN/inf
STATUS_DIVERGED = "diverged"  # MLflow tag engine.status of such a trial (excluded from fits)

# per split ("train", "val", "test": the test split once, at the end of a trial): f"{split}_{name}"
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
