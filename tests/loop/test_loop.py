"""run_trial end to end on tiny inline EMT data: reports, files, FLOPs, budgets, resume, checkpoints."""

from __future__ import annotations

import json
import math

import pytest
import torch

from engine import metrics as M
from engine.config import DataConfig, OptimConfig, TrialConfig
from engine.errors import CheckpointError
from engine.loop.checkpoint import FORMAT, load_checkpoint
from engine.loop.loop import run_trial

VOLATILE = {M.WALL_S, M.THROUGHPUT_STRUCT_S, M.THROUGHPUT_ATOMS_S, M.CHECKPOINT}


class ListReporter:
    def __init__(self, crash_after_epoch: int | None = None) -> None:
        self.rows: list[dict] = []
        self.dirs: list[str | None] = []
        self.crash_after_epoch = crash_after_epoch

    def report(self, metrics, checkpoint_dir=None):
        self.rows.append(dict(metrics))
        self.dirs.append(checkpoint_dir)
        if self.crash_after_epoch is not None and metrics[M.EPOCH] == self.crash_after_epoch:
            raise KeyboardInterrupt("simulated crash")


def _config(model="fcn", **kw) -> TrialConfig:
    mc = {"fcn": {"hidden": 16, "num_rbf": 8}, "transformer": {"d_model": 16, "depth": 1, "heads": 2}}[model]
    base = dict(model=model, model_config=mc, epochs=2, batch_size=4, seed=3, data=DataConfig(max_val=6))
    base.update(kw)
    return TrialConfig(**base)


def _stable(rows):
    return [{k: v for k, v in r.items() if k not in VOLATILE} for r in rows]


def test_reports_files_and_flops(tiny_splits, tmp_path):
    rep = ListReporter()
    final = run_trial(_config(epochs=2), tmp_path / "run", reporter=rep, splits=tiny_splits)
    assert [r[M.EPOCH] for r in rep.rows] == [0, 1, 2]
    first = rep.rows[0]
    assert first[M.STEP] == 0 and first[M.FLOPS_CUM] == 0.0 and math.isfinite(first[M.VAL_LOSS])
    for key in (*(M.split_key(s, t) for s in ("train", "val") for t in M.TARGETS), M.N_PARAMS, M.TRAIN_SIZE, M.LR):
        assert key in final, key
    assert final[M.TRAIN_SIZE] == len(tiny_splits.train)
    flops = [r[M.FLOPS_CUM] for r in rep.rows]
    assert flops[0] < flops[1] < flops[2]
    assert rep.dirs[-1] == str(tmp_path / "run")
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [x[M.EPOCH] for x in lines] == [0, 1, 2]
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["model"] == "fcn" and saved["model_config"]["hidden"] == 16 and "cutoff" in saved["model_config"]
    ck = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert ck["format"] == FORMAT and ck["epoch"] == 2 and len(ck["metrics_history"]) == 3
    assert not [p for p in (tmp_path / "run").iterdir() if p.name.endswith(".tmp")]


def test_loss_falls_on_a_tiny_set(tiny_splits, tmp_path):
    cfg = _config("transformer", epochs=6, optim=OptimConfig(lr=3e-3))
    rep = ListReporter()
    run_trial(cfg, tmp_path / "run", reporter=rep, splits=tiny_splits)
    assert rep.rows[-1]["train_loss"] < 0.8 * rep.rows[1]["train_loss"]


def test_max_flops_stops_early(tiny_splits, tmp_path):
    final = run_trial(_config(epochs=50, max_flops=1.0), tmp_path / "run", splits=tiny_splits)
    assert final[M.EPOCH] == 1 and final[M.STEP] == 1 and final[M.FLOPS_CUM] > 1.0


