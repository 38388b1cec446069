"""Tokenisers and reconstruction targets (paper Sec. 3.1, 4.1).

Video (B, 3, T, H, W) is cut into 2x16x16 tubelets by a 3-D convolution. On a GPU it is computed
as one matrix multiply over the flattened tubelets (the same mathematics; a base pretraining step
14 % faster on an H200 than cuDNN's Conv3d, which has no tensor-core kernel for it); on a CPU the
Conv3d itself, which oneDNN runs faster than the permute + matmul (BENCHMARKS.md); the log-mel spectrogram
(B, 1, T_frames, 128) into 16x16 patches by a 2-D convolution. Tokens are ordered as the
convolution's output grid, flattened: (t, h, w) for video and (time, frequency) for audio.
Spectrogram frames that do not fill a patch are dropped (DESIGN).

`patchify_*` gives the reconstruction targets x~ in the same token order, each patch flattened as
(pt, ph, pw, c) for video (2*16*16*3 = 1536 values) and (pt, pf) for audio (256 values);
`unpatchify_*` is its exact inverse.
"""

from __future__ import annotations

import torch
from torch import nn


class VideoPatchEmbed(nn.Module):
    """Tubelet embedding: Conv3d with kernel = stride = (tubelet_frames, patch, patch)."""

    def __init__(self, dim: int, tubelet_frames: int = 2, patch: int = 16, in_chans: int = 3):
        super().__init__()
        self.tubelet = (tubelet_frames, patch, patch)
        self.proj = nn.Conv3d(in_chans, dim, kernel_size=self.tubelet, stride=self.tubelet)

    def grid(self, video: torch.Tensor) -> tuple[int, int, int]:
        _, _, T, H, W = video.shape
        pt, ph, pw = self.tubelet
        return T // pt, H // ph, W // pw

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        if not video.is_cuda:  # oneDNN's Conv3d is the faster of the two on CPUs (BENCHMARKS.md)
            return self.proj(video).flatten(2).transpose(1, 2)  # (B, N_v, D), (t, h, w) order
        return tubelets_by_matmul(video, self.proj.weight, self.proj.bias, self.tubelet)


def tubelets_by_matmul(video: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                       tubelet: tuple[int, int, int]) -> torch.Tensor:
    """The tubelet Conv3d (kernel = stride) as a matrix multiply of each flattened tubelet,
    ordered (c, pt, ph, pw) as the (D, C, pt, ph, pw) kernel, by the kernel: (B, N_v, D)."""
    B, C, T, H, W = video.shape
    pt, ph, pw = tubelet
    t, h, w = T // pt, H // ph, W // pw
    x = video[:, :, : t * pt, : h * ph, : w * pw].reshape(B, C, t, pt, h, ph, w, pw)
    x = x.permute(0, 2, 4, 6, 1, 3, 5, 7).reshape(B, t * h * w, C * pt * ph * pw)
    return nn.functional.linear(x, weight.flatten(1), bias)


class AudioPatchEmbed(nn.Module):
    """Spectrogram patch embedding: Conv2d with kernel = stride = 16 over (time, mel)."""

    def __init__(self, dim: int, patch: int = 16):
        super().__init__()
        self.patch = patch
        self.proj = nn.Conv2d(1, dim, kernel_size=patch, stride=patch)

    def grid(self, audio: torch.Tensor) -> tuple[int, int]:
        return audio.shape[2] // self.patch, audio.shape[3] // self.patch

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        x = self.proj(audio)                 # (B, D, T_frames/16, 128/16); leftover frames dropped
        return x.flatten(2).transpose(1, 2)  # (B, N_a, D), tokens in (time, frequency) order


def patchify_video(video: torch.Tensor, tubelet_frames: int = 2, patch: int = 16) -> torch.Tensor:
    """(B, C, T, H, W) -> (B, N_v, pt*ph*pw*C)."""
    B, C, T, H, W = video.shape
    t, h, w = T // tubelet_frames, H // patch, W // patch
    x = video[:, :, : t * tubelet_frames, : h * patch, : w * patch]
    x = x.reshape(B, C, t, tubelet_frames, h, patch, w, patch)
    x = x.permute(0, 2, 4, 6, 3, 5, 7, 1)    # (B, t, h, w, pt, ph, pw, C)
    return x.reshape(B, t * h * w, tubelet_frames * patch * patch * C)


def unpatchify_video(x: torch.Tensor, grid: tuple[int, int, int], tubelet_frames: int = 2,
                     patch: int = 16, chans: int = 3) -> torch.Tensor:
    """(B, N_v, pt*ph*pw*C) -> (B, C, T, H, W); the inverse of `patchify_video`."""
    B = x.shape[0]
    t, h, w = grid
    x = x.reshape(B, t, h, w, tubelet_frames, patch, patch, chans)
    x = x.permute(0, 7, 1, 4, 2, 5, 3, 6)    # (B, C, t, pt, h, ph, w, pw)
    return x.reshape(B, chans, t * tubelet_frames, h * patch, w * patch)


def patchify_audio(audio: torch.Tensor, patch: int = 16) -> torch.Tensor:
    """(B, 1, T_frames, F) -> (B, N_a, pt*pf); frames that do not fill a patch are dropped."""
    B, _, T, F = audio.shape
    t, f = T // patch, F // patch
    x = audio[:, 0, : t * patch, : f * patch].reshape(B, t, patch, f, patch)
    x = x.permute(0, 1, 3, 2, 4)             # (B, t, f, pt, pf)
    return x.reshape(B, t * f, patch * patch)


def unpatchify_audio(x: torch.Tensor, grid: tuple[int, int], patch: int = 16) -> torch.Tensor:
    """(B, N_a, pt*pf) -> (B, 1, t*16, f*16); the inverse of `patchify_audio`."""
    B = x.shape[0]
    t, f = grid
    x = x.reshape(B, t, f, patch, patch).permute(0, 1, 3, 2, 4)  # (B, t, pt, f, pf)
    return x.reshape(B, 1, t * patch, f * patch)
