"""Fixed sin-cos position embeddings computed for the actual token grid.

The official release uses 1-D sin-cos over each modality's flattened token sequence (in encoder
and decoder); `factorised` concatenates 1-D sin-cos codes of each grid axis instead (t, h, w for
video; time, frequency for audio). The channel layout of a 1-D code is `halves` ([sin | cos], as
MAE) or `interleaved` (sin on even channels, cos on odd: the official release's
`sinusoidal_init`); the frequencies are the same, 10000^(-2k/dim). Nothing is sized in advance: a 5 s clip or 32 frames get the
embeddings of their own grid, so inputs of any length work.
"""

from __future__ import annotations

import math

import torch


def sincos_1d(positions: torch.Tensor, dim: int, layout: str = "halves") -> torch.Tensor:
    """(N,) positions -> (N, dim) with w_k = 10000^(-2k/dim) (Vaswani):
    halves [sin(p w_0), ..., sin(p w_{d/2-1}), cos(p w_0), ...]; interleaved [sin(p w_0), cos(p w_0), ...]."""
    omega = torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0)
    omega = 1.0 / 10000.0 ** omega                       # (dim/2,)
    angles = positions.to(torch.float64)[:, None] * omega[None, :]
    sin, cos = torch.sin(angles), torch.cos(angles)      # (N, dim/2) each
    if layout == "interleaved":
        return torch.stack([sin, cos], dim=2).reshape(len(positions), dim).float()
    return torch.cat([sin, cos], dim=1).float()


def _sincos_table(grid: tuple[int, ...], dim: int, factorised: bool, layout: str) -> torch.Tensor:
    n = math.prod(grid)
    if not factorised:
        return sincos_1d(torch.arange(n), dim, layout)
    # Split the width over the axes (each part even); the first axis takes the remainder.
    per_axis = [2 * (dim // (2 * len(grid)))] * len(grid)
    per_axis[0] += dim - sum(per_axis)
    coords = torch.meshgrid(*[torch.arange(g) for g in grid], indexing="ij")
    return torch.cat([sincos_1d(c.reshape(-1), d, layout) for c, d in zip(coords, per_axis)], dim=1)


_ON_DEVICE: dict[tuple, torch.Tensor] = {}


def _sincos_on(grid: tuple[int, ...], dim: int, factorised: bool, layout: str,
               device: torch.device) -> torch.Tensor:
    """The table kept on `device`: no host-to-device copy (a synchronisation) at every forward.
    A plain dict, whose filled entries torch.compile reads as constants (it would trace through
    an lru_cache and recompute the table inside the graph)."""
    key = (grid, dim, factorised, layout, device)
    if key not in _ON_DEVICE:
        _ON_DEVICE[key] = _sincos_table(grid, dim, factorised, layout).to(device)
    return _ON_DEVICE[key]


def sincos_pos_embed(grid: tuple[int, ...], dim: int, factorised: bool = False,
                     device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                     layout: str = "halves") -> torch.Tensor:
    """Position embeddings (1, prod(grid), dim) for a token grid flattened in row-major order."""
    return _sincos_on(tuple(grid), dim, factorised, layout, torch.device(device)).to(dtype=dtype)[None]
