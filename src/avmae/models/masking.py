"""Random token masking per modality and per sample (MAE; paper Sec. 3.1, 4.1).

Each sample removes `floor(ratio * N)` tokens chosen uniformly at random and keeps the other
`N - floor(ratio * N)`, the official release's rule (`n_masked = int(ratio * n_tokens)`), so that
official weights see as many tokens as they were trained with: at the paper's base input video
keeps 1568 - floor(0.9 * 1568) = 157 of 1568 tubelets, audio 400 - 200 = 200 of 400 patches, and
10 s of AudioSet audio at ratio 0.7 keeps 496 - 347 = 149 of 496. (MAE's floor(N * (1 - ratio))
would keep 156 video tubelets.) At least one token is always kept.
"""

from __future__ import annotations

import torch


def num_visible(num_tokens: int, mask_ratio: float) -> int:
    return max(1, num_tokens - int(mask_ratio * num_tokens))


def sample_noise(keys: list[tuple[int, ...]], num_tokens: int) -> torch.Tensor:
    """(B, N) masking noise, one row per sample drawn from a generator seeded by that sample's key.

    Training keys each row by (seed, step, clip index, modality), so a clip gets the same mask
    whether it is in a batch of 8 on one process or of 4 on each of two (DDP), and after a resume.
    """
    rows = []
    for key in keys:
        seed = 0
        for k in key:  # a simple, stable mix of the key into a 63-bit seed
            seed = (seed * 1_000_003 + int(k)) % (2 ** 63 - 1)
        rows.append(torch.rand(num_tokens, generator=torch.Generator().manual_seed(seed)))
    return torch.stack(rows)


def random_masking(x: torch.Tensor, mask_ratio: float, generator: torch.Generator | None = None,
                   noise: torch.Tensor | None = None):
    """Keep a random subset of tokens of each sample.

    x: (B, N, D). Returns
      x_kept (B, N_keep, D): the visible tokens, in shuffled order,
      mask (B, N): 1 = removed (masked), 0 = kept, in the original token order,
      ids_restore (B, N): indices that undo the shuffle (for Unshuffle in the decoder).
    The noise (B, N) is given, or drawn on the CPU from `generator`, so a seed gives the same masks
    on any device.
    """
    B, N, D = x.shape
    keep = num_visible(N, mask_ratio)
    if noise is None:
        noise = torch.rand(B, N, generator=generator)
    noise = noise.to(x.device, non_blocking=True)
    ids_shuffle = torch.argsort(noise, dim=1)             # ascending: the smallest noise is kept
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    ids_keep = ids_shuffle[:, :keep]
    x_kept = torch.gather(x, 1, ids_keep[:, :, None].expand(-1, -1, D))
    mask = torch.ones(B, N, device=x.device)
    mask[:, :keep] = 0
    mask = torch.gather(mask, 1, ids_restore)             # back to the original token order
    return x_kept, mask, ids_restore


def unshuffle(x_kept: torch.Tensor, mask_token: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
    """Insert mask tokens and undo the shuffle: (B, N_keep, D) -> (B, N, D) (paper Sec. 3.1)."""
    B, keep, D = x_kept.shape
    N = ids_restore.shape[1]
    x = torch.cat([x_kept, mask_token.to(x_kept.dtype).expand(B, N - keep, D)], dim=1)
    return torch.gather(x, 1, ids_restore[:, :, None].expand(-1, -1, D))
