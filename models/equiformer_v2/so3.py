"""SO(3) features: real spherical harmonics, the coefficient layout, Wigner-D matrices, edge frames.

Features are arrays ``(n, (lmax+1)², C)`` of real spherical-harmonic coefficients, index
``l² + l + m`` for degree l and order m ∈ [−l, l]. Inside the SO(2) convolutions only orders
|m| ≤ mmax are kept (the "reduced" layout of eSCN, Passaro & Zitnick 2023, arXiv 2302.03655).

Conventions (ours, self-consistent; e3nn/fairchem use the y axis as pole instead of z):
- ``spherical_harmonics`` uses z as the polar axis and *component* normalization
  (Σ_m Y_lm(r̂)² = 2l+1), no Condon–Shortley phase; order m > 0 ↔ cos(mφ), m < 0 ↔ sin(|m|φ).
- ``wigner_d(R)`` is defined by Y(R r) = D(R) Y(r); a feature x transforms as x → D(R) x when the
  structure is rotated by R. D is computed from the rotation of the harmonics themselves:
  D^l(R) = Y^l(R P) · Y^l(P)⁺ for a fixed, well-conditioned point set P — exact in exact arithmetic,
  float64-capable, differentiable, and free of Euler-angle singularities.
- Harmonics, Wigner matrices and edge frames run with autocast off, in float32 or float64.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache

import numpy as np
import torch
from torch import nn

from models.layers import full_precision


def num_coefficients(lmax: int) -> int:
    return (lmax + 1) ** 2


def degree_of_coefficients(lmax: int) -> list[int]:
    """Degree l of every coefficient in the full layout."""
    return [lval for lval in range(lmax + 1) for _ in range(2 * lval + 1)]


@full_precision  # solid harmonics grow as |r|^l: fp16 overflows (12 Å, l = 6: 3·10⁶), bf16 loses 3 digits
def spherical_harmonics(lmax: int, vec: torch.Tensor, normalize: bool = True) -> torch.Tensor:
    """Real spherical harmonics (component normalization) of ``vec`` (..., 3) → (..., (lmax+1)²).

    With ``normalize=False`` these are the solid harmonics |r|^l Y_lm(r̂) (homogeneous polynomials).
    Built from the stable three-term recursion of the associated Legendre functions written as
    polynomials in (x, y, z) (e.g. Varshalovich et al., *Quantum Theory of Angular Momentum*, §5.2).
    """
    if normalize:
        vec = vec / torch.linalg.norm(vec, dim=-1, keepdim=True).clamp_min(1e-12)
    x, y, z = vec[..., 0], vec[..., 1], vec[..., 2]
    r2 = x * x + y * y + z * z
    # (x + i y)^m = C_m + i S_m
    cos_m = [torch.ones_like(x)]
    sin_m = [torch.zeros_like(x)]
    for m in range(1, lmax + 1):
        cos_m.append(x * cos_m[m - 1] - y * sin_m[m - 1])
        sin_m.append(x * sin_m[m - 1] + y * cos_m[m - 1])
    # pbar[l][m]: associated Legendre P_l^m / sin^m θ as a homogeneous polynomial (solid form)
    pbar: dict[tuple[int, int], torch.Tensor] = {}
    for m in range(lmax + 1):
        pbar[(m, m)] = torch.full_like(x, float(_double_factorial(2 * m - 1)))
        if m + 1 <= lmax:
            pbar[(m + 1, m)] = (2 * m + 1) * z * pbar[(m, m)]
        for lval in range(m + 2, lmax + 1):
            pbar[(lval, m)] = ((2 * lval - 1) * z * pbar[(lval - 1, m)] - (lval + m - 1) * r2 * pbar[(lval - 2, m)]) / (
                lval - m
            )
    out = []
    for lval in range(lmax + 1):
        for m in range(-lval, lval + 1):
            am = abs(m)
            ratio = math.factorial(lval - am) / math.factorial(lval + am)
            norm = math.sqrt((2 * lval + 1) * (2.0 if am else 1.0) * ratio)
            trig = cos_m[am] if m >= 0 else sin_m[am]
            out.append(norm * pbar[(lval, am)] * trig)
    return torch.stack(out, dim=-1)


def _double_factorial(n: int) -> int:
    return 1 if n <= 0 else n * _double_factorial(n - 2)


@cache
def _sample_points(lmax: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Fixed point set P (3, K) and per-degree right pseudo-inverses of Y^l(P), in float64."""
    k = 2 * (2 * lmax + 1)
    rng = np.random.default_rng(20230612)
    best = None
    for _ in range(20):  # keep the best-conditioned of a few draws
        p = rng.normal(size=(k, 3))
        p /= np.linalg.norm(p, axis=1, keepdims=True)
        y = spherical_harmonics(lmax, torch.from_numpy(p)).cpu().numpy().T  # ((lmax+1)², K)
        conds = [np.linalg.cond(y[lval**2 : (lval + 1) ** 2]) for lval in range(lmax + 1)]
        if best is None or max(conds) < best[0]:
            best = (max(conds), p, y)
    _, p, y = best
    pinvs = [np.linalg.pinv(y[lval**2 : (lval + 1) ** 2]) for lval in range(lmax + 1)]  # (K, 2l+1)
    return p.T.copy(), pinvs


