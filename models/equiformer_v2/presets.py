"""Size presets of ``equiformer_v2``: the published OMat24 sizes and a CPU ladder for the params axis.

eqV2-S/M/L are the OMat24 configs (Barroso-Luque et al. 2024, arXiv 2410.12771, Table 8; fairchem
``configs/omat24/all/eqV2_{31M,86M,153M}.yml``): reference trainable counts with the energy, force
and stress heads 31,207,434 / 86,589,068 / 153,769,868.

The ladder ``e0``…``e6`` spans ~10⁴ to ~10⁷ parameters by growing layers, channels, heads and
lmax/mmax together (as the seed study's 20 sizes did, arXiv 2509.21811), at the published graph
(20 neighbors, 12 Å, non-strict). Trainable parameters with all three heads: e0 16,964; e1 69,400;
e2 218,733; e3 617,738; e4 1,721,506; e5 3,687,498; e6 11,849,482 (tests/models/test_equiformer_v2.py).
"""

from __future__ import annotations

_OMAT = {
    "cutoff": 12.0,
    "max_neighbors": 20,
    "strict_neighbors": False,
    "max_num_elements": 96,
    "avg_num_nodes": 1.0,  # published 31.17; see EquiformerV2Config (the engine's energy unit is per atom)
    "avg_degree": 61.95,
    "sphere_channels": 128,
    "attn_hidden_channels": 64,
    "num_heads": 8,
    "attn_alpha_channels": 64,
    "attn_value_channels": 16,
    "ffn_hidden_channels": 128,
    "edge_channels": 128,
    "grid_resolution": 18,
}


def _rung(layers: int, channels: int, heads: int, lmax: int, mmax: int, edge: int, grid: int) -> dict:
    return {
        **_OMAT,
        "num_layers": layers,
        "sphere_channels": channels,
        "attn_hidden_channels": max(channels // 2, 4),
        "num_heads": heads,
        "attn_alpha_channels": max(channels // 2, 4),
        "attn_value_channels": max(channels // (2 * heads), 2),
        "ffn_hidden_channels": channels,
        "edge_channels": edge,
        "lmax": lmax,
        "mmax": mmax,
        "grid_resolution": grid,
    }


PRESETS: dict[str, dict] = {
    # CPU ladder, small → large
    "e0": _rung(layers=1, channels=8, heads=1, lmax=2, mmax=1, edge=4, grid=12),
    "e1": _rung(layers=2, channels=16, heads=2, lmax=2, mmax=2, edge=8, grid=12),
    "e2": _rung(layers=2, channels=24, heads=2, lmax=3, mmax=2, edge=16, grid=14),
    "e3": _rung(layers=2, channels=32, heads=4, lmax=4, mmax=2, edge=32, grid=18),
    "e4": _rung(layers=3, channels=48, heads=4, lmax=4, mmax=2, edge=48, grid=18),
    "e5": _rung(layers=4, channels=64, heads=4, lmax=4, mmax=2, edge=64, grid=18),
    "e6": _rung(layers=6, channels=96, heads=6, lmax=4, mmax=2, edge=96, grid=18),
    # published OMat24 sizes
    "eqV2-S": {**_OMAT, "num_layers": 8, "lmax": 4, "mmax": 2},
    "eqV2-M": {**_OMAT, "num_layers": 10, "lmax": 6, "mmax": 4},
    "eqV2-L": {**_OMAT, "num_layers": 20, "lmax": 6, "mmax": 3},
}
