"""From decoded clips to model inputs: small named steps, numpy/torch only.

    video_tensor(frames uint8 (T, H, W, 3), cfg, train=, rng=) -> float (3, T, S, S) in [-1, 1]
    audio_logmel(waveform (N,), cfg)                          -> log-mel (frames, mel_bins)
    audio_tensor(logmel (frames, mel_bins), cfg)              -> float (1, audio_frames, mel_bins)
    fill_video(cfg) / fill_audio(cfg)                         -> zeros of those shapes

Video, training: a square crop whose side is crop_size / s source pixels, s uniform in
[scale_jitter_min, scale_jitter_max] (the same as resizing the short side by s and cropping
crop_size), at a random position, resized to crop_size, then a horizontal flip with probability
1/2 if cfg.flip (finetuning, Table 18). Evaluation: the centre crop_size square. RGB is scaled to
[-1, 1] (paper Sec. 4.1). All randomness comes from the `rng` given (the dataset derives it from
seed, epoch and clip index), so results do not depend on worker count.

Audio: the clip's log-mel is cut or padded to audio_frames (AST's convention: keep the first
frames, pad at the end) and normalised with the dataset's statistics, (x - mean) / (2 * std) as
AST / AudioMAE do; never per clip (per-clip normalisation was reported to cost ~6 mAP points).
Padding uses the dataset mean, so padded frames are 0 after normalisation, like a missing
modality's fill.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..config import DataConfig
from .logmel import log_mel


# ---- video ------------------------------------------------------------------------------------

def video_tensor(frames: np.ndarray, cfg: DataConfig, *, train: bool,
                 rng: np.random.Generator | None) -> torch.Tensor:
    """uint8 (T, H, W, 3) -> float32 (3, T, crop_size, crop_size) in [-1, 1].
    train=True without an rng draws from a fresh, unseeded generator."""
    T, H, W, _ = frames.shape
    if train:
        rng = rng if rng is not None else np.random.default_rng()
        side = jittered_side(min(H, W), cfg.crop_size, cfg.scale_jitter_min,
                             cfg.scale_jitter_max, rng)
        top, left = random_box(H, W, side, rng)
    else:
        side = min(cfg.crop_size, H, W)
        top, left = centre_box(H, W, side)
    x = crop(frames, top, left, side)                     # uint8 (T, side, side, 3)
    x = resize(x.permute(0, 3, 1, 2), cfg.crop_size)      # uint8 (T, 3, S, S): resizing bytes is
    x = to_unit_range(x.permute(1, 0, 2, 3))              # ~4x cheaper; float (3, T, S, S)
    if train and cfg.flip and rng.random() < 0.5:
        x = horizontal_flip(x)
    return x


def jittered_side(short: int, crop_size: int, scale_min: float, scale_max: float,
                  rng: np.random.Generator) -> int:
    """Source pixels a crop covers when the short side is rescaled by s ~ U[scale_min,
    scale_max] before cropping crop_size; at most the short side."""
    s = rng.uniform(scale_min, scale_max) if scale_max > scale_min else scale_min
    return int(min(short, max(1, round(crop_size / s))))


def random_box(H: int, W: int, side: int, rng: np.random.Generator) -> tuple[int, int]:
    """Top-left corner of a side x side square, uniformly placed."""
    return int(rng.integers(0, H - side + 1)), int(rng.integers(0, W - side + 1))


def centre_box(H: int, W: int, side: int) -> tuple[int, int]:
    return (H - side) // 2, (W - side) // 2


def crop(frames: np.ndarray, top: int, left: int, side: int) -> torch.Tensor:
    """uint8 (T, H, W, 3) -> uint8 tensor (T, side, side, 3); the crop is copied once."""
    return torch.from_numpy(np.ascontiguousarray(frames[:, top: top + side, left: left + side]))


def to_unit_range(x: torch.Tensor) -> torch.Tensor:
    """uint8 -> contiguous float32 of the same shape, 0..255 -> -1..1."""
    return x.to(torch.float32, memory_format=torch.contiguous_format).div_(127.5).sub_(1.0)


def resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (T, 3, h, w) -> uint8 (T, 3, size, size), bilinear, antialiased when shrinking."""
    if x.shape[-2:] == (size, size):
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def horizontal_flip(x: torch.Tensor) -> torch.Tensor:
    return x.flip(-1)


# ---- audio ------------------------------------------------------------------------------------

def audio_logmel(waveform, cfg: DataConfig) -> torch.Tensor:
    """float (S,) mono at cfg.sample_rate -> log-mel (frames, mel_bins), cfg's window."""
    return log_mel(torch.as_tensor(waveform), cfg.sample_rate, cfg.mel_bins, cfg.window)


def audio_tensor(logmel: torch.Tensor, cfg: DataConfig) -> torch.Tensor:
    """log-mel (frames, mel_bins) or (1, frames, mel_bins) -> float32 (1, audio_frames, mel_bins)."""
    x = logmel.reshape(-1, logmel.shape[-1]).float()
    x = crop_or_pad_time(x, cfg.audio_frames, fill=cfg.audio_mean)
    if cfg.normalize_audio:
        x = normalize(x, cfg.audio_mean, cfg.audio_std)
    return x.unsqueeze(0)


def crop_or_pad_time(x: torch.Tensor, frames: int, fill: float) -> torch.Tensor:
    """(n, bins) -> (frames, bins): the first `frames`, or padded at the end with `fill`."""
    n = x.shape[0]
    if n >= frames:
        return x[:frames]
    return torch.cat([x, x.new_full((frames - n, x.shape[1]), fill)])


def normalize(x: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """AST / AudioMAE: (x - mean) / (2 * std), dataset statistics."""
    return (x - mean) / (2 * std)


# ---- missing modalities -----------------------------------------------------------------------

def fill_video(cfg: DataConfig) -> torch.Tensor:
    """zeros (3, T, S, S): mid-grey, zero in the [-1, 1] domain."""
    return torch.zeros(3, cfg.num_frames, cfg.crop_size, cfg.crop_size)


def fill_audio(cfg: DataConfig) -> torch.Tensor:
    """zeros (1, audio_frames, mel_bins): the dataset mean after normalisation."""
    return torch.zeros(1, cfg.audio_frames, cfg.mel_bins)
