"""Fixed sin-cos position embeddings computed for the actual token grid.

The official release uses 1-D sin-cos over each modality's flattened token sequence (in encoder
and decoder); `factorised` concatenates 1-D sin-cos codes of each grid axis instead (t, h, w for
video; time, frequency for audio). The channel layout of a 1-D code is `halves` ([sin | cos], as
MAE) or `interleaved` (sin on even channels, cos on odd: the official release's
`sinusoidal_init`); the frequencies are the same, 10000^(-2k/dim). Nothing is sized in advance: a 5 s clip or 32 frames get the
embeddings of their own grid, so inputs of any length work.

Two more tables exist so that public unimodal MAEs keep their own positions (`avmae init-from`,
avmae.interop.unimodal); both use MAE's 2-D layout, `mae_2d`: on a (rows, cols) grid flattened row by
row, [1-D code of the column | 1-D code of the row], each half in the `halves` layout at width
dim/2 (MAE's `get_2d_sincos_pos_embed`, whose meshgrid puts the column first):
    sincos_2d           ImageNet MAE. Audio: rows = time, cols = frequency. Video: each frame's
                        (h, w) table, plus the 1-D `halves` code of the tubelet's time index minus
                        that code at t = 0, so the first tubelets keep the image table exactly (a
                        one-tubelet clip of repeated frames gives the image model's output).
    sincos_2d_audiomae  AudioMAE's table for audio: its patch embedding reports the spectrogram grid
                        as (frequency, time) while the tokens are laid out (time, frequency), so its
                        table is `mae_2d` with rows = frequency, cols = time over the same token
                        index (token n gets the codes of n mod T and n // T). Video as sincos_2d.
The layout option (`halves` / `interleaved`) applies to the 1-D and factorised tables only.
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


def mae_2d(rows: int, cols: int, dim: int) -> torch.Tensor:
    """MAE's 2-D table (rows * cols, dim) of a grid flattened row by row: [code(col) | code(row)]."""
    r, c = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
    return torch.cat([sincos_1d(c.reshape(-1), dim // 2), sincos_1d(r.reshape(-1), dim // 2)], dim=1)


def _mae_table(grid: tuple[int, ...], dim: int, kind: str) -> torch.Tensor:
    """The sincos_2d / sincos_2d_audiomae tables (module docstring) of an audio (T, F) or video
    (t, h, w) grid."""
    if len(grid) == 2:
        T, F = grid
        return mae_2d(F, T, dim) if kind == "sincos_2d_audiomae" else mae_2d(T, F, dim)
    t, h, w = grid
    spatial = mae_2d(h, w, dim)                                          # (h*w, dim)
    steps = torch.arange(t)
    time = sincos_1d(steps, dim) - sincos_1d(steps[:1], dim)             # (t, dim), 0 at t = 0
    return (time[:, None, :] + spatial[None, :, :]).reshape(t * h * w, dim)


def _sincos_table(grid: tuple[int, ...], dim: int, factorised: bool | str, layout: str) -> torch.Tensor:
    if isinstance(factorised, str):
        if factorised in ("sincos_2d", "sincos_2d_audiomae"):
            return _mae_table(grid, dim, factorised)
        factorised = factorised == "sincos_factorised"
    n = math.prod(grid)
    if not factorised:
        return sincos_1d(torch.arange(n), dim, layout)
    # Split the width over the axes (each part even); the first axis takes the remainder.
    per_axis = [2 * (dim // (2 * len(grid)))] * len(grid)
    per_axis[0] += dim - sum(per_axis)
    coords = torch.meshgrid(*[torch.arange(g) for g in grid], indexing="ij")
    return torch.cat([sincos_1d(c.reshape(-1), d, layout) for c, d in zip(coords, per_axis)], dim=1)


_ON_DEVICE: dict[tuple, torch.Tensor] = {}


def _sincos_on(grid: tuple[int, ...], dim: int, factorised: bool | str, layout: str,
               device: torch.device) -> torch.Tensor:
    """The table kept on `device`: no host-to-device copy (a synchronisation) at every forward.
    A plain dict, whose filled entries torch.compile reads as constants (it would trace through
    an lru_cache and recompute the table inside the graph)."""
    key = (grid, dim, factorised, layout, device)
    if key not in _ON_DEVICE:
        _ON_DEVICE[key] = _sincos_table(grid, dim, factorised, layout).to(device)
    return _ON_DEVICE[key]


def sincos_pos_embed(grid: tuple[int, ...], dim: int, factorised: bool | str = False,
                     device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                     layout: str = "halves") -> torch.Tensor:
    """Position embeddings (1, prod(grid), dim) for a token grid flattened in row-major order.
    `factorised`: a bool (1-D or factorised), or a `model.pos_embed` name (config.POS_EMBEDS)."""
    return _sincos_on(tuple(grid), dim, factorised, layout, torch.device(device)).to(dtype=dtype)[None]
