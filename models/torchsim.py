"""Any engine model as a torch-sim model: batched relaxations and MD on many cells at once.

    from models.torchsim import EngineTorchSimModel
    import torch_sim as ts
    model = EngineTorchSimModel("sweeps/<sweep>/trials/<trial>/checkpoint.pt")   # or a built Potential
    relaxed = ts.optimize(system=[atoms1, atoms2], model=model, optimizer=ts.frechet_cell_fire)

torch-sim (PyPI ``torch-sim-atomistic``, an optional extra: ``pip install -e '.[torchsim]'``) drives
every model through one ``ModelInterface``: ``forward(state) -> {"energy" (B,) eV, "forces" (N, 3) eV/Å,
"stress" (B, 3, 3) eV/Å³}``. Its cells are stored column-wise; ``state.row_vector_cell`` holds the
lattice vectors as rows, the engine's (and ASE's) convention. Its stress sign is ASE's, as here.
Neighbor lists are rebuilt every call (positions move), with the cutoff and cap the model was trained on.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch_sim.models.interface import ModelInterface

from engine.data.graph import collate, neighbor_graph
from engine.data.records import Record
from engine.errors import DataError
from models.base import Potential
from models.calculator import graph_spec, load_potential


class EngineTorchSimModel(ModelInterface):
    """A trained :class:`~models.base.Potential` behind torch-sim's ``ModelInterface``.

    ``model`` is a checkpoint (file, trial folder) or a built Potential (moved to ``device``
    and ``dtype``). float64 is the default, as in :class:`~models.calculator.EngineCalculator`.
    """

    def __init__(
        self,
        model: Potential | str | Path,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float64,
        compute_stress: bool = True,
    ) -> None:
        super().__init__()
        if isinstance(model, (str, Path)):
            model = load_potential(model, device=device, dtype=dtype)
        self.model = model.to(device=device, dtype=dtype).eval()
        self.spec = graph_spec(model)
        self._device = torch.device(device)
        self._dtype = dtype
        self._compute_forces = True
        self._compute_stress = bool(compute_stress)
        # a fixed neighbor cap bounds memory per atom; a radial cutoff alone scales with density
        self._memory_scales_with = "n_atoms" if self.spec.max_neighbors > 0 else "n_atoms_x_density"

    @staticmethod
    def _records(
        positions: np.ndarray, cells: np.ndarray, numbers: np.ndarray, system_idx: np.ndarray, pbc: bool
    ) -> list[Record]:
        counts = np.bincount(system_idx, minlength=cells.shape[0])
        bounds = np.concatenate([[0], np.cumsum(counts)])
        return [
            Record(
                numbers=numbers[bounds[s] : bounds[s + 1]],
                positions=positions[bounds[s] : bounds[s + 1]],
                cell=cells[s],
                pbc=np.full(3, pbc),
                uid=f"torch-sim-{s}",
            )
            for s in range(cells.shape[0])
        ]

    def forward(self, state, **kwargs) -> dict[str, torch.Tensor]:
        """Energies, forces and (when asked) stresses of every system in ``state`` (a SimState or dict)."""
        get = state.get if isinstance(state, dict) else lambda k: getattr(state, k)
        positions = get("positions")
        numbers = get("atomic_numbers")
        system_idx = get("system_idx")
        cell = get("cell") if isinstance(state, dict) else state.row_vector_cell
        if cell.ndim == 2:
            cell = cell.unsqueeze(0)
        if system_idx is None:
            system_idx = torch.zeros(positions.shape[0], dtype=torch.long, device=positions.device)
        pbc = bool(get("pbc")) if not isinstance(get("pbc"), torch.Tensor) else bool(get("pbc").all())
        if numbers is None:
            raise DataError("torch-sim state has no atomic_numbers; the engine's models need the elements")
        records = self._records(
            positions.detach().cpu().double().numpy(),
            cell.detach().cpu().double().numpy(),
            numbers.detach().cpu().numpy(),
            system_idx.detach().cpu().numpy(),
            pbc,
        )
        graphs = [neighbor_graph(r, self.spec) for r in records]
        batch = collate(records, graphs, dtype=self._dtype).to(self._device)
        with torch.set_grad_enabled(self.model.force_mode == "conservative"):
            out = self.model(batch)
        result = {"energy": out.energy.detach(), "forces": out.forces.detach()}
        if self._compute_stress:
            if out.stress is None or not pbc:
                raise DataError(
                    f"model {self.model.name!r} gives no stress here: it needs a periodic cell and a stress head; "
                    "pass compute_stress=False"
                )
            sigma = out.stress.detach()
            result["stress"] = 0.5 * (sigma + sigma.transpose(-1, -2))
        return result