class _ConstCache:
    """Float64 master copies of constant tensors, cast once per (dtype, device) on demand.

    Kept out of the state dict (they are recomputed from the config) and never rounded through
    float32, so a float64 model is float64 all the way.
    """

    def __init__(self, **tensors: torch.Tensor) -> None:
        self._master = {k: v.to(torch.float64) if v.is_floating_point() else v for k, v in tensors.items()}
        self._cast: dict[tuple, dict[str, torch.Tensor]] = {}

    def get(self, dtype: torch.dtype, device: torch.device) -> dict[str, torch.Tensor]:
        key = (dtype, str(device))
        if key not in self._cast:
            self._cast[key] = {
                k: v.to(device=device, dtype=dtype if v.is_floating_point() else v.dtype)
                for k, v in self._master.items()
            }
        return self._cast[key]


@full_precision
def wigner_d(lmax: int, rot: torch.Tensor) -> torch.Tensor:
    """Block-diagonal real Wigner-D matrices (E, (lmax+1)², (lmax+1)²) of rotations ``rot`` (E, 3, 3)."""
    p, pinvs = _sample_points(lmax)
    pts = torch.as_tensor(p, dtype=rot.dtype, device=rot.device)
    y_rot = spherical_harmonics(lmax, torch.matmul(rot, pts).transpose(1, 2))  # (E, K, F)
    n = num_coefficients(lmax)
    out = rot.new_zeros(rot.shape[0], n, n)
    for lval in range(lmax + 1):
        s = slice(lval**2, (lval + 1) ** 2)
        pinv = torch.as_tensor(pinvs[lval], dtype=rot.dtype, device=rot.device)  # (K, 2l+1)
        out[:, s, s] = torch.matmul(y_rot[:, :, s].transpose(1, 2), pinv)
    return out


@full_precision
def edge_rotation(vec: torch.Tensor, roll: torch.Tensor | None = None) -> torch.Tensor:
    """Rotations R (E, 3, 3) with R·r̂ = ẑ for each edge vector, then a roll ``roll`` (E,) [rad] about ẑ.

    The frame's in-plane axes come from a helper axis (the coordinate axis least aligned with r̂);
    eSCN outputs do not depend on this choice (nor on the roll) beyond the S² grid's sampling error.
    """
    r = vec / torch.linalg.norm(vec, dim=-1, keepdim=True)
    helper_idx = torch.argmin(r.abs(), dim=-1)
    helper = torch.nn.functional.one_hot(helper_idx, 3).to(r.dtype)
    e1 = helper - (helper * r).sum(-1, keepdim=True) * r
    e1 = e1 / torch.linalg.norm(e1, dim=-1, keepdim=True)
    e2 = torch.linalg.cross(r, e1, dim=-1)
    if roll is not None:
        c, s = torch.cos(roll).unsqueeze(-1), torch.sin(roll).unsqueeze(-1)
        e1, e2 = c * e1 + s * e2, -s * e1 + c * e2
    return torch.stack([e1, e2, r], dim=1)  # rows: e1, e2, r̂ → maps r̂ to ẑ, right-handed


