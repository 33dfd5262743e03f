"""Sampling SO(3) features on an equiangular S² grid and projecting back (the "S² grid" of EquiformerV2).

Grid: polar angles β_i = π(i + ½)/N_β (from the z axis), azimuths α_j = 2πj/N_α. Values on the grid
use e3nn's "component" scaling (each degree has unit variance on the sphere when coefficients do):
f(p) = Σ_lm c_lm Y_lm(p) / sqrt((2l+1)(lmax+1)). The projection back integrates against Y_lm with
Fejér's first quadrature rule in cos β (exact for polynomials of degree < N_β; Fejér 1933) and the
trapezoid rule in α, so for band-limited f the round trip is the identity.

Pointwise functions on the grid (SiLU, the grid MLP) are equivariant only up to the grid's
sampling error, which falls as the resolution grows (Liao et al. 2023, arXiv 2306.12059, §3.2).

Speed: to-grid → SiLU → from-grid on edge features is the largest tensor of the model (E·C·N_β·N_α
values). :func:`grid_silu` runs it in row chunks that stay in cache and keeps no grid-sized tensor for
the backward pass (it recomputes each chunk's grid values there), in one GEMM per chunk.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from models.equiformer_v2.so3 import CoefficientLayout, _ConstCache, spherical_harmonics


def fejer_weights(n: int) -> np.ndarray:
    """Fejér's first rule on the midpoints θ_k = π(k+½)/n: Σ_k w_k g(cos θ_k) ≈ ∫_0^π g(cos θ) sin θ dθ."""
    theta = np.pi * (np.arange(n) + 0.5) / n
    j = np.arange(1, n // 2 + 1)
    s = (np.cos(2 * np.outer(theta, j)) / (4 * j**2 - 1)).sum(axis=1)
    return (2.0 / n) * (1.0 - 2.0 * s)


class SphereGrid:
    """To-grid and from-grid matrices between |m| ≤ mmax coefficients (R) and the N_β·N_α grid points.

    Degrees l > mmax are scaled by sqrt((2l+1)/(2·mmax+1)) in both directions, matching the
    truncated edge-frame features of EquiformerV2.
    """

    def __init__(self, lmax: int, mmax: int, res_beta: int, res_alpha: int, m_major: bool = False) -> None:
        if res_beta < lmax + 1 or res_alpha < 2 * mmax + 1:
            raise ValueError(f"grid {res_beta}×{res_alpha} too coarse for lmax={lmax}, mmax={mmax}")
        self.lmax, self.mmax, self.res_beta, self.res_alpha = lmax, mmax, res_beta, res_alpha
        layout = CoefficientLayout(lmax, mmax)
        beta = math.pi * (torch.arange(res_beta, dtype=torch.float64, device="cpu") + 0.5) / res_beta
        alpha = 2 * math.pi * torch.arange(res_alpha, dtype=torch.float64, device="cpu") / res_alpha
        b, a = torch.meshgrid(beta, alpha, indexing="ij")
        pts = torch.stack([b.sin() * a.cos(), b.sin() * a.sin(), b.cos()], dim=-1)
        y = spherical_harmonics(lmax, pts).index_select(-1, layout.full_index)  # (Nβ, Nα, R)
        deg = torch.tensor([lval for lval, _ in layout.reduced], dtype=torch.float64, device="cpu")
        scale = torch.sqrt((2 * deg + 1) * (lmax + 1))
        rescale = layout.rotate_inv_rescale
        to_grid = y / scale * rescale
        w = torch.from_numpy(fejer_weights(res_beta)).view(-1, 1, 1) * (2 * math.pi / res_alpha)
        # c_lm = sqrt((2l+1)(lmax+1)) / (4π) ∫ f Y_lm dΩ (Y component-normalized, ∫ Y² dΩ = 4π)
        from_grid = w * y * scale / (4 * math.pi) * rescale
        n_points = res_beta * res_alpha
        to_grid, from_grid = to_grid.reshape(n_points, -1), from_grid.reshape(n_points, -1)
        if m_major:  # coefficients in the m-major order of the edge frame (``CoefficientLayout.to_m``)
            to_grid, from_grid = to_grid.index_select(1, layout.to_m), from_grid.index_select(1, layout.to_m)
        self.m_major = m_major
        self._const = _ConstCache(
            to_grid=to_grid,
            from_grid=from_grid.t().contiguous(),
            to_grid_t=to_grid.t().contiguous(),  # (R, P): channel-first GEMMs of grid_silu
            from_grid_t_rest=from_grid[:, 1:].contiguous(),  # (P, R−1): from-grid without the l = 0 slot
        )

    def matrices(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N_β·N_α, R) to-grid and (R, N_β·N_α) from-grid matrices in ``like``'s dtype and device."""
        c = self._const.get(like.dtype, like.device)
        return c["to_grid"], c["from_grid"]

    def to_grid(self, x: torch.Tensor) -> torch.Tensor:
        """(n, R, C) coefficients → (n, N_β·N_α, C) values."""
        to_grid, _ = self.matrices(x)
        return torch.matmul(to_grid, x)

    def from_grid(self, g: torch.Tensor) -> torch.Tensor:
        """(n, N_β·N_α, C) values → (n, R, C) coefficients."""
        _, from_grid = self.matrices(g)
        return torch.matmul(from_grid, g)

    def silu_rest(self, x: torch.Tensor) -> torch.Tensor:
        """(n, R, C) → (n, R−1, C): coefficients of SiLU of the grid values, every slot but l = 0 (slot 0)."""
        c = self._const.get(_compute_dtype(x), x.device)
        if torch.compiler.is_compiling():  # one fused graph; the chunk loop would be unrolled
            g = torch.matmul(x.transpose(1, 2), c["to_grid_t"].to(x.dtype))
            return torch.matmul(F.silu(g), c["from_grid_t_rest"].to(g.dtype)).transpose(1, 2)
        return _GridSiLU.apply(x, c["to_grid_t"], c["from_grid_t_rest"])


_CHUNK_ROWS = 1024  # rows (edge × channel) per chunk: a 1024 × N_β·N_α grid block stays in cache


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype autocast would run a matmul of ``x`` in (``x``'s own dtype when autocast is off)."""
    device = x.device.type
    if torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return x.dtype


class _GridSiLU(torch.autograd.Function):
    """y = SiLU(x·A)·B row-chunked, with x (n, R, C) read channel-first as (n·C, R); grid values recomputed
    in backward. A (R, P), B (P, R') are constants (no gradient). Output (n, R', C) in A's dtype."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        n, r, c = x.shape
        with torch.autocast(x.device.type, enabled=False):
            x2 = x.transpose(1, 2).reshape(n * c, r).to(a.dtype)
            out = x2.new_empty(n * c, b.shape[1])
            for s in range(0, n * c, _CHUNK_ROWS):
                g = torch.mm(x2[s : s + _CHUNK_ROWS], a)
                torch.mm(F.silu(g, inplace=True), b, out=out[s : s + _CHUNK_ROWS])
        ctx.save_for_backward(x2, a, b)
        ctx.shape, ctx.in_dtype = (n, r, c), x.dtype
        return out.view(n, c, -1).transpose(1, 2)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        x2, a, b = ctx.saved_tensors
        n, r, c = ctx.shape
        with torch.autocast(x2.device.type, enabled=False):
            g_out = grad.transpose(1, 2).reshape(n * c, -1).to(a.dtype)
            a_t, b_t = a.t(), b.t()
            grad_x = x2.new_empty(n * c, r)
            for s in range(0, n * c, _CHUNK_ROWS):
                g = torch.mm(x2[s : s + _CHUNK_ROWS], a)
                gy = torch.ops.aten.silu_backward(torch.mm(g_out[s : s + _CHUNK_ROWS], b_t), g)
                torch.mm(gy, a_t, out=grad_x[s : s + _CHUNK_ROWS])
        return grad_x.view(n, c, r).transpose(1, 2).to(ctx.in_dtype), None, None


def default_resolution(lmax: int, mmax: int) -> tuple[int, int]:
    """Grid size when ``grid_resolution`` is None: the minimum for a round trip (as in EquiformerV2)."""
    res_beta = 2 * (lmax + 1)
    res_alpha = 2 * (mmax + 1) + 1 if lmax == mmax else 2 * mmax + 1
    return res_beta, res_alpha
