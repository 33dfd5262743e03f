"""How long a trial trains and how it ends: step budgets, early stopping, divergence, test-split metrics."""

from __future__ import annotations

import math

import pytest
import torch

import models
from engine import metrics as M
from engine.config import BudgetConfig, DataConfig, EarlyStopConfig, OptimConfig, TrialConfig
from engine.data.graph import GraphDataset, GraphSpec
from engine.errors import ConfigError
from engine.loop.loop import evaluate, run_trial
from engine.loop.loss import error_metrics
from tests.loop.conftest import TinySplits, emt_records


class Rows:
    def __init__(self) -> None:
        self.rows: list[dict] = []

    def report(self, metrics, checkpoint_dir=None):
        self.rows.append(dict(metrics))


@pytest.fixture(scope="module")
def records():
    return emt_records(40, seed=2)


def _splits(records, n_train: int) -> TinySplits:
    return TinySplits(train=records[:n_train], val=records[30:35], test=records[35:40], pool_size=30)


def _config(**kw) -> TrialConfig:
    base = dict(model="fcn", model_config={"hidden": 16, "num_rbf": 8}, epochs=2, batch_size=4, seed=3,
                data=DataConfig(max_val=6))
    base.update(kw)
    return TrialConfig(**base)


def test_step_budget_gives_every_training_set_size_the_same_steps(records, tmp_path):
    budget = BudgetConfig(steps=6)
    finals, lrs = {}, {}
    for n in (8, 24):
        rep = Rows()
        finals[n] = run_trial(_config(budget=budget, epochs=1), tmp_path / f"n{n}", reporter=rep,
                              splits=_splits(records, n))
        lrs[n] = [r[M.LR] for r in rep.rows]
    for n in (8, 24):
        assert finals[n][M.STEP] == 6  # the epochs field does not cap a step budget
    # how often each saw its data: 6 steps × 4 structures over 8 or 24 structures
    assert finals[8][M.EPOCHS_RUN] == pytest.approx(3.0) and finals[8][M.EPOCH] == 3
    assert finals[24][M.EPOCHS_RUN] == pytest.approx(1.0) and finals[24][M.EPOCH] == 1
    assert lrs[8][-1] == pytest.approx(lrs[24][-1])  # the schedule spans the steps, not the epochs


def test_early_stopping_restores_the_best_weights_and_ends_with_them(records, tmp_path):
    # min_delta so large that no epoch after the first counts as an improvement: stop at epoch 2, restore 1
    rule = BudgetConfig(early_stop=EarlyStopConfig(patience=1, min_delta=1e9))
    cfg = _config(budget=rule, epochs=5, optim=OptimConfig(ema_decay=0.9))
    rep = Rows()
    final = run_trial(cfg, tmp_path / "run", reporter=rep, splits=_splits(records, 24))
    assert [r[M.EPOCH] for r in rep.rows] == [0, 1, 2]
    assert final[M.BEST_EPOCH] == 1
    for target in M.TARGETS:  # the last report scores the restored epoch-1 weights
        key = M.split_key("val", target)
        assert final[key] == pytest.approx(rep.rows[1][key], rel=1e-9, abs=1e-12), key
    ck = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert ck["finished"] and ck["best"]["epoch"] == 1
    for name, value in ck["best"]["state"]["model"].items():
        assert torch.equal(ck["model_state"][name], value), name
    # a finished trial started again reports nothing and returns its last row
    again = Rows()
    assert run_trial(cfg, tmp_path / "run", reporter=again, splits=_splits(records, 24)) == final
    assert again.rows == []


