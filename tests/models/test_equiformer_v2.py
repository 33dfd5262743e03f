"""EquiformerV2: SO(3) machinery, symmetries, published parameter counts, and a loss that falls.

Symmetry tests run on random periodic Cu/Ni cells in float64. With ``exact_equivariant_gate`` the
model is exactly equivariant (≤ 1e-9 relative); with the S² grid as published it is equivariant up
to the grid's sampling error, which must fall as ``grid_resolution`` grows.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

import models
from engine.data.records import Record
from engine.errors import ConfigError
from models.equiformer_v2.grid import SphereGrid
from models.equiformer_v2.heads import l2_basis
from models.equiformer_v2.model import EquiformerV2Config
from models.equiformer_v2.so3 import CoefficientLayout, edge_rotation, spherical_harmonics, wigner_d
from tests.models.conftest import make_batch, random_cell

REFERENCE_COUNTS = {"eqV2-S": 31_207_434, "eqV2-M": 86_589_068, "eqV2-L": 153_769_868}


def tiny(lmax: int, mmax: int, **over) -> dict:
    cfg = dict(
        num_layers=2,
        sphere_channels=8,
        attn_hidden_channels=8,
        num_heads=2,
        attn_alpha_channels=4,
        attn_value_channels=4,
        ffn_hidden_channels=8,
        edge_channels=8,
        lmax=lmax,
        mmax=mmax,
        cutoff=5.0,
        max_neighbors=12,
        grid_resolution=18,
    )
    cfg.update(over)
    return cfg


def build(cfg: dict, seed: int = 0):
    torch.manual_seed(seed)
    return models.build("equiformer_v2", cfg).double().eval()


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    return q if np.linalg.det(q) > 0 else -q


@pytest.fixture(scope="module")
def structures() -> list[Record]:
    rng = np.random.default_rng(3)
    out = []
    for rep in [(1, 1, 2), (1, 2, 1)]:
        a = random_cell(rng, rep)
        out.append(Record(numbers=a.numbers, positions=a.positions, cell=a.cell.array, pbc=a.pbc))
    return out


def _run(model, records):
    with torch.no_grad():
        return model(make_batch(records, model))


def rotation_errors(model, records, rng) -> tuple[float, float, float]:
    """Relative errors of E invariance, F and σ equivariance under a random rotation."""
    rot = random_rotation(rng)
    rotated = [
        Record(numbers=r.numbers, positions=r.positions @ rot.T, cell=r.cell @ rot.T, pbc=r.pbc) for r in records
    ]
    a, b = _run(model, records), _run(model, rotated)
    q = torch.tensor(rot)
    e = float((b.energy - a.energy).abs().max() / a.energy.abs().max())
    f = float((b.forces - a.forces @ q.T).norm() / a.forces.norm())
    s = float((b.stress - q @ a.stress @ q.T).norm() / a.stress.norm())
    return e, f, s


def assert_same(a, b, tol: float) -> None:
    for x, y in [(a.energy, b.energy), (a.forces, b.forces), (a.stress, b.stress)]:
        assert float((x - y).abs().max()) <= tol * max(float(x.abs().max()), 1e-30)


def exact_symmetry_checks(model, records, rng, tol: float) -> None:
    """Translation, atom permutation and choice of periodic image leave the outputs unchanged."""
    base = _run(model, records)
    shifted = [
        Record(numbers=r.numbers, positions=r.positions + rng.normal(size=3) * 3.0, cell=r.cell, pbc=r.pbc)
        for r in records
    ]
    assert_same(base, _run(model, shifted), tol)
    # other periodic images: move every atom by a random integer combination of lattice vectors
    imaged = [
        Record(
            numbers=r.numbers,
            positions=r.positions + rng.integers(-2, 3, size=(r.n_atoms, 3)) @ r.cell,
            cell=r.cell,
            pbc=r.pbc,
        )
        for r in records
    ]
    assert_same(base, _run(model, imaged), tol)
    perms = [rng.permutation(r.n_atoms) for r in records]
    permuted = [
        Record(numbers=r.numbers[p], positions=r.positions[p], cell=r.cell, pbc=r.pbc) for r, p in zip(records, perms)
    ]
    out = _run(model, permuted)
    inverse = torch.from_numpy(
        np.concatenate([np.argsort(p) + o for p, o in zip(perms, np.cumsum([0] + [r.n_atoms for r in records[:-1]]))])
    )
    assert float((out.energy - base.energy).abs().max()) <= tol * float(base.energy.abs().max())
    assert float((out.forces[inverse] - base.forces).abs().max()) <= tol * float(base.forces.abs().max())
    assert float((out.stress - base.stress).abs().max()) <= tol * float(base.stress.abs().max())


# -- SO(3) machinery --------------------------------------------------------------------------------
def test_wigner_d_rotates_spherical_harmonics_float64() -> None:
    rng = np.random.default_rng(0)
    rot = torch.tensor(np.stack([random_rotation(rng) for _ in range(4)]))
    vec = torch.randn(50, 3, dtype=torch.float64)
    d = wigner_d(6, rot)
    y = spherical_harmonics(6, vec)
    for k in range(4):
        lhs = spherical_harmonics(6, vec @ rot[k].T)
        assert torch.allclose(lhs, y @ d[k].T, atol=1e-12)
        assert torch.allclose(d[k] @ d[k].T, torch.eye(49, dtype=torch.float64), atol=1e-12)
    for lval in range(7):  # component normalization: Σ_m Y_lm² = 2l+1
        block = y[:, lval**2 : (lval + 1) ** 2]
        assert torch.allclose(block.pow(2).sum(-1), torch.full((50,), 2.0 * lval + 1, dtype=torch.float64))


def test_edge_rotation_aligns_edges_with_z() -> None:
    vec = torch.randn(100, 3, dtype=torch.float64)
    rot = edge_rotation(vec, torch.rand(100, dtype=torch.float64) * 6.3)
    unit = vec / vec.norm(dim=-1, keepdim=True)
    assert torch.allclose(torch.einsum("eij,ej->ei", rot, unit), torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64))
    assert torch.allclose(torch.linalg.det(rot), torch.ones(100, dtype=torch.float64))


def test_grid_round_trip_is_identity_for_band_limited_features() -> None:
    grid = SphereGrid(4, 4, 18, 18)
    x = torch.randn(3, 25, 5, dtype=torch.float64)
    assert torch.allclose(grid.from_grid(grid.to_grid(x)), x, atol=1e-12)


def test_layout_and_stress_basis() -> None:
    layout = CoefficientLayout(4, 2)
    assert layout.num_reduced == 1 + 3 + 5 + 5 + 5 and layout.m_size == [5, 4, 3]
    assert sorted(layout.to_m.tolist()) == list(range(layout.num_reduced))
    basis = l2_basis()
    gram = torch.einsum("aij,bij->ab", basis, basis)
    assert torch.allclose(gram, torch.eye(5, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(basis, basis.transpose(1, 2)) and torch.allclose(
        torch.einsum("mii->m", basis), torch.zeros(5, dtype=torch.float64)
    )


# -- symmetries ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("lmax", "mmax"), [(2, 1), (4, 2), (6, 3)])
def test_exact_gate_is_equivariant_to_1e9(structures, lmax: int, mmax: int) -> None:
    model = build(tiny(lmax, mmax, exact_equivariant_gate=True))
    rng = np.random.default_rng(lmax)
    for _ in range(2):
        assert max(rotation_errors(model, structures, rng)) <= 1e-9
    exact_symmetry_checks(model, structures, rng, tol=1e-10)


@pytest.mark.parametrize(("lmax", "mmax"), [(2, 1), (4, 2)])
def test_s2_grid_equivariant_to_1e3_at_preset_resolution(structures, lmax: int, mmax: int) -> None:
    model = build(tiny(lmax, mmax))
    errors = rotation_errors(model, structures, np.random.default_rng(lmax))
    assert max(errors) <= 1e-3, errors


@pytest.mark.parametrize(("lmax", "mmax"), [(4, 2), (6, 3)])
def test_s2_grid_error_falls_with_resolution(structures, lmax: int, mmax: int) -> None:
    errors = []
    for res in (14, 18, 24, 36):
        model = build(tiny(lmax, mmax, grid_resolution=res))
        errors.append(max(rotation_errors(model, structures, np.random.default_rng(0))))
    assert all(b < a for a, b in itertools.pairwise(errors)), errors
    assert errors[-1] <= 1e-5, errors
    # lmax 6 on the published 18×18 grid is the coarsest case (~1e-2 at init). The reference has the same
    # sampling error there (fairchem-core 1.10.0 EquiformerV2, float64: 5e-3 to 2e-2 relative force error at
    # lmax 6/grid 18, ≤ 1.6e-3 at 24), so ≤ 1e-3 is asserted from 24×24 up, where it holds.
    assert errors[2] <= 1e-3, errors


@pytest.mark.parametrize("lmax", [2, 4, 6])
def test_s2_grid_is_exactly_invariant_to_translation_permutation_image(structures, lmax: int) -> None:
    # a fixed frame per edge vector ("none") so that edge order cannot change the random rolls
    model = build(tiny(lmax, min(lmax, 3), edge_roll="none"))
    exact_symmetry_checks(model, structures, np.random.default_rng(11), tol=1e-10)


def test_random_edge_roll_is_seeded_and_only_moves_outputs_at_grid_error(structures) -> None:
    a, b = build(tiny(4, 2)), build(tiny(4, 2))
    out_a, out_b = _run(a, structures), _run(b, structures)
    assert torch.equal(out_a.forces, out_b.forces)  # same seed → same rolls
    again = _run(a, structures)  # next draw of rolls
    assert float((again.forces - out_a.forces).norm() / out_a.forces.norm()) < 1e-3


def test_gate_activation_switch_is_exactly_equivariant(structures) -> None:
    # use_gate_act (published switch) with the non-grid FFN: no grid anywhere, so exact without the test switch
    model = build(tiny(4, 2, use_gate_act=True, use_grid_mlp=False))
    assert max(rotation_errors(model, structures, np.random.default_rng(5))) <= 1e-9


def test_separable_s2_ffn_switch_runs_and_is_equivariant_to_grid_error(structures) -> None:
    model = build(tiny(4, 2, use_grid_mlp=False))
    assert max(rotation_errors(model, structures, np.random.default_rng(6))) <= 1e-3


def test_state_dict_round_trip_with_weights_only(structures, tmp_path) -> None:
    model = build(tiny(2, 1, exact_equivariant_gate=True))
    torch.save({"model_state": model.state_dict()}, tmp_path / "checkpoint.pt")
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)["model_state"]
    other = build(tiny(2, 1, exact_equivariant_gate=True), seed=1)
    other.load_state_dict(state)
    assert_same(_run(model, structures), _run(other, structures), 1e-12)


# -- fast paths against their plain formulas ----------------------------------------------------------
def test_chunked_grid_silu_equals_plain_formula_and_gradient() -> None:
    # 400 × 3 = 1200 rows: crosses the 1024-row chunk boundary; m-major columns as the attention uses them
    grid = SphereGrid(4, 2, 18, 18, m_major=True)
    x = torch.randn(400, 19, 3, dtype=torch.float64, requires_grad=True)
    fast = grid.silu_rest(x)
    plain = grid.from_grid(torch.nn.functional.silu(grid.to_grid(x)))[:, 1:]
    torch.testing.assert_close(fast, plain, rtol=1e-12, atol=1e-12)
    w = torch.randn_like(plain)
    (g_fast,) = torch.autograd.grad((fast * w).sum(), x)
    (g_plain,) = torch.autograd.grad((plain * w).sum(), x)
    torch.testing.assert_close(g_fast, g_plain, rtol=1e-12, atol=1e-12)


def test_m_major_frames_and_gather_pair_match_plain_formulas() -> None:
    from models.equiformer_v2.attention import gather_pair
    from models.equiformer_v2.so3 import edge_frames

    layout = CoefficientLayout(4, 2)
    rot = edge_rotation(torch.randn(7, 3, dtype=torch.float64), None)
    frames = edge_frames(layout, rot)
    d = wigner_d(4, rot)
    rows = layout.full_index[layout.to_m]  # m-major slot k ↔ full-layout coefficient
    torch.testing.assert_close(frames.to_edge, d[:, rows], rtol=0, atol=1e-14)
    x0 = torch.randn(7, 5, 2, dtype=torch.float64)  # m = 0 slots lead the m-major order
    padded = torch.cat([x0, x0.new_zeros(7, layout.num_reduced - 5, 2)], dim=1)
    torch.testing.assert_close(frames.rotate_back_m0(x0), frames.rotate_back(padded), rtol=0, atol=1e-14)
    x = torch.randn(5, 25, 3, dtype=torch.float64, requires_grad=True)
    edge_index = torch.tensor([[0, 1, 4, 4, 2], [1, 1, 0, 3, 2]])
    fast = gather_pair(x, edge_index)
    plain = torch.cat([x[edge_index[0]], x[edge_index[1]]], dim=2)
    assert torch.equal(fast, plain)
    w = torch.randn_like(plain)
    torch.testing.assert_close(
        torch.autograd.grad((fast * w).sum(), x)[0], torch.autograd.grad((plain * w).sum(), x)[0], rtol=0, atol=1e-14
    )


# -- mixed precision -----------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_stress_head_edge_weights_survive_half_autocast(dtype) -> None:
    """Issue 12: under fp16 the l > 0 solid harmonics of a (7, 5, 8) Å edge were exactly 0 (~1e-3 in fp32)."""
    from models.equiformer_v2.heads import Rank2StressHead

    head = Rank2StressHead(sphere_channels=4, lmax=4)
    vec = torch.tensor([[7.0, 5.0, 8.0], [0.5, -1.2, 2.0]])
    full = head.edge_weights(vec)
    with torch.autocast("cpu", dtype=dtype):
        half = head.edge_weights(vec)
        sh = spherical_harmonics(4, vec, normalize=False)
    assert half.dtype == sh.dtype == torch.float32
    assert (half[:, 1:].abs() > 1e-6).all(), half
    torch.testing.assert_close(half, full, rtol=0, atol=0)
    torch.testing.assert_close(sh, spherical_harmonics(4, vec, normalize=False), rtol=0, atol=0)


# -- torch.compile ------------------------------------------------------------------------------------
def test_compiled_blocks_trace_without_graph_breaks_and_match_eager(structures) -> None:
    from engine.data.graph import edge_geometry

    cfg = tiny(2, 1, edge_roll="none", alpha_drop=0.0, drop_path_rate=0.0, grid_resolution=8)
    model = models.build("equiformer_v2", {**cfg, "compile": True})
    assert all(b._compiled_call_impl is not None for b in model.blocks)
    eager = models.build("equiformer_v2", cfg)
    eager.load_state_dict(model.state_dict())  # compile leaves the state dict's keys unchanged
    batch = make_batch(structures, eager, dtype=torch.float32)
    geo = edge_geometry(batch)
    frames, dist = eager._frames(geo.vec), eager.distance_expansion(geo.dist)
    x = torch.randn(batch.num_atoms, 9, 8, requires_grad=True)
    args = (batch.numbers, dist, batch.edge_index, frames, batch.batch, batch.num_graphs)
    block = eager.blocks[0]
    # fullgraph=True raises on any graph break; the eager backend runs the traced graph without codegen
    compiled = torch.compile(block, backend="eager", fullgraph=True)
    y_eager, y_comp = block(x, *args), compiled(x, *args)
    torch.testing.assert_close(y_comp, y_eager, rtol=1e-5, atol=1e-6)
    w = torch.randn_like(y_eager)
    torch.testing.assert_close(
        torch.autograd.grad((y_comp * w).sum(), x)[0],
        torch.autograd.grad((y_eager * w).sum(), x)[0],
        rtol=1e-5,
        atol=1e-6,
    )


# -- sizes and configs --------------------------------------------------------------------------------
@pytest.mark.parametrize("preset", sorted(REFERENCE_COUNTS))
def test_published_parameter_counts(preset: str) -> None:
    with torch.device("meta"):
        model = models.build("equiformer_v2", preset=preset)
    n = model.num_parameters()
    assert abs(n - REFERENCE_COUNTS[preset]) <= 0.005 * REFERENCE_COUNTS[preset], n


def test_eqv2_s_head_breakdown() -> None:
    with torch.device("meta"):
        model = models.build("equiformer_v2", preset="eqV2-S")

    def count(module) -> int:
        return sum(p.numel() for p in module.parameters())

    heads = {"energy": model.energy_head, "forces": model.force_head, "stress": model.stress_head}
    assert {k: count(v) for k, v in heads.items()} == {"energy": 148_353, "forces": 3_130_881, "stress": 132_616}
    assert model.num_parameters() - sum(count(v) for v in heads.values()) == 27_795_584


def test_cpu_ladder_spans_1e4_to_1e7() -> None:
    ladder = [k for k in models.presets("equiformer_v2") if k.startswith("e") and k[1:].isdigit()]
    assert len(ladder) >= 6
    counts = []
    for name in ladder:
        with torch.device("meta"):
            counts.append(models.build("equiformer_v2", preset=name).num_parameters())
    assert counts == sorted(counts)
    assert counts[0] < 3e4 and counts[-1] > 1e7


def test_config_errors_name_the_fix() -> None:
    with pytest.raises(ConfigError, match="unknown equiformer_v2 config key"):
        models.config_from_dict("equiformer_v2", {"lmax_list": [4]})
    with pytest.raises(ConfigError, match="mmax"):
        models.config_from_dict("equiformer_v2", {"lmax": 2, "mmax": 3})
    cfg = EquiformerV2Config(max_radius=6.0)
    assert cfg.cutoff == 6.0 and cfg.max_radius == 6.0 and not cfg.strict_neighbors


def test_element_outside_embedding_table_is_a_user_error(structures) -> None:
    model = build(tiny(2, 1, max_num_elements=20))
    with pytest.raises(ConfigError, match="max_num_elements"):
        _run(model, structures)


# -- training -----------------------------------------------------------------------------------------
def test_loss_falls_on_emt_for_smallest_ladder_size(emt_set) -> None:
    from engine.data.normalize import fit_normalization

    torch.manual_seed(0)
    model = models.build("equiformer_v2", {"cutoff": 6.0}, preset="e0")
    model.set_normalization(fit_normalization(emt_set))
    batch = make_batch(emt_set, model, dtype=torch.float32)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    n_atoms = batch.n_atoms.to(torch.float32)

    def loss_fn() -> torch.Tensor:
        out = model(batch)
        e = ((out.energy - batch.energy) / n_atoms / model.energy_scale.float()).pow(2).mean()
        f = ((out.forces - batch.forces) / model.forces_scale.float()).pow(2).mean()
        s = ((out.stress - batch.stress) / model.stress_scale.float()).pow(2).mean()
        return e + f + s

    model.train()
    losses = []
    for _ in range(25):
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert np.isfinite(losses).all()
    assert np.mean(losses[-5:]) < 0.6 * losses[0], losses
