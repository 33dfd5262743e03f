"""Atomic, safe-to-load trial checkpoints in the project's fixed format.

``checkpoint.pt`` holds only plain types and tensors, so ``torch.load(path, weights_only=True)``
reads it without unpickling code:

    {"format": "engine-checkpoint/1", "model", "model_config", "normalization", "model_state",
     "ema_state", "optimizer_state", "scheduler_state", "scaler_state", "epoch", "step",
     "flops_cum", "wall_s", "rng", "trial_config", "metrics_history"}

Writes go to a temporary file in the same folder, then ``os.replace``: a crash mid-write
leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine.errors import CheckpointError

FORMAT = "engine-checkpoint/1"
FILENAME = "checkpoint.pt"
REQUIRED_KEYS = (
    "format", "model", "model_config", "normalization", "model_state", "ema_state", "optimizer_state",
    "scheduler_state", "scaler_state", "epoch", "step", "flops_cum", "wall_s", "rng", "trial_config",
    "metrics_history",
)  # fmt: skip
# Trial-config keys that may change between a run and its resume (they do not alter the result).
RESUMABLE_CHANGES = frozenset({"device", "threads", "max_flops", "count_flops"})


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary sibling and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


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


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Atomically write ``payload`` (must hold every key of the fixed format)."""
    missing = [k for k in REQUIRED_KEYS if k not in payload]
    if missing:
        raise ValueError(f"checkpoint payload lacks {missing}")
    path = Path(path)
    buf = _to_bytes(payload)
    atomic_write_bytes(path, buf)
    return path


def _to_bytes(payload: dict[str, Any]) -> bytes:
    import io

    buf = io.BytesIO()
    torch.save(payload, buf)
    return buf.getvalue()


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``; unreadable or foreign files raise :class:`CheckpointError`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found; check the run directory")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"cannot load checkpoint {path} safely ({first}); delete it to start over or point to another run"
        ) from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an {FORMAT} checkpoint; delete it or use another run directory")
    return ckpt


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
        if saved.get(k) != now.get(k) and k.split(".")[0] not in RESUMABLE_CHANGES and not k.startswith("model_config")
    )
    if diff:
        raise CheckpointError(
            f"checkpoint {path} was written by a trial with other settings ({', '.join(diff)}); "
            "resume with the same config or use a fresh --run-dir"
        )
