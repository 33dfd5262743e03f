"""Mixed precision for every family: fp16 and bf16 CPU autocast against float32.

Every case of the contract (``CASES``: transformer plain and periodic, fcn, schnet,
equiformer_v2, also at the OMat24 graph of 12 Å) runs one batch in float32 and again under
``torch.autocast("cpu", dtype)`` with the same weights and a fitted normalization. Stated
tolerances, as the largest error over the batch divided by the float32 value's RMS (energies
per atom, in units of the fitted energy scale):

- fp16: 2·10⁻² (10-bit mantissa; measured at most 7·10⁻³),
- bf16: 8·10⁻² (8-bit mantissa; measured at most 4·10⁻², equiformer_v2's and the periodic
  transformer's forces, sums over edges that cancel).

Conservative families (forces = −∂E/∂x, stress = (1/V) ∂E/∂ε) compute their energy with
autocast off, so their outputs must equal float32's exactly: a half-precision backward
would put bf16's rounding (measured with autocast on: up to 5 % force and 12 % stress error)
or fp16's underflow into forces and stress.
"""

from __future__ import annotations

import pytest
import torch

from engine.data.normalize import fit_normalization
from models.layers import GaussianBasis, cosine_cutoff, full_precision
from tests.models.conftest import CASES, Case, build_model, emt_records, force_mode, make_batch

TOLERANCE = {torch.float16: 2e-2, torch.bfloat16: 8e-2}
# EquiformerV2 at the OMat24 graph (12 Å, 20 neighbors, non-strict): edges of 7–12 Å, where fp16 solid
# harmonics of the stress head once underflowed to 0 (issue 12)
OMAT_GRAPH = Case(
    "equiformer_v2_12A",
    "equiformer_v2",
    {
        **next(c for c in CASES if c.family == "equiformer_v2").config,
        "num_layers": 1,
        "cutoff": 12.0,
        "max_neighbors": 20,
        "strict_neighbors": False,
    },
)
HALF = [pytest.param(torch.float16, id="fp16"), pytest.param(torch.bfloat16, id="bf16")]


@pytest.fixture(scope="module")
def labelled():
    """Four EMT-labelled Cu/Ni cells (8 atoms each) and the normalization fitted on them."""
    records = emt_records(4, seed=1)
    return records, fit_normalization(records)


def _relative_error(half: torch.Tensor, full: torch.Tensor) -> float:
    rms = full.detach().double().pow(2).mean().sqrt().clamp_min(1e-30)
    return float((half.detach().double() - full.detach().double()).abs().max() / rms)


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in [*CASES, OMAT_GRAPH]])
def test_autocast_matches_float32(case, dtype, labelled):
    records, norm = labelled
    model = build_model(case, torch.float32).eval()
    model.set_normalization(norm)
    batch = make_batch(records, model, torch.float32)
    full = model(batch)
    with torch.autocast("cpu", dtype=dtype):
        half = model(batch)
    outputs = {"energy": (half.energy, full.energy), "forces": (half.forces, full.forces)}
    if full.stress is not None:
        outputs["stress"] = (half.stress, full.stress)
    for name, (h, _) in outputs.items():
        assert h.dtype == torch.float32, f"{name} left the model as {h.dtype}"
        assert torch.isfinite(h).all(), f"{name} is not finite under {dtype}"
    if force_mode(case) == "conservative":
        for name, (h, f) in outputs.items():
            assert torch.equal(h, f), f"{case.id}: conservative {name} must not see autocast"
        return
    n_atoms = batch.n_atoms.to(torch.float64)
    energy_error = float(((half.energy - full.energy).detach().double() / n_atoms).abs().max()) / norm.energy_scale
    errors = {"energy": energy_error, "forces": _relative_error(half.forces, full.forces)}
    if full.stress is not None:
        errors["stress"] = _relative_error(half.stress, full.stress)
    bad = {k: v for k, v in errors.items() if not v <= TOLERANCE[dtype]}
    assert not bad, f"{case.id} under {dtype}: relative errors {bad} above {TOLERANCE[dtype]}"
    assert any(v > 0 for v in errors.values()), "autocast had no effect: the test would not see a regression"


@pytest.mark.parametrize("dtype", HALF)
def test_radial_bases_stay_full_precision_under_autocast(dtype):
    """Gaussians of far neighbors are 1e-9…1e-40: fp16 would flush them to 0, bf16 round the distance."""
    dist = torch.tensor([0.5, 2.0, 4.9, 5.5])
    basis = GaussianBasis(0.0, 5.0, 8, width_factor=0.5)
    expected_rbf, expected_fc = basis(dist), cosine_cutoff(dist, 5.0)
    assert ((expected_rbf > 0) & (expected_rbf < 6e-8)).any()  # below fp16's smallest subnormal
    with torch.autocast("cpu", dtype=dtype):
        rbf, fc = basis(dist), cosine_cutoff(dist, 5.0)
        from_half = basis(dist.to(dtype))
    assert rbf.dtype == fc.dtype == from_half.dtype == torch.float32
    torch.testing.assert_close(rbf, expected_rbf, rtol=0, atol=0)
    torch.testing.assert_close(fc, expected_fc, rtol=0, atol=0)


def test_full_precision_keeps_float64():
    @full_precision
    def square(x: torch.Tensor) -> torch.Tensor:
        return x @ x

    x = torch.eye(3, dtype=torch.float64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert square(x).dtype == torch.float64
        assert square(x.float()).dtype == torch.float32  # autocast would have made this matmul bf16
