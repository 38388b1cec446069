"""Finetuning augmentations on batches (paper B.2, Tables 16-18), in torch.

    one_hot, smooth_labels   targets as class probabilities; label smoothing 0.3
    mixup_modalities         Mixup per modality, what finetuning uses (official `mixmod=True`,
                             alpha 0.5; 1.25 audio-only, Tables 17-18): one pairing, one lambda per
                             modality, and per modality its own mixed targets
    spec_augment             SpecAugment [55]: frequency and time masks set to 0, the normalised mean
    time_shift               circular shift of the spectrogram by a uniform random offset
    augment_spectrogram      time shift, then SpecAugment, as `cfg.finetune` says

All randomness is drawn on the CPU from the `generator` passed in, so a seed gives the same
augmentations on any device. Spectrograms are (B, 1, T_frames, F), time first.
"""

from __future__ import annotations

import numpy as np
import torch

from avmae.config import FinetuneConfig

Targets = torch.Tensor | tuple[torch.Tensor, ...]


def one_hot(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(B,) integer labels -> (B, C) float one-hot targets. A comparison, not F.one_hot, whose
    bounds check reads the labels back to the host (a synchronisation on a GPU) at every step."""
    return (labels.long()[:, None] == torch.arange(num_classes, device=labels.device)).float()


def smooth_labels(targets: torch.Tensor, smoothing: float) -> torch.Tensor:
    """t * (1 - eps) + eps / C on (B, C) one-hot, soft or multi-hot targets (label smoothing [69]).

    It is affine with weights summing to one, so it commutes with mixup: the order does not matter.
    """
    return targets * (1.0 - smoothing) + smoothing / targets.shape[-1]


def sample_lambda(alpha: float, generator: torch.Generator) -> float:
    """lambda ~ Beta(alpha, alpha), drawn through `generator` (alpha <= 0: 1, no mixing)."""
    if alpha <= 0:
        return 1.0
    seed = int(torch.randint(0, 2**62, (1,), generator=generator).numpy()[0])  # a CPU generator
    return float(np.random.default_rng(seed).beta(alpha, alpha))


def _mix(x: torch.Tensor, lam: float, perm: torch.Tensor) -> torch.Tensor:
    if lam == 1.0:
        return x
    return lam * x + (1.0 - lam) * x[perm.to(x.device, non_blocking=True)]


def mix_targets(targets: Targets, lam: float, perm: torch.Tensor) -> Targets:
    """lam * t + (1 - lam) * t[perm] for one target tensor or each of a tuple (verb, noun)."""
    if isinstance(targets, tuple):
        return tuple(_mix(t, lam, perm) for t in targets)
    return _mix(targets, lam, perm)


def mixup_modalities(inputs: dict[str, torch.Tensor], targets: Targets, alpha: float,
                     generator: torch.Generator
                     ) -> tuple[dict[str, torch.Tensor], dict[str, Targets], dict[str, float], torch.Tensor]:
    """Mixup per modality, as the official finetuning (`train_utils.mixup_modalities`, mixmod=True):
    every modality is mixed with the same partner clip but with its own lambda ~ Beta(alpha,
    alpha), and gets its own mixed targets, against which that modality's logits are trained.

    inputs: {"audio": (B, 1, T, F), "video": (B, 3, T, H, W)} (the modalities the model uses);
    targets: float (B, C), or a tuple of them (verb, noun).
    Returns (mixed inputs, {m: mixed targets}, {m: lambda}, perm).
    """
    batch = next(iter(inputs.values())).shape[0]
    perm = torch.randperm(batch, generator=generator) if alpha > 0 else torch.arange(batch)
    lams = {m: sample_lambda(alpha, generator) for m in inputs}
    mixed = {m: _mix(x, lams[m], perm) for m, x in inputs.items()}
    return mixed, {m: mix_targets(targets, lams[m], perm) for m in inputs}, lams, perm


def _band_masks(batch: int, length: int, count: int, max_width: int,
                generator: torch.Generator) -> torch.Tensor:
    """(B, length) bool: the union of `count` bands per sample, each of width w ~ U{0..max_width}
    (capped at `length`) starting at s ~ U{0..length - w} (SpecAugment [55])."""
    max_width = min(max_width, length)
    if count <= 0 or max_width <= 0:
        return torch.zeros(batch, length, dtype=torch.bool)
    width = torch.randint(0, max_width + 1, (batch, count), generator=generator)    # (B, n)
    start = (torch.rand(batch, count, generator=generator) * (length - width + 1)).long()
    start = torch.minimum(start, length - width)  # guards rand() == 1 - eps rounding
    pos = torch.arange(length)[None, None, :]                                         # (1, 1, L)
    inside = (pos >= start[..., None]) & (pos < (start + width)[..., None])           # (B, n, L)
    return inside.any(dim=1)


def spec_augment(spec: torch.Tensor, generator: torch.Generator, freq_masks: int = 2,
                 freq_mask_width: int = 36, time_masks: int = 4, time_mask_width: int = 48,
                 value: float = 0.0) -> torch.Tensor:
    """Mask random frequency bands and time spans of each spectrogram (B, 1, T, F) with `value`
    (0 = the dataset mean after normalisation). Defaults: AudioSet's settings (reference-facts)."""
    B, _, T, F = spec.shape
    freq = _band_masks(B, F, freq_masks, freq_mask_width, generator).to(spec.device, non_blocking=True)
    time = _band_masks(B, T, time_masks, time_mask_width, generator).to(spec.device, non_blocking=True)
    masked = (time[:, None, :, None] | freq[:, None, None, :])                          # (B, 1, T, F)
    return spec.masked_fill(masked, value)


def time_shift(spec: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Roll each spectrogram (B, 1, T, F) circularly along time by an offset ~ U{0..T-1} (B.2).

    Returns (shifted, offsets (B,)): shifted[b, :, t] = spec[b, :, (t - offset_b) mod T].
    """
    B, _, T, _ = spec.shape
    offsets = torch.randint(0, T, (B,), generator=generator)
    index = (torch.arange(T)[None, :] - offsets[:, None]) % T                          # (B, T)
    index = index.to(spec.device, non_blocking=True)[:, None, :, None].expand_as(spec)
    return torch.gather(spec, 2, index), offsets


def augment_spectrogram(spec: torch.Tensor, cfg: FinetuneConfig, generator: torch.Generator,
                        fill: float) -> torch.Tensor:
    """The audio regularisers of B.2 as `cfg` enables them: circular time shift, then SpecAugment
    masking with `fill`, the dataset's mean log-mel on the input's scale (DataConfig.audio_fill:
    0 after normalisation, data.audio_mean without)."""
    if cfg.time_shift:
        spec, _ = time_shift(spec, generator)
    if cfg.specaugment:
        spec = spec_augment(spec, generator, cfg.freq_masks, cfg.freq_mask_width,
                            cfg.time_masks, cfg.time_mask_width, value=fill)
    return spec