class CoefficientLayout:
    """Index bookkeeping between the full layout, the |m| ≤ mmax reduced layout, and m-major order.

    m-major order (eSCN): m = 0 for l = 0..lmax, then for m = 1..mmax the +m coefficients
    (l = m..lmax) followed by the −m coefficients (l = m..lmax).
    """

    def __init__(self, lmax: int, mmax: int) -> None:
        if not 0 <= mmax <= lmax:
            raise ValueError(f"need 0 ≤ mmax ≤ lmax, got lmax={lmax}, mmax={mmax}")
        self.lmax, self.mmax = lmax, mmax
        self.reduced: list[tuple[int, int]] = [
            (lval, m) for lval in range(lmax + 1) for m in range(-min(lval, mmax), min(lval, mmax) + 1)
        ]
        pos = {lm: k for k, lm in enumerate(self.reduced)}
        order = [(lval, 0) for lval in range(lmax + 1)]
        for m in range(1, mmax + 1):
            order += [(lval, m) for lval in range(m, lmax + 1)]
            order += [(lval, -m) for lval in range(m, lmax + 1)]
        self.m_size = [lmax + 1 - m for m in range(mmax + 1)]
        to_m = [pos[lm] for lm in order]
        from_m = [0] * len(to_m)
        for k, j in enumerate(to_m):
            from_m[j] = k
        full = [lval * lval + lval + m for lval, m in self.reduced]
        self.full_index = torch.tensor(full, dtype=torch.long, device="cpu")
        self.to_m = torch.tensor(to_m, dtype=torch.long, device="cpu")
        self.from_m = torch.tensor(from_m, dtype=torch.long, device="cpu")
        # Rotating back from the truncated frame: boost l > mmax by sqrt((2l+1)/(2mmax+1)) (as in EquiformerV2)
        self.rotate_inv_rescale = torch.tensor(
            [math.sqrt((2 * lval + 1) / (2 * mmax + 1)) if lval > mmax else 1.0 for lval, _ in self.reduced],
            dtype=torch.float64,
            device="cpu",
        )
        # Edge-frame features are kept in m-major order end to end (rotation → SO(2) convs → rotation back),
        # so no per-layer permutation is needed: full-layout index, degree and rescale of each m-major slot.
        self.m_major = order
        self.m_major_full_index = self.full_index.index_select(0, self.to_m)
        self.m_major_degree = [lval for lval, _ in order]
        self.m_major_rescale = self.rotate_inv_rescale.index_select(0, self.to_m)

    @property
    def num_reduced(self) -> int:
        return len(self.reduced)


@dataclass
class EdgeFrames:
    """Per-edge Wigner-D restricted to the |m| ≤ mmax coefficients, rows in m-major order.

    ``to_edge`` (E, R, F) and ``from_edge`` (E, F, R); ``lmax1`` = lmax + 1, the number of m = 0 slots,
    which lead the m-major order (so ``from_edge[:, :, :lmax1]`` rotates m = 0 features back).
    """

    to_edge: torch.Tensor
    from_edge: torch.Tensor
    lmax1: int

    def rotate(self, x: torch.Tensor) -> torch.Tensor:
        """Full-layout edge features (E, F, C) → edge frame, m-major reduced layout (E, R, C)."""
        return torch.bmm(self.to_edge, x)

    def rotate_back(self, x: torch.Tensor) -> torch.Tensor:
        """Edge-frame m-major features (E, R, C) → global frame, full layout (E, F, C)."""
        return torch.bmm(self.from_edge, x)

    def rotate_back_m0(self, x: torch.Tensor) -> torch.Tensor:
        """Edge-frame m = 0 features (E, lmax+1, C), all other orders zero → global frame (E, F, C)."""
        return torch.bmm(self.from_edge[:, :, : self.lmax1], x)


@full_precision
def edge_frames(layout: CoefficientLayout, rot: torch.Tensor) -> EdgeFrames:
    d = wigner_d(layout.lmax, rot)
    to_edge = d.index_select(1, layout.m_major_full_index.to(rot.device))
    rescale = layout.m_major_rescale.to(device=rot.device, dtype=rot.dtype)
    from_edge = to_edge.transpose(1, 2) * rescale.view(1, 1, -1)
    return EdgeFrames(to_edge=to_edge.contiguous(), from_edge=from_edge.contiguous(), lmax1=layout.lmax + 1)


class SO3Linear(nn.Module):
    """Equivariant linear map: one (C_out × C_in) matrix per degree l, bias on l = 0 only."""

    def __init__(self, in_features: int, out_features: int, lmax: int) -> None:
        super().__init__()
        self.in_features, self.out_features, self.lmax = in_features, out_features, lmax
        bound = 1.0 / math.sqrt(in_features)
        self.weight = nn.Parameter(torch.empty(lmax + 1, out_features, in_features).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.zeros(out_features))
        self.register_buffer(
            "expand_index", torch.tensor(degree_of_coefficients(lmax), dtype=torch.long), persistent=False
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight.index_select(0, self.expand_index)  # (F, C_out, C_in)
        out = torch.einsum("nfi,foi->nfo", x, weight)
        return torch.cat([out[:, :1] + self.bias.view(1, 1, -1), out[:, 1:]], dim=1)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, lmax={self.lmax}"
