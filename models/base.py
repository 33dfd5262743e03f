"""The model contract every family implements.

A model is a :class:`Potential`: an ``nn.Module`` with a typed size config and a declared
force mode. Subclasses implement :meth:`Potential.predict`, which works in *normalized*
units (see :class:`Normalization`); :meth:`Potential.forward` turns that into physical
units and, for conservative models, takes forces and stress by autograd:

    E [eV]       = energy_scale · ê + Σ_atoms energy_ref[Z]
    F [eV/Å]     = forces_scale · f̂                (direct)   or  −∂E/∂positions (conservative)
    σ [eV/Å³]    = stress_scale · ŝ                (direct)   or  (1/V) ∂E/∂ε    (conservative)

The stress sign is ASE's: σ = (1/V) ∂E/∂ε with ε the symmetric strain applied to
positions and cell alike (x → x (I + ε)).

Mixed precision (the loop's ``amp``): geometry, energy references, forces and stress are always
computed in the input's precision (float32/64), never in fp16/bf16. Direct models run
``predict`` under the caller's autocast. Conservative models run it with autocast off: their
forces and stress are derivatives of the energy, and a half-precision backward would carry
bf16's 8-bit mantissa (measured on fcn and schnet under bf16 autocast: forces off by up to 5 %,
stress by up to 12 % of their RMS) and fp16's underflow below 6·10⁻⁸ into them.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import nn

from engine.data.graph import Batch, EdgeGeometry, edge_geometry
from engine.data.normalize import MAX_Z, Normalization  # the container lives with its fitter (data → models)
from models.layers import autocast_off

ForceMode = Literal["direct", "conservative"]
__all__ = ["MAX_Z", "ForceMode", "ModelConfig", "ModelOutput", "Normalization", "Potential", "RawOutput"]


@dataclass
class ModelOutput:
    """Physical outputs: energy [eV per structure] (B,), forces [eV/Å] (N, 3), stress [eV/Å³] (B, 3, 3) or None."""

    energy: torch.Tensor
    forces: torch.Tensor
    stress: torch.Tensor | None


@dataclass
class RawOutput:
    """What :meth:`Potential.predict` returns, in normalized units.

    ``energy`` (B,) is ê; ``forces`` (N, 3) is f̂ and ``stress`` (B, 3, 3) is ŝ for direct
    models (``None`` for conservative ones, whose forces and stress come from autograd).
    """

    energy: torch.Tensor
    forces: torch.Tensor | None = None
    stress: torch.Tensor | None = None


@dataclass
class ModelConfig:
    """Base of every family's typed size config. Graph knobs live here so the data
    pipeline knows which neighbor lists to build."""

    cutoff: float = 5.0  # Å
    max_neighbors: int = 32  # nearest first; 0 = no cap
    strict_neighbors: bool = True  # False: keep ties out to d(max_neighbors+1)+0.01 Å² (OMat24 eqV2)


class Potential(nn.Module):
    """Base class: handles units, strain and autograd; subclasses implement ``predict``."""

    force_mode: ClassVar[ForceMode] = "direct"
    predicts_stress: ClassVar[bool] = True
    # whether ``predict`` runs under the caller's autocast; None: direct models yes, conservative no
    autocast_predict: ClassVar[bool | None] = None
    config_class: ClassVar[type[ModelConfig]] = ModelConfig
    name: ClassVar[str] = ""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        norm = Normalization.identity()
        self.register_buffer("energy_ref", torch.tensor(norm.energy_ref, dtype=torch.float64))
        self.register_buffer("energy_scale", torch.tensor(1.0, dtype=torch.float64))
        self.register_buffer("forces_scale", torch.tensor(1.0, dtype=torch.float64))
        self.register_buffer("stress_scale", torch.tensor(1.0, dtype=torch.float64))

    # -- normalization -------------------------------------------------------------
    def set_normalization(self, norm: Normalization) -> None:
        dev = self.energy_ref.device
        self.energy_ref.copy_(torch.tensor(norm.energy_ref, dtype=torch.float64, device=dev))
        self.energy_scale.fill_(float(norm.energy_scale))
        self.forces_scale.fill_(float(norm.forces_scale))
        self.stress_scale.fill_(float(norm.stress_scale))

    def get_normalization(self) -> Normalization:
        return Normalization(
            energy_ref=self.energy_ref.tolist(),
            energy_scale=float(self.energy_scale),
            forces_scale=float(self.forces_scale),
            stress_scale=float(self.stress_scale),
        )

    # -- the contract ----------------------------------------------------------------
    def predict(self, batch: Batch, geometry: EdgeGeometry) -> RawOutput:
        raise NotImplementedError

    def forward(self, batch: Batch) -> ModelOutput:
        conservative = self.force_mode == "conservative"
        positions, cell = batch.positions, batch.cell
        strain = None
        # geometry keeps the input precision under autocast (bf16 edge vectors would be off by ~0.05 Å)
        with torch.autocast(positions.device.type, enabled=False):
            if conservative:
                positions = positions.detach().requires_grad_(True)
                strain = torch.zeros(batch.num_graphs, 3, 3, dtype=positions.dtype, device=positions.device)
                strain.requires_grad_(True)
                sym = 0.5 * (strain + strain.transpose(1, 2))
                deform = torch.eye(3, dtype=positions.dtype, device=positions.device) + sym
                positions = torch.bmm(positions.unsqueeze(1), deform[batch.batch]).squeeze(1)
                cell = torch.bmm(cell, deform)
            geometry = edge_geometry(batch, positions=positions, cell=cell)
        use_autocast = (not conservative) if self.autocast_predict is None else self.autocast_predict
        with contextlib.nullcontext() if use_autocast else autocast_off(positions.device.type):
            raw = self.predict(batch, geometry)
        with autocast_off(positions.device.type):
            return self._physical(batch, raw, positions, strain, cell)

    def _physical(
        self,
        batch: Batch,
        raw: RawOutput,
        positions: torch.Tensor,
        strain: torch.Tensor | None,
        cell: torch.Tensor,
    ) -> ModelOutput:
        """Normalized → physical units in the input's precision (float32/64), autograd for conservative models."""
        dtype = torch.promote_types(raw.energy.dtype, batch.positions.dtype)  # total energies never in bf16/fp16
        ref = self.energy_ref.to(dtype)[batch.numbers]
        ref_sum = torch.zeros(batch.num_graphs, dtype=dtype, device=ref.device).index_add_(0, batch.batch, ref)
        energy = raw.energy.to(dtype) * self.energy_scale.to(dtype) + ref_sum
        if strain is not None:
            grads = torch.autograd.grad(
                energy.sum(), [positions, strain], create_graph=self.training, allow_unused=True
            )
            forces = -grads[0] if grads[0] is not None else torch.zeros_like(positions)
            stress = None
            if self.predicts_stress:
                volume = torch.linalg.det(cell).abs().view(-1, 1, 1)
                stress = grads[1] / volume if grads[1] is not None else torch.zeros_like(cell)
            return ModelOutput(energy=energy, forces=forces, stress=stress)
        assert raw.forces is not None, f"{type(self).__name__} is direct but predict() returned no forces"
        forces = raw.forces.to(dtype) * self.forces_scale.to(dtype)
        stress = raw.stress.to(dtype) * self.stress_scale.to(dtype) if raw.stress is not None else None
        return ModelOutput(energy=energy, forces=forces, stress=stress)

    # -- private random streams ------------------------------------------------------
    def generators(self) -> dict[str, torch.Generator]:
        """Random generators the model owns besides torch's global one (e.g. EquiformerV2's edge rolls), by name.

        Exact resume and exact cooldown branches need every random stream: the loop saves :meth:`rng_state` in
        the checkpoint and in a branch's snapshot, and evaluation runs from :meth:`seed_generators` with the
        training state put back after (:func:`engine.loop.loop.evaluate`). A family with a private generator
        overrides this; the default has none.
        """
        return {}

    def rng_state(self) -> dict[str, torch.Tensor]:
        """The state of each of :meth:`generators` (CPU byte tensors: a ``weights_only`` checkpoint holds them)."""
        return {name: gen.get_state() for name, gen in self.generators().items()}

    def set_rng_state(self, state: dict[str, torch.Tensor]) -> None:
        """Put back states from :meth:`rng_state`; a generator missing from ``state`` keeps its own."""
        for name, gen in self.generators().items():
            if name in state:
                gen.set_state(state[name].to("cpu", torch.uint8))

    def seed_generators(self, seed: int) -> None:
        """Reseed every generator of :meth:`generators` (a fixed stream, e.g. for repeatable evaluation)."""
        for gen in self.generators().values():
            gen.manual_seed(int(seed))

    # -- bookkeeping -----------------------------------------------------------------
    def num_parameters(self) -> int:
        """Trainable parameters (the N of a parameter-scaling law)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)
