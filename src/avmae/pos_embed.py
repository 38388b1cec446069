"""Fixed sin-cos position embeddings computed for the actual token grid.

The official release uses 1-D sin-cos over each modality's flattened token sequence (in encoder
and decoder); `factorised` concatenates 1-D sin-cos codes of each grid axis instead (t, h, w for
video; time, frequency for audio). Nothing is sized in advance: a 5 s clip or 32 frames get the
embeddings of their own grid, so inputs of any length work.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch


def sincos_1d(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """(N,) positions -> (N, dim): [sin(p * w_k), cos(p * w_k)], w_k = 10000^(-2k/dim) (Vaswani)."""
    omega = torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0)
    omega = 1.0 / 10000.0 ** omega                       # (dim/2,)
    angles = positions.to(torch.float64)[:, None] * omega[None, :]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1).float()


@lru_cache(maxsize=64)
def _sincos_cached(grid: tuple[int, ...], dim: int, factorised: bool) -> torch.Tensor:
    n = math.prod(grid)
    if not factorised:
        return sincos_1d(torch.arange(n), dim)
    # Split the width over the axes (each part even); the first axis takes the remainder.
    per_axis = [2 * (dim // (2 * len(grid)))] * len(grid)
    per_axis[0] += dim - sum(per_axis)
    coords = torch.meshgrid(*[torch.arange(g) for g in grid], indexing="ij")
    return torch.cat([sincos_1d(c.reshape(-1), d) for c, d in zip(coords, per_axis)], dim=1)


def sincos_pos_embed(grid: tuple[int, ...], dim: int, factorised: bool = False,
                     device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Position embeddings (1, prod(grid), dim) for a token grid flattened in row-major order."""
    return _sincos_cached(tuple(grid), dim, factorised).to(device=device, dtype=dtype)[None]
