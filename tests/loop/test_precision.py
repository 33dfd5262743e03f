"""``amp`` modes: config parsing, dtype resolution, and fp16 + GradScaler training on CPU."""

from __future__ import annotations

import math

import pytest
import torch

from engine import metrics as M
from engine.config import DataConfig, TrialConfig, trial_config_from_dict
from engine.errors import ConfigError
from engine.loop import precision
from engine.loop.loop import run_trial

CPU = torch.device("cpu")


@pytest.mark.parametrize(
    ("value", "stored", "dtype"),
    [
        (False, False, None),
        (True, True, torch.bfloat16),  # CPUs run bf16
        ("bf16", "bf16", torch.bfloat16),
        ("FP16", "fp16", torch.float16),
        ("false", False, None),
        ("true", True, torch.bfloat16),
    ],
)
def test_amp_values_parse_and_resolve(value, stored, dtype):
    cfg = trial_config_from_dict({"amp": value})
    assert cfg.amp == stored
    assert precision.amp_dtype(cfg.amp, CPU) is dtype
    assert (precision.make_grad_scaler(cfg.amp, CPU) is not None) == (dtype is torch.float16)


def test_bad_amp_value_is_one_clear_error():
    with pytest.raises(ConfigError, match="amp must be one of"):
        trial_config_from_dict({"amp": "fp8"})
    with pytest.raises(ConfigError, match="amp"):
        trial_config_from_dict({"amp": 16})


def test_bf16_request_on_a_gpu_without_bf16_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    cuda = torch.device("cuda")
    assert precision.amp_dtype(True, cuda) is torch.float16  # "true" falls back to fp16 + scaler on old GPUs
    with pytest.raises(ConfigError, match="amp: fp16"):
        precision.amp_dtype("bf16", cuda)


@pytest.mark.parametrize("model", ["transformer", "fcn"])
def test_fp16_trains_with_a_grad_scaler(model, tiny_splits, tmp_path):
    """fp16 autocast on CPU with the dynamic loss scaler: finite losses, scaler state checkpointed."""
    mc = {"fcn": {"hidden": 16, "num_rbf": 8}, "transformer": {"d_model": 16, "depth": 1, "heads": 2}}[model]
    cfg = TrialConfig(model=model, model_config=mc, epochs=1, batch_size=4, seed=3, amp="fp16",
                      data=DataConfig(max_val=6))  # fmt: skip
    final = run_trial(cfg, tmp_path / "run", splits=tiny_splits)
    assert math.isfinite(final[M.VAL_LOSS]) and math.isfinite(final["train_loss"])
    ck = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert ck["scaler_state"] and ck["scaler_state"]["scale"] > 0
