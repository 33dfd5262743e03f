"""The engine's checkpoint file: its fixed format, atomic writes and safe reads.

One home for the file both sides use: the training loop writes it (and adds its resume state,
``engine.loop.checkpoint``), the ASE calculator and the report read it. It sits in ``models`` so
that the calculator never imports the loop (data → models → loop).

``checkpoint.pt`` holds only plain types and tensors, so ``torch.load(path, weights_only=True)``
reads it without unpickling code:

    {"format": "engine-checkpoint/1", "model", "model_config", "normalization", "model_state",
     "ema_state", "optimizer_state", "scheduler_state", "scaler_state", "epoch", "step",
     "flops_cum", "wall_s", "rng", "trial_config", "metrics_history"}

Writes go to a temporary file in the same folder, then ``os.replace``: a crash mid-write
leaves the previous checkpoint intact.
"""

from __future__ import annotations

import io
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import torch

from engine.errors import CheckpointError

FORMAT = "engine-checkpoint/1"
FILENAME = "checkpoint.pt"
REQUIRED_KEYS = (
    "format", "model", "model_config", "normalization", "model_state", "ema_state", "optimizer_state",
    "scheduler_state", "scaler_state", "epoch", "step", "flops_cum", "wall_s", "rng", "trial_config",
    "metrics_history",
)  # fmt: skip
MODEL_KEYS = ("format", "model", "model_config", "normalization", "model_state")  # what rebuilding the model needs


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


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Atomically write ``payload`` (must hold every key of the fixed format)."""
    missing = [k for k in REQUIRED_KEYS if k not in payload]
    if missing:
        raise ValueError(f"checkpoint payload lacks {missing}")
    buf = io.BytesIO()
    torch.save(payload, buf)
    path = Path(path)
    atomic_write_bytes(path, buf.getvalue())
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint to resume from, ``weights_only=True``; unreadable or foreign files raise
    :class:`CheckpointError` (worded for a run directory: delete it or use another)."""
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


def not_engine_checkpoint(path: Path, why: str) -> CheckpointError:
    """The error for a file that is not a trained engine checkpoint (refusing to unpickle it)."""
    return CheckpointError(
        f"{path} is not a trained engine checkpoint ({why}); refusing to unpickle arbitrary objects — "
        "pass a checkpoint.pt written by `python -m engine.train` or `python -m engine.scale`"
    )


def read_trained(path: str | Path) -> dict[str, Any]:
    """Read a trained model's checkpoint (a ``checkpoint.pt`` or a trial folder holding one) for inference.

    Loads with ``weights_only=True`` and checks the format and the keys rebuilding the model needs;
    anything else raises :class:`CheckpointError` worded for someone loading a model.
    """
    p = Path(path)
    if p.is_dir():
        p = p / FILENAME
    if not p.is_file():
        raise CheckpointError(f"checkpoint {p} not found; pass the checkpoint.pt of a finished trial")
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError, RuntimeError (not a zip/pickle), EOFError, ...
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise not_engine_checkpoint(p, f"it does not load with weights_only=True: {first[:160]}") from exc
    if not isinstance(ckpt, dict):
        raise not_engine_checkpoint(p, f"it holds a {type(ckpt).__name__}, not a dict")
    missing = [k for k in MODEL_KEYS if k not in ckpt]
    if missing:
        raise not_engine_checkpoint(p, f"missing key(s) {', '.join(missing)}")
    if ckpt["format"] != FORMAT:
        raise not_engine_checkpoint(p, f"format {ckpt['format']!r}, expected {FORMAT!r}")
    return ckpt