def test_a_loss_that_becomes_nan_stops_the_trial_as_diverged(records, tmp_path):
    cfg = _config(epochs=4, optim=OptimConfig(lr=1e30, warmup_fraction=0.0))
    rep = Rows()
    final = run_trial(cfg, tmp_path / "run", reporter=rep, splits=_splits(records, 24))
    assert final[M.DIVERGED_EPOCH] == 1 and final[M.EPOCH] == 1  # stopped in the epoch it diverged
    assert final[M.STEP] < 6  # within the epoch, at the first non-finite step
    assert not math.isfinite(final[M.split_key("train", M.LOSS)])
    assert not any(k.startswith("test_") for k in final)  # NaN weights are not scored
    assert all(M.DIVERGED_EPOCH not in r for r in rep.rows[:-1])


def test_last_report_scores_the_ema_weights_on_the_test_split(records, tmp_path):
    cfg = _config(epochs=2, optim=OptimConfig(ema_decay=0.5))
    splits = _splits(records, 24)
    rep = Rows()
    final = run_trial(cfg, tmp_path / "run", reporter=rep, splits=splits)
    assert all(not any(k.startswith("test_") for k in r) for r in rep.rows[:-1])  # once, at the end
    ck = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    model = models.build(cfg.model, cfg.model_config)
    model.load_state_dict(ck["ema_state"])
    spec = GraphSpec(cutoff=model.config.cutoff, max_neighbors=model.config.max_neighbors,
                     strict=model.config.strict_neighbors)
    sums = evaluate(model, GraphDataset(splits.test, spec), cfg, torch.device("cpu"), torch.float32)
    expected = error_metrics(sums, cfg.loss, float(model.forces_scale), float(model.stress_scale), split="test")
    assert set(expected) == {M.split_key("test", t) for t in M.TARGETS}
    for key, value in expected.items():
        assert final[key] == pytest.approx(value, rel=1e-6), key
    # the live (non-EMA) weights score differently: the EMA average is what was evaluated
    model.load_state_dict(ck["model_state"])
    live = evaluate(model, GraphDataset(splits.test, spec), cfg, torch.device("cpu"), torch.float32)
    live_loss = error_metrics(live, cfg.loss, float(model.forces_scale), float(model.stress_scale), "test")
    assert live_loss[M.split_key("test", M.LOSS)] != pytest.approx(final[M.split_key("test", M.LOSS)], rel=1e-6)


def test_budget_config_errors_are_one_line():
    with pytest.raises(ConfigError, match="either steps or early_stop"):
        BudgetConfig(steps=10, early_stop=EarlyStopConfig())
    with pytest.raises(ConfigError, match=r"budget.steps must be ≥ 1"):
        BudgetConfig(steps=0)
    with pytest.raises(ConfigError, match="patience must be ≥ 1"):
        BudgetConfig(early_stop=EarlyStopConfig(patience=0))
    assert BudgetConfig().rule == "epochs" and BudgetConfig(steps=600).rule == "steps=600"


class CrashAfter(Rows):
    def __init__(self, epoch: int) -> None:
        super().__init__()
        self.epoch = epoch

    def report(self, metrics, checkpoint_dir=None):
        super().report(metrics, checkpoint_dir)
        if metrics[M.EPOCH] == self.epoch:
            raise KeyboardInterrupt("simulated crash")


def test_early_stopping_resumes_with_its_best_weights(records, tmp_path):
    rule = BudgetConfig(early_stop=EarlyStopConfig(patience=2, min_delta=1e9))
    cfg = _config(budget=rule, epochs=6)
    volatile = {M.WALL_S, M.THROUGHPUT_STRUCT_S, M.THROUGHPUT_ATOMS_S, M.CHECKPOINT}
    whole = run_trial(cfg, tmp_path / "whole", splits=_splits(records, 24))
    assert whole[M.EPOCH] == 3 and whole[M.BEST_EPOCH] == 1
    with pytest.raises(KeyboardInterrupt):
        run_trial(cfg, tmp_path / "split", reporter=CrashAfter(2), splits=_splits(records, 24))
    resumed = run_trial(cfg, tmp_path / "split", splits=_splits(records, 24))
    assert {k: v for k, v in resumed.items() if k not in volatile} == {
        k: v for k, v in whole.items() if k not in volatile
    }
