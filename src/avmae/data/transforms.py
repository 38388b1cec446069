"""From decoded clips to model inputs: small named steps, numpy/torch only.

    video_tensor(frames uint8 (T, H, W, 3), cfg, train=, rng=) -> float (3, T, S, S) in [-1, 1]
      = apply_video_plan(frames, draw_video_plan(H, W, cfg, train=, rng=), cfg)
    audio_logmel(waveform (N,), cfg)                          -> log-mel (frames, mel_bins)
    audio_tensor(logmel (frames, mel_bins), cfg)              -> float (1, audio_frames, mel_bins)
    fill_video(cfg) / fill_audio(cfg)                         -> zeros / the mean log-mel

Video, training: with cfg.scale_jitter (finetuning) a square crop whose side is crop_size / s
source pixels, s uniform in [scale_jitter_min, scale_jitter_max] (the same as resizing the short
side by s and cropping crop_size), resized to crop_size; without it (pretraining: Table 14's "no
augmentation") a crop_size square of the frame as resized to short_side; either at a random
position, then a horizontal flip with probability 1/2 if cfg.flip (the official configs, both
stages), then colour augmentation if cfg.color_augment /
cfg.color_drop (the official finetuning configs: 0.8 / 0.1). Evaluation: the centre crop_size
square. RGB is scaled to [-1, 1] (paper Sec. 4.1). All randomness comes from the `rng` given (the
dataset derives it from seed, epoch and clip index), so results do not depend on worker count.
Every draw is made by draw_video_plan before any pixel is touched, so the pixels may be decoded
and transformed elsewhere (on the GPU, after the batch) from the same draws.

Audio: the clip's log-mel is cut or padded to audio_frames (AST's convention: keep the first
frames, pad at the end) and normalised with the dataset's statistics, (x - mean) / (2 * std) as
AST / AudioMAE do; never per clip (per-clip normalisation was reported to cost ~6 mAP points).
Padding uses the dataset mean, so padded frames are 0 after normalisation, like a missing
modality's fill.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from avmae.config import DataConfig
from avmae.data.logmel import log_mel


# ---- video ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class VideoPlan:
    """The random choices of one clip's video transform, drawn before any pixel is touched: the
    crop square (top, left, side) in source pixels, the flip, and the colour jitter (factors, or
    None) and greyscale. Drawing them apart from applying them lets the shards' JPEG frames be
    decoded after the batch (on the GPU: avmae.data.gpu_jpeg) with the draws still made in the
    worker from the sample's rng, in the same order as one pass over the pixels would."""

    top: int
    left: int
    side: int
    flip: bool = False
    color: tuple[float, float, float, float] | None = None   # brightness, saturation, contrast, hue
    grey: bool = False


def video_tensor(frames: np.ndarray, cfg: DataConfig, *, train: bool,
                 rng: np.random.Generator | None) -> torch.Tensor:
    """uint8 (T, H, W, 3) -> float32 (3, T, crop_size, crop_size) in [-1, 1].
    train=True without an rng draws from a fresh, unseeded generator."""
    _, H, W, _ = frames.shape
    return apply_video_plan(frames, draw_video_plan(H, W, cfg, train=train, rng=rng), cfg)


def draw_video_plan(H: int, W: int, cfg: DataConfig, *, train: bool,
                    rng: np.random.Generator | None) -> VideoPlan:
    """The crop, flip and colour draws for frames of H x W (module docstring), in this order."""
    if not train:
        side = min(cfg.crop_size, H, W)
        return VideoPlan(*centre_box(H, W, side), side)
    rng = rng if rng is not None else np.random.default_rng()
    side = jittered_side(min(H, W), cfg.crop_size, cfg.scale_jitter_min,
                         cfg.scale_jitter_max, rng) if cfg.scale_jitter else min(cfg.crop_size, H, W)
    top, left = random_box(H, W, side, rng)
    flip = bool(cfg.flip and rng.random() < 0.5)
    color, grey = draw_color(rng, cfg.color_augment, cfg.color_drop)
    return VideoPlan(top, left, side, flip, color, grey)


def apply_video_plan(frames: np.ndarray | torch.Tensor, plan: VideoPlan,
                     cfg: DataConfig) -> torch.Tensor:
    """uint8 (T, H, W, 3), numpy or a tensor on any device -> float32 (3, T, crop_size,
    crop_size) in [-1, 1] on the same device: crop, resize, [-1, 1], flip, colour."""
    x = crop(frames, plan.top, plan.left, plan.side)      # uint8 (T, side, side, 3)
    x = resize(x.permute(0, 3, 1, 2), cfg.crop_size)      # uint8 (T, 3, S, S): resizing bytes is
    x = to_unit_range(x.permute(1, 0, 2, 3))              # ~4x cheaper; float (3, T, S, S)
    if plan.flip:
        x = horizontal_flip(x)
    return apply_color(x, plan.color, plan.grey)


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


def crop(frames: np.ndarray | torch.Tensor, top: int, left: int, side: int) -> torch.Tensor:
    """uint8 (T, H, W, 3) -> uint8 tensor (T, side, side, 3), contiguous; the crop is copied once."""
    if isinstance(frames, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(frames[:, top: top + side, left: left + side]))
    return frames[:, top: top + side, left: left + side].contiguous()


def to_unit_range(x: torch.Tensor) -> torch.Tensor:
    """uint8 -> contiguous float32 of the same shape, 0..255 -> -1..1."""
    return x.to(torch.float32, memory_format=torch.contiguous_format).div_(127.5).sub_(1.0)


def resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (T, 3, h, w) -> uint8 (T, 3, size, size), bilinear, antialiased when shrinking.
    CUDA has no uint8 antialiased kernel: there it is computed in float and rounded back to
    uint8 (within one level of the CPU's fixed-point result)."""
    if x.shape[-2:] == (size, size):
        return x
    if x.device.type == "cpu":
        return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                             antialias=True)
    y = F.interpolate(x.float(), size=(size, size), mode="bilinear", align_corners=False,
                      antialias=True)
    return y.round_().clamp_(0, 255).to(torch.uint8)


def horizontal_flip(x: torch.Tensor) -> torch.Tensor:
    return x.flip(-1)


# Colour augmentation as the official finetuning configs apply it (DMVR's default colour
# augmentation): one draw per clip, so every frame changes alike.
BRIGHTNESS_DELTA = 32 / 255            # added to [0, 1] values
SATURATION_RANGE = (0.6, 1.4)          # factor on HSV saturation
CONTRAST_RANGE = (0.6, 1.4)            # factor on the distance to each frame's channel mean
HUE_DELTA = 0.2                        # shift of HSV hue, in turns
GREY_WEIGHTS = (0.2989, 0.5870, 0.1140)


def color_augment(x: torch.Tensor, rng: np.random.Generator, p_augment: float,
                  p_drop: float) -> torch.Tensor:
    """float (3, T, S, S) in [-1, 1] -> the same. With probability p_augment: brightness,
    saturation, contrast and hue jitter (in that order, then clipped); then with probability
    p_drop: greyscale (colour drop)."""
    return apply_color(x, *draw_color(rng, p_augment, p_drop))


def draw_color(rng: np.random.Generator, p_augment: float, p_drop: float
               ) -> tuple[tuple[float, float, float, float] | None, bool]:
    """color_augment's draws: ((brightness, saturation, contrast, hue) or None, greyscale)."""
    color = None
    if p_augment > 0 and rng.random() < p_augment:
        color = (rng.uniform(-BRIGHTNESS_DELTA, BRIGHTNESS_DELTA), rng.uniform(*SATURATION_RANGE),
                 rng.uniform(*CONTRAST_RANGE), rng.uniform(-HUE_DELTA, HUE_DELTA))
    return color, bool(p_drop > 0 and rng.random() < p_drop)


def apply_color(x: torch.Tensor, color: tuple[float, float, float, float] | None,
                grey: bool) -> torch.Tensor:
    """color_augment with its draws given (draw_color)."""
    if color is not None:
        brightness, saturation, contrast, hue = color
        v = (x + 1.0) / 2.0                                                  # [0, 1]
        v = v + brightness
        v = adjust_saturation(v, saturation)
        v = adjust_contrast(v, contrast)
        v = adjust_hue(v, hue)
        x = v.clamp(0.0, 1.0) * 2.0 - 1.0
    if grey:
        x = greyscale(x)
    return x


def rgb_to_hsv(v: torch.Tensor) -> torch.Tensor:
    """(3, ...) RGB -> (3, ...) HSV, hue in turns [0, 1)."""
    r, g, b = v[0], v[1], v[2]
    high, low = v.max(dim=0).values, v.min(dim=0).values
    spread = high - low
    safe = torch.where(spread > 0, spread, torch.ones_like(spread))
    hue = torch.where(high == r, ((g - b) / safe) % 6,
                      torch.where(high == g, (b - r) / safe + 2, (r - g) / safe + 4)) / 6
    hue = torch.where(spread > 0, hue, torch.zeros_like(hue))
    sat = torch.where(high > 0, spread / torch.where(high > 0, high, torch.ones_like(high)),
                      torch.zeros_like(high))
    return torch.stack([hue, sat, high])


def hsv_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
    """(3, ...) HSV (hue in turns) -> (3, ...) RGB."""
    h, s, v = hsv[0], hsv[1], hsv[2]
    k = torch.stack([(5 + h * 6) % 6, (3 + h * 6) % 6, (1 + h * 6) % 6])     # r, g, b
    return v - v * s * torch.clamp(torch.minimum(k, 4 - k), 0.0, 1.0)


def adjust_saturation(v: torch.Tensor, factor: float) -> torch.Tensor:
    hsv = rgb_to_hsv(v)
    hsv[1] = (hsv[1] * factor).clamp(0.0, 1.0)
    return hsv_to_rgb(hsv)


def adjust_hue(v: torch.Tensor, delta: float) -> torch.Tensor:
    hsv = rgb_to_hsv(v)
    hsv[0] = (hsv[0] + delta) % 1.0
    return hsv_to_rgb(hsv)


def adjust_contrast(v: torch.Tensor, factor: float) -> torch.Tensor:
    """(3, T, H, W): move each frame's channels away from (or towards) their own mean."""
    mean = v.mean(dim=(-2, -1), keepdim=True)
    return (v - mean) * factor + mean


def greyscale(x: torch.Tensor) -> torch.Tensor:
    """(3, ...) -> (3, ...) with every channel the luma (ITU-R 601 weights)."""
    w = torch.tensor(GREY_WEIGHTS, dtype=x.dtype, device=x.device).view(3, *([1] * (x.dim() - 1)))
    return (x * w).sum(dim=0, keepdim=True).expand_as(x).contiguous()


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
    """(1, audio_frames, mel_bins) of the dataset's mean log-mel (`cfg.audio_fill`): 0 after
    normalisation, data.audio_mean where normalisation is off."""
    return torch.full((1, cfg.audio_frames, cfg.mel_bins), cfg.audio_fill)
