"""``mace``: MACE (Batatia et al. 2022, arXiv 2206.07697) built by mace-torch 0.3.16's own model code.

The network is ``mace.modules.ScaleShiftMACE`` exactly as ``mace_run_train --model MACE`` builds it
(``mace/tools/model_script_utils.py``): a ``RealAgnosticInteractionBlock`` first, then
``RealAgnosticResidualInteractionBlock``s, hidden irreps ``num_channels × (0e + 1o + … up to max_l)``, a
symmetric product basis of order ``correlation`` and the non-linear readout, with the shift at 0. The engine's
normalization stands in for mace's E0s and energy scale (``atomic_energies`` zero, ``atomic_inter_scale`` 1):
E = energy_scale · Ê + Σ energy_ref[Z], the same for every family. No weights are downloaded.

mace is fed OUR periodic edges: ``edge_index`` is the engine's [src j; dst i] (mace's [sender; receiver]),
and mace's edge vector x_receiver − x_sender + unit_shift · cell points from j's image to i, so the engine's
integer offset of j's image enters as ``unit_shifts = −edge_shift``. Forces and stress are mace's own autograd
(``compute_force``, ``compute_stress``): F = −∂E/∂x and σ = (1/V) ∂E/∂ε with x → x (I + ε) for positions and
cell alike, ASE's sign, the same definition as :class:`~models.base.Potential`'s (the finite-difference
contract tests check both).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from engine.data.graph import Batch
from models import register
from models.base import MAX_Z, ModelConfig, ModelOutput, Potential
from models.layers import autocast_off

_ENV = "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"


@contextlib.contextmanager
def _quiet_mace():
    """Import or build mace without its side effects on the process.

    ``import mace`` sets TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 for the whole process (e3nn 0.4.4 unpickles its
    own constants file at import): the caller's value is put back after. mace prints a line about
    cuequivariance at import (stdout is the CLIs' output), and e3nn compiles each tensor product with
    TorchScript and warns about it on every build; neither says anything about the model.
    """
    before = os.environ.get(_ENV)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.filterwarnings("ignore", message=r".*(TorchScript|torch\.jit\.script|TORCH_FORCE_NO_WEIGHTS).*")
        try:
            yield
        finally:
            if before is None:
                os.environ.pop(_ENV, None)
            else:
                os.environ[_ENV] = before


with _quiet_mace():
    import mace  # noqa: F401 - before e3nn: its TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD lets e3nn 0.4.4 read its constants
    from e3nn import o3
    from mace import modules as mace_modules


def parse_elements(spec: str) -> list[int]:
    """Atomic numbers from a spec like ``"1-94"`` or ``"13,28-29,46"`` (sorted, each once)."""
    zs: set[int] = set()
    for part in spec.replace(" ", "").split(","):
        match = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if match is None:
            raise ValueError(f"elements: bad item {part!r} in {spec!r}; write e.g. '1-94' or '13,28,29'")
        lo = int(match.group(1))
        hi = int(match.group(2) or lo)
        if not 1 <= lo <= hi < MAX_Z:
            raise ValueError(f"elements: {part!r} is outside 1-{MAX_Z - 1}")
        zs.update(range(lo, hi + 1))
    return sorted(zs)


@dataclass
class MACEConfig(ModelConfig):
    """Size knobs (mace_run_train's names); the rest as mace-torch's defaults. Cutoff (r_max) in Å."""

    num_channels: int = 32
    max_l: int = 1  # --max_L: hidden irreps num_channels × (0e + 1o + … up to max_l)
    correlation: int = 3  # body order − 1 of the product basis
    num_interactions: int = 2
    max_ell: int = 3  # spherical harmonics of the edges
    num_bessel: int = 8
    num_polynomial_cutoff: int = 5
    radial_mlp_width: int = 64  # mace's radial_MLP = [width] * depth
    radial_mlp_depth: int = 3
    mlp_irreps: int = 16  # scalars in the last readout's hidden layer (MLP_irreps "16x0e")
    # each message sum is divided by this (mace_run_train measures it on the training set); the engine's graphs
    # hold the max_neighbors (32) nearest, which dense solids within 5 Å fill
    avg_num_neighbors: float = 32.0
    # the one-hot species: MPtrj, OMat24 and Alexandria hold elements up to Pu; per-element weights (product
    # basis, residual skip) grow with this list, so a study on fewer elements may name them ("13,28,29,…")
    elements: str = "1-94"

    def __post_init__(self) -> None:
        for key in ("num_channels", "correlation", "num_interactions", "num_bessel", "num_polynomial_cutoff",
                    "radial_mlp_width", "radial_mlp_depth", "mlp_irreps"):
            if int(getattr(self, key)) < 1:
                raise ValueError(f"{key} must be ≥ 1, got {getattr(self, key)}")
        if self.max_l < 0 or self.max_ell < max(self.max_l, 1):
            raise ValueError(f"need 0 ≤ max_l ≤ max_ell, max_ell ≥ 1; got max_l {self.max_l}, max_ell {self.max_ell}")
        if self.avg_num_neighbors <= 0:
            raise ValueError(f"avg_num_neighbors must be > 0, got {self.avg_num_neighbors}")
        if self.cutoff <= 0:
            raise ValueError(f"cutoff must be > 0 Å, got {self.cutoff}")
        parse_elements(self.elements)


# channels, max_l, correlation, max_ell, radial MLP (width, depth): 2.5·10⁴ → 1.1·10⁷ parameters at the default
# 94 elements (tests/models/test_mace.py lists them). m5 has the hidden irreps of MACE-MP-0 large (Batatia et al.
# 2023, arXiv 2401.00096: 128x0e+128x1o+128x2e, correlation 3, max_ell 3, radial MLP 64³). At 128 channels
# most weights are per element (the skip tensor products and the product basis), hence the slow growth in L.
_LADDER = [(8, 0, 2, 1, 16, 1), (16, 0, 2, 2, 32, 2), (32, 1, 2, 2, 64, 2), (48, 1, 3, 3, 64, 3),
           (80, 1, 3, 3, 64, 3), (128, 2, 3, 3, 64, 3)]
PRESETS = {
    f"m{k}": {"num_channels": ch, "max_l": L, "correlation": nu, "max_ell": ell, "radial_mlp_width": w,
              "radial_mlp_depth": d}
    for k, (ch, L, nu, ell, w, d) in enumerate(_LADDER)
}


@register("mace", presets=PRESETS)
class MACE(Potential):
    """mace-torch's ScaleShiftMACE behind the contract: energy, conservative forces, strain-derivative stress."""

    force_mode = "conservative"
    config_class = MACEConfig

    def __init__(self, config: MACEConfig) -> None:
        super().__init__(config)
        c = config
        zs = parse_elements(c.elements)
        index = torch.full((MAX_Z,), -1, dtype=torch.long)
        index[zs] = torch.arange(len(zs))
        self.register_buffer("element_index", index, persistent=False)
        self.num_elements = len(zs)
        hidden = o3.Irreps((c.num_channels * o3.Irreps.spherical_harmonics(c.max_l)).sort().irreps.simplify())
        with _quiet_mace():
            self.mace = mace_modules.ScaleShiftMACE(
                r_max=c.cutoff,
                num_bessel=c.num_bessel,
                num_polynomial_cutoff=c.num_polynomial_cutoff,
                max_ell=c.max_ell,
                interaction_cls=mace_modules.interaction_classes["RealAgnosticResidualInteractionBlock"],
                interaction_cls_first=mace_modules.interaction_classes["RealAgnosticInteractionBlock"],
                num_interactions=c.num_interactions,
                num_elements=len(zs),
                hidden_irreps=hidden,
                MLP_irreps=o3.Irreps(f"{c.mlp_irreps}x0e"),
                atomic_energies=np.zeros(len(zs)),
                avg_num_neighbors=c.avg_num_neighbors,
                atomic_numbers=zs,
                correlation=c.correlation,
                gate=mace_modules.gate_dict["silu"],
                radial_MLP=[c.radial_mlp_width] * c.radial_mlp_depth,
                atomic_inter_scale=1.0,
                atomic_inter_shift=0.0,
            )

    def mace_inputs(self, batch: Batch) -> dict[str, torch.Tensor]:
        """mace's ``data`` dict for ``batch``; its positions are a fresh leaf, for mace's autograd."""
        positions = batch.positions.detach()
        species = self.element_index[batch.numbers]
        if bool((species < 0).any()):
            unknown = sorted(set(batch.numbers[species < 0].tolist()))
            raise ValueError(f"mace knows elements {self.config.elements}; the batch has Z = {unknown}")
        ptr = torch.zeros(batch.num_graphs + 1, dtype=torch.long, device=positions.device)
        ptr[1:] = torch.cumsum(batch.n_atoms.to(positions.device), 0)
        return {
            "positions": positions,
            "node_attrs": F.one_hot(species, self.num_elements).to(positions.dtype),
            "edge_index": batch.edge_index,
            "unit_shifts": -batch.edge_shift.to(positions.dtype),
            "cell": batch.cell,
            "batch": batch.batch,
            "ptr": ptr,
        }

    def forward(self, batch: Batch) -> ModelOutput:
        """The contract's outputs from mace's own forward (no ``predict``: mace takes its own derivatives)."""
        dtype = batch.positions.dtype
        # float32/64 throughout: forces and stress are derivatives of the energy (see models.base)
        with autocast_off(batch.positions.device.type):
            out = self.mace(self.mace_inputs(batch), training=self.training, compute_force=True, compute_stress=True)
            scale = self.energy_scale.to(dtype)
            ref = self.energy_ref.to(dtype)[batch.numbers]
            ref_sum = torch.zeros(batch.num_graphs, dtype=dtype, device=ref.device).index_add_(0, batch.batch, ref)
            return ModelOutput(
                energy=out["energy"].to(dtype) * scale + ref_sum,
                forces=out["forces"].to(dtype) * scale,
                stress=out["stress"].to(dtype) * scale,
            )
