"""A trained engine checkpoint as an ASE calculator.

    from models.calculator import EngineCalculator
    atoms.calc = EngineCalculator("sweeps/<sweep>/<trial>/checkpoint.pt")
    atoms.calc = EngineCalculator("runs:/<run_id>", tracking_uri="sqlite:///mlflow.db")  # a trial's MLflow run
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
from models.base import Normalization, Potential
from models.checkpoint import FILENAME, not_engine_checkpoint, read_trained

MLFLOW_SCHEMES = ("runs:/", "models:/", "mlflow-artifacts:/")


def is_mlflow_uri(source: object) -> bool:
    """True for an MLflow artifact URI (``runs:/<run_id>``, ``models:/<name>/<version>``, ...)."""
    return isinstance(source, str) and source.startswith(MLFLOW_SCHEMES)


def read_checkpoint(path: str | Path, tracking_uri: str | None = None) -> dict:
    """Load a checkpoint dict safely (``weights_only=True``) and check its format.

    ``path`` is a ``checkpoint.pt`` file, a trial folder holding one, or an MLflow URI: ``runs:/<run_id>``
    (the trial run's ``checkpoint.pt`` artifact), ``runs:/<run_id>/<artifact path>`` or
    ``models:/<name>/<version>``, read from ``tracking_uri`` (default ``$MLFLOW_TRACKING_URI`` or
    ``sqlite:///./mlflow.db``).
    """
    if is_mlflow_uri(path):
        return _read_from_mlflow(str(path), tracking_uri)
    return read_trained(path)


def _read_from_mlflow(uri: str, tracking_uri: str | None) -> dict:
    """Download the checkpoint artifact into a temporary folder, read it into memory, delete the copy."""
    import tempfile

    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    from engine.paths import default_tracking_uri, with_postgres_driver

    store = with_postgres_driver(tracking_uri or default_tracking_uri())
    artifact = uri.rstrip("/")
    if uri.startswith("runs:/") and artifact.count("/") == 1:  # runs:/<run_id>: the trial's checkpoint
        artifact = f"{artifact}/{FILENAME}"
    with tempfile.TemporaryDirectory(prefix="engine-ckpt-") as tmp:
        try:
            if artifact.startswith("models:/"):  # the version's source in this store's registry, not the global one
                artifact = _registered_source(artifact, store)
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=artifact, dst_path=tmp, tracking_uri=store))
        except (MlflowException, OSError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise CheckpointError(
                f"cannot fetch checkpoint {artifact} from MLflow store {store} ({first[:200]}); check the run id "
                "(or registered model name and version) and --tracking-uri (the run must be a trial of a sweep "
                "that logged its artifacts)"
            ) from exc
        return read_trained(local)


def _registered_source(uri: str, store: str) -> str:
    """``models:/<name>/<version>`` (or ``/latest``, or ``models:/<name>@<alias>``) → where that version's files
    are (its trial run's artifact root, engine.sweep.registry), looked up in the registry of ``store``."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=store, registry_uri=store)
    rest = uri.removeprefix("models:/").strip("/")
    if "@" in rest:
        name, alias = rest.split("@", 1)
        version = client.get_model_version_by_alias(name, alias).version
    else:
        name, _, version = rest.rpartition("/")
        if version == "latest":
            version = max((v.version for v in client.search_model_versions(f"name = '{name}'")), key=int, default="")
    return client.get_model_version_download_uri(name, str(version))


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
    path: str | Path,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float64,
    use_ema: bool = True,
    tracking_uri: str | None = None,
) -> Potential:
    """Rebuild the trained model of a checkpoint, in eval mode on ``device`` in ``dtype``.

    ``path`` is anything :func:`read_checkpoint` takes (a file, a trial folder, ``runs:/<run_id>``).
    Uses the EMA weights when the checkpoint has them (and ``use_ema``). Raises
    :class:`CheckpointError` for a file that is not an engine checkpoint, names an unknown model,
    or whose weights do not fit the model and config it names.
    """
    p = path if is_mlflow_uri(path) else Path(path)
    ckpt = read_checkpoint(p, tracking_uri=tracking_uri)
    name = ckpt["model"]
    cfg_dict = ckpt["model_config"]
    if not isinstance(name, str) or not isinstance(cfg_dict, dict):
        raise not_engine_checkpoint(p, "its 'model' is not a name or its 'model_config' is not a dict")
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

    ``model`` is a checkpoint path (file or trial folder), a trial's MLflow run as ``runs:/<run_id>``
    (read from ``tracking_uri``, default ``$MLFLOW_TRACKING_URI`` or ``sqlite:///./mlflow.db``), or an
    already built Potential (used as given: call ``.double()`` yourself for float64). Results:
    ``energy`` and ``free_energy`` [eV], ``forces`` [eV/Å] (n, 3), ``stress`` [eV/Å³] Voigt-6 in ASE's
    sign and order (only for fully periodic cells and models that predict stress).
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress"]  # noqa: RUF012 - ASE's API

    def __init__(
        self,
        model: Potential | str | Path,
        device: str | torch.device = "cpu",
        tracking_uri: str | None = None,
        **kwargs: object,
    ) -> None:
        super().__init__(**kwargs)
        if isinstance(model, (str, Path)):
            model = load_potential(model, device=device, tracking_uri=tracking_uri)
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