@pytest.mark.parametrize(
    ("model", "extra"),
    [("fcn", {"optim": OptimConfig(ema_decay=0.9)}), ("transformer", {"amp": True})],
)
def test_resume_continues_exactly(tiny_splits, tmp_path, model, extra):
    straight = ListReporter()
    run_trial(_config(model, epochs=3, **extra), tmp_path / "a", reporter=straight, splits=tiny_splits)
    crashed = ListReporter(crash_after_epoch=1)
    with pytest.raises(KeyboardInterrupt):
        run_trial(_config(model, epochs=3, **extra), tmp_path / "b", reporter=crashed, splits=tiny_splits)
    resumed = ListReporter()
    final = run_trial(_config(model, epochs=3, **extra), tmp_path / "b", reporter=resumed, splits=tiny_splits)
    assert [r[M.EPOCH] for r in resumed.rows] == [2, 3]  # no second epoch 0
    assert _stable(crashed.rows + resumed.rows) == _stable(straight.rows)
    assert final[M.FLOPS_CUM] == straight.rows[-1][M.FLOPS_CUM]
    a = load_checkpoint(tmp_path / "a" / "checkpoint.pt")
    b = load_checkpoint(tmp_path / "b" / "checkpoint.pt")
    for key, value in a["model_state"].items():
        assert torch.equal(value, b["model_state"][key]), key
    lines = (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)[M.EPOCH] for x in lines] == [0, 1, 2, 3]


def test_checkpoint_from_another_model_or_config_is_refused(tiny_splits, tmp_path):
    run_trial(_config("fcn", epochs=1), tmp_path / "run", splits=tiny_splits)
    before = (tmp_path / "run" / "checkpoint.pt").read_bytes()
    with pytest.raises(CheckpointError, match="from model 'fcn', not 'transformer'"):
        run_trial(_config("transformer", epochs=1), tmp_path / "run", splits=tiny_splits)
    other = _config("fcn", epochs=1, model_config={"hidden": 32, "num_rbf": 8})
    with pytest.raises(CheckpointError, match="differs in hidden"):
        run_trial(other, tmp_path / "run", splits=tiny_splits)
    with pytest.raises(CheckpointError, match=r"other settings \(optim.lr\)"):
        run_trial(_config("fcn", epochs=1, optim=OptimConfig(lr=0.1)), tmp_path / "run", splits=tiny_splits)
    assert (tmp_path / "run" / "checkpoint.pt").read_bytes() == before  # nothing overwritten


def test_unreadable_checkpoint_is_a_clear_error(tiny_splits, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot load checkpoint"):
        run_trial(_config(epochs=1), run_dir, splits=tiny_splits)
    assert (run_dir / "checkpoint.pt").read_bytes() == b"not a checkpoint"


def test_progress_reporter_draws_bars_and_epoch_lines(tiny_splits, tmp_path):
    import io

    from engine.loop.reporters import ProgressReporter, metrics_table

    stream = io.StringIO()
    rep = ProgressReporter(epochs=2, stream=stream)
    final = run_trial(_config(epochs=2), tmp_path / "run", reporter=rep, splits=tiny_splits)
    text = stream.getvalue()
    assert "epoch 1/2" in text and "epoch 2  val_loss=" in text and "epoch 0  val_loss=" in text
    assert [r[M.EPOCH] for r in rep.history] == [0, 1, 2]
    table = metrics_table(final)
    assert "val_forces_l2mae_mev_per_a" in table and "flops_cum" in table


def test_bf16_autocast_trains_a_conservative_model(tiny_splits, tmp_path):
    """fcn's forces and stress are autograd derivatives: geometry must stay float32 under autocast."""
    final = run_trial(_config("fcn", epochs=1, amp=True), tmp_path / "run", splits=tiny_splits)
    assert all(math.isfinite(final[k]) for k in (M.VAL_LOSS, "val_stress_mae_mev_per_a3", "train_loss"))
    assert final[M.FLOPS_CUM] > 0


def test_the_test_split_is_capped_and_the_last_report_says_how_many_were_scored(tiny_splits, tmp_path):
    from tests.loop.conftest import TinySplits

    splits = TinySplits(train=tiny_splits.train[:16], val=tiny_splits.val, test=tiny_splits.train[16:])
    capped = run_trial(_config(epochs=1, data=DataConfig(max_val=6, max_test=3)), tmp_path / "a", splits=splits)
    whole = run_trial(_config(epochs=1, data=DataConfig(max_val=6, max_test=None)), tmp_path / "b", splits=splits)
    assert capped[M.TEST_STRUCTURES] == 3.0 and whole[M.TEST_STRUCTURES] == 8.0
    assert capped[M.split_key("test", M.LOSS)] != whole[M.split_key("test", M.LOSS)]
    assert json.loads((tmp_path / "a" / "config.json").read_text())["data"]["max_test"] == 3  # MLflow: data.max_test
