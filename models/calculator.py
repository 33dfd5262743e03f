"""A trained engine checkpoint as an ASE calculator.

    from models.calculator import EngineCalculator
    atoms.calc = EngineCalculator("sweeps/<sweep>/<trial>/checkpoint.pt")
    atoms.get_potential_energy()  # eV
    atoms.get_forces()            # eV/Å, (n, 3)
    atoms.get_stress()            # eV/Å³, Voigt-6 (xx, yy, zz, yz, xz, xy), ASE sign

Checkpoints are read with ``torch.load(..., weights_only=True)``: only plain types and
tensors, never arbitrary pickled objects (unpickling can run code). The model is rebuilt from
the registry by name and config, loaded with its EMA weights when the checkpoint has them, and
evaluated in float64 so that molecular dynamics conserves energy as well as the model allows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes

import models
from engine.data.graph import GraphSpec, collate, neighbor_graph
from engine.data.records import Record, tensor_to_voigt
from engine.errors import CheckpointError, ConfigError, DataError
from engine.loop.checkpoint import FILENAME, FORMAT
from models.base import Normalization, Potential

# what rebuilding the model needs (the loop's checkpoint.py lists the full format)
REQUIRED_KEYS = ("format", "model", "model_config", "normalization", "model_state")


def _not_engine(path: Path, why: str) -> CheckpointError:
    return CheckpointError(
        f"{path} is not a trained engine checkpoint ({why}); refusing to unpickle arbitrary objects — "
        "pass a checkpoint.pt written by `python -m engine.train` or `python -m engine.scale`"
    )


def read_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint dict safely (``weights_only=True``) and check its format.

    ``path`` is a ``checkpoint.pt`` file or a trial folder holding one.
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
        raise _not_engine(p, f"it does not load with weights_only=True: {first[:160]}") from exc
    if not isinstance(ckpt, dict):
        raise _not_engine(p, f"it holds a {type(ckpt).__name__}, not a dict")
    missing = [k for k in REQUIRED_KEYS if k not in ckpt]
    if missing:
        raise _not_engine(p, f"missing key(s) {', '.join(missing)}")
    if ckpt["format"] != FORMAT:
        raise _not_engine(p, f"format {ckpt['format']!r}, expected {FORMAT!r}")
    return ckpt


def _strip_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop a DDP/compile wrapper prefix (``module.`` / ``_orig_mod.``) from state-dict keys."""
    out = {}
    for key, value in state.items():
        for prefix in ("module.", "_orig_mod."):
            if key.startswith(prefix):
                key = key[len(prefix) :]
        out[key] = value
    return out


def _describe_mismatch(model: Potential, state: dict[str, torch.Tensor]) -> str:
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
    if shapes:
        k = shapes[0]
        parts.append(f"{len(shapes)} of another shape (e.g. {k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)})")
    return ", ".join(parts) or "tensors do not load"


def load_potential(
    path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float64, use_ema: bool = True
) -> Potential:
    """Rebuild the trained model of a checkpoint, in eval mode on ``device`` in ``dtype``.

    Uses the EMA weights when the checkpoint has them (and ``use_ema``). Raises
    :class:`CheckpointError` for a file that is not an engine checkpoint, names an unknown model,
    or whose weights do not fit the model and config it names.
    """
    p = Path(path)
    ckpt = read_checkpoint(p)
    name = ckpt["model"]
    cfg_dict = ckpt["model_config"]
    if not isinstance(name, str) or not isinstance(cfg_dict, dict):
        raise _not_engine(p, "its 'model' is not a name or its 'model_config' is not a dict")
    try:
        config = models.config_from_dict(name, cfg_dict)
        model = models.build(name, config)
    except ConfigError as exc:
        raise CheckpointError(f"checkpoint {p} names model {name!r} that cannot be built here: {exc}") from exc

    state = _strip_prefix(dict(ckpt["model_state"]))
    ema = ckpt.get("ema_state")
    if use_ema and ema:
        state.update(_strip_prefix(dict(ema)))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(
            f"weights in {p} do not fit model {name!r} with config {cfg_dict}: {_describe_mismatch(model, state)}; "
            f"the checkpoint is from another model or config — use the checkpoint of a {name} trial"
        ) from exc
    norm = ckpt["normalization"]
    if isinstance(norm, dict):
        model.set_normalization(Normalization(**norm))
    model.to(device=device, dtype=dtype)
    model.eval()
    return model


def graph_spec(model: Potential) -> GraphSpec:
    """The neighbor list a model was trained on (cutoff Å, cap, strictness) from its config."""
    cfg = model.config
    return GraphSpec(cutoff=float(cfg.cutoff), max_neighbors=int(cfg.max_neighbors), strict=bool(cfg.strict_neighbors))


class EngineCalculator(Calculator):
    """ASE calculator around a trained :class:`~models.base.Potential` (any registered family).

    ``model`` is a checkpoint path (file or trial folder) or an already built Potential (used
    as given: call ``.double()`` yourself for float64). Results: ``energy`` and ``free_energy``
    [eV], ``forces`` [eV/Å] (n, 3), ``stress`` [eV/Å³] Voigt-6 in ASE's sign and order (only
    for fully periodic cells and models that predict stress).
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress"]  # noqa: RUF012 - ASE's API

    def __init__(self, model: Potential | str | Path, device: str | torch.device = "cpu", **kwargs: object) -> None:
        super().__init__(**kwargs)
        if isinstance(model, (str, Path)):
            model = load_potential(model, device=device)
        self.model: Potential = model
        self.device = torch.device(device)
        self.spec = graph_spec(model)
        self.dtype = next((t.dtype for t in model.parameters() if t.is_floating_point()), torch.float64)

    def _batch(self, atoms):
        pbc = np.asarray(atoms.get_pbc(), dtype=bool)
        if pbc.any() and not pbc.all():
            raise DataError(f"mixed periodicity pbc={pbc.tolist()} is not supported; set atoms.pbc all True or False")
        record = Record(
            numbers=atoms.get_atomic_numbers(),
            positions=atoms.get_positions(),
            cell=np.asarray(atoms.get_cell()),
            pbc=pbc,
            uid="ase-calculator",
        )
        graph = neighbor_graph(record, self.spec)
        return collate([record], [graph], dtype=self.dtype).to(self.device)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        periodic = bool(np.all(self.atoms.get_pbc()))
        if "stress" in properties and not periodic:
            raise PropertyNotImplementedError("stress needs a fully periodic cell (atoms.pbc = True)")
        batch = self._batch(self.atoms)
        needs_grad = self.model.force_mode == "conservative"
        with torch.set_grad_enabled(needs_grad):
            out = self.model(batch)
        energy = float(out.energy.detach()[0])
        self.results = {
            "energy": energy,
            "free_energy": energy,
            "forces": out.forces.detach().cpu().numpy().astype(np.float64).reshape(-1, 3),
        }
        if periodic and out.stress is not None:
            sigma = out.stress.detach()[0].cpu().numpy().astype(np.float64)
            self.results["stress"] = tensor_to_voigt(0.5 * (sigma + sigma.T))
        elif "stress" in properties:
            raise PropertyNotImplementedError(f"model {self.model.name!r} does not predict stress")
