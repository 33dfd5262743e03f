"""The loop's resume state inside a checkpoint: RNG states, and whether a checkpoint fits the trial resuming.

The file format itself (keys, atomic writes, safe reads) lives in :mod:`models.checkpoint`, below
both the loop that writes it and the calculator that reads it; its names are re-exported here so
the loop keeps one import.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine.errors import CheckpointError
from models.checkpoint import (
    FILENAME,
    FORMAT,
    REQUIRED_KEYS,
    atomic_write_bytes,
    atomic_write_text,
    load_checkpoint,
    save_checkpoint,
)

__all__ = [
    "FILENAME",
    "FORMAT",
    "REQUIRED_KEYS",
    "RESUMABLE_CHANGES",
    "atomic_write_bytes",
    "atomic_write_text",
    "check_compatible",
    "load_checkpoint",
    "numpy_generator_state",
    "restore_numpy_generator",
    "rng_state",
    "save_checkpoint",
    "set_rng_state",
]

# Trial-config keys that may change between a run and its resume (they do not alter the result).
# (the checkpoint cadence only decides where a run may stop and resume)
RESUMABLE_CHANGES = frozenset({"device", "threads", "max_flops", "count_flops", "checkpoint"})
# how the data is read, not which: the lazy path gives the same splits, batches and graphs as the in-memory one;
# data.max_test only picks what the trial's end scores (with the resumed config), and checkpoints before it lack it
RESUMABLE_DATA_KEYS = frozenset({"data.lazy", "data.num_workers", "data.prefetch_factor", "data.max_test"})


def rng_state() -> dict[str, Any]:
    """Torch (CPU and CUDA) and Python RNG states as plain types and tensors."""
    version, internal, gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": {"version": version, "internal": list(internal), "gauss": gauss},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    py = state.get("python")
    if py is not None:
        random.setstate((py["version"], tuple(py["internal"]), py["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def numpy_generator_state(gen: np.random.Generator) -> dict:
    return dict(gen.bit_generator.state)


def restore_numpy_generator(state: dict) -> np.random.Generator:
    bit_gen = getattr(np.random, state["bit_generator"])()
    bit_gen.state = state
    return np.random.Generator(bit_gen)


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def check_compatible(ckpt: dict[str, Any], model: str, model_config: dict, trial_config: dict, path: Path) -> None:
    """Raise :class:`CheckpointError` if ``ckpt`` belongs to another model, model config or trial."""
    if ckpt["model"] != model:
        raise CheckpointError(
            f"checkpoint {path} is from model {ckpt['model']!r}, not {model!r}; use a fresh --run-dir"
        )
    saved_mc = json.loads(json.dumps(ckpt["model_config"]))
    now_mc = json.loads(json.dumps(model_config))
    if saved_mc != now_mc:
        diff = sorted(k for k in set(saved_mc) | set(now_mc) if saved_mc.get(k) != now_mc.get(k))
        raise CheckpointError(
            f"checkpoint {path} has another {model} config (differs in {', '.join(diff)}); use a fresh --run-dir"
        )
    saved = _flatten(json.loads(json.dumps(ckpt["trial_config"])))
    now = _flatten(json.loads(json.dumps(trial_config)))
    diff = sorted(
        k
        for k in set(saved) | set(now)
        if saved.get(k) != now.get(k)
        and k.split(".")[0] not in RESUMABLE_CHANGES
        and k not in RESUMABLE_DATA_KEYS
        and not k.startswith("model_config")
    )
    if diff:
        raise CheckpointError(
            f"checkpoint {path} was written by a trial with other settings ({', '.join(diff)}); "
            "resume with the same config or use a fresh --run-dir"
        )
