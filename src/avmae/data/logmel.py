"""The log-mel front end: Kaldi filterbank ("fbank") features in torch, batched, on any device.

    log_mel(waveform (..., S)) -> (..., frames, mel_bins), frames = 1 + (S - 400) // 160

The settings are those of the audio MAEs the paper builds on (AST, AudioMAE, CAV-MAE; paper
Sec. 4.1): 16 kHz mono, 25 ms windows every 10 ms, 128 mel bins, no energy, no dither. Each step
is Kaldi's (compute-fbank-feats defaults unless said otherwise):

1. (caller-visible, not Kaldi) subtract the waveform's mean, as the AST-style pipelines do
   before calling Kaldi fbank: `subtract_mean=True`.
2. frames of 400 samples every 160, only where a whole window fits (Kaldi's snip_edges).
3. per frame: remove the DC offset (the frame's mean), pre-emphasis x[i] -= 0.97 x[i-1] with
   x[-1] = x[0], then the window (Kaldi's symmetric definitions, below).
4. zero-pad to 512 (the next power of two), power spectrum |FFT|^2 (257 bins).
5. 128 triangular filters equally spaced on the mel scale mel(f) = 1127 ln(1 + f / 700), from
   20 Hz to the Nyquist frequency, each triangle evaluated at the FFT bins' centre frequencies
   (the Nyquist bin gets no weight, as in Kaldi).
6. log(max(energy, float32 eps)).

At 16 kHz with 25 ms windows, 128 bins from 20 Hz leave filter 3 (about 63-93 Hz) between two FFT
bins: it is empty and always outputs the floor log(eps). Kaldi's own binary refuses such settings
("num_mel_bins too large"); torchaudio's Kaldi-compatible fbank, which AST / AudioMAE / CAV-MAE
use, keeps the empty filter, and so does this function, so that features match those models'.

The window is "hamming" by default (the paper, Sec. 4.1); "hanning" matches AST / AudioMAE /
CAV-MAE; "povey" is Kaldi's own default; "rectangular" is no window.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

WINDOWS = ("hamming", "hanning", "povey", "rectangular")
PREEMPHASIS = 0.97
LOW_FREQ = 20.0
FLOAT_EPS = float(np.finfo(np.float32).eps)   # Kaldi's log floor (std::numeric_limits<float>::epsilon)


def log_mel(waveform: torch.Tensor, sample_rate: int = 16000, mel_bins: int = 128,
            window: str = "hamming", frame_length_ms: float = 25.0,
            frame_shift_ms: float = 10.0, *, subtract_mean: bool = True) -> torch.Tensor:
    """Kaldi fbank features. waveform: (..., S) float (a numpy array is accepted), in [-1, 1]
    for the usual scale of the statistics. Returns (..., frames, mel_bins) of the same dtype
    (float32 for integer input) on the same device; frames = 1 + (S - L) // shift for S >= L
    (L = 400, shift = 160 at 16 kHz), else 0."""
    x = torch.as_tensor(waveform)
    if not x.is_floating_point():
        x = x.float()
    L = int(sample_rate * frame_length_ms / 1000)        # Kaldi truncates: 400 at 16 kHz
    shift = int(sample_rate * frame_shift_ms / 1000)     # 160
    n_fft = 1 << (L - 1).bit_length()                    # 512
    if x.shape[-1] < L:
        return x.new_zeros(*x.shape[:-1], 0, mel_bins)
    if subtract_mean:
        x = x - x.mean(dim=-1, keepdim=True)
    frames = frame_signal(x, L, shift)                                   # (..., F, L)
    frames = frames - frames.mean(dim=-1, keepdim=True)                  # remove_dc_offset
    frames = preemphasis(frames, PREEMPHASIS)
    frames = frames * window_function(window, L, x.device, x.dtype)
    power = torch.fft.rfft(frames, n=n_fft).abs().pow(2)                 # (..., F, n_fft/2 + 1)
    banks = mel_banks(mel_bins, n_fft, sample_rate, LOW_FREQ, sample_rate / 2, x.device, x.dtype)
    mel = power @ banks.T                                                # (..., F, mel_bins)
    return mel.clamp_min(FLOAT_EPS).log()


def num_frames(num_samples: int, sample_rate: int = 16000, frame_length_ms: float = 25.0,
               frame_shift_ms: float = 10.0) -> int:
    """Frames `log_mel` returns for a waveform of num_samples (Kaldi snip_edges)."""
    L = int(sample_rate * frame_length_ms / 1000)
    shift = int(sample_rate * frame_shift_ms / 1000)
    return 0 if num_samples < L else 1 + (num_samples - L) // shift


def frame_signal(x: torch.Tensor, length: int, shift: int) -> torch.Tensor:
    """(..., S) -> (..., 1 + (S - length) // shift, length); a view, no copy."""
    return x.unfold(-1, length, shift)


def preemphasis(frames: torch.Tensor, coeff: float) -> torch.Tensor:
    """Kaldi: x[i] -= coeff * x[i - 1] within each frame, and x[0] -= coeff * x[0]."""
    previous = torch.cat([frames[..., :1], frames[..., :-1]], dim=-1)
    return frames - coeff * previous


@functools.lru_cache(maxsize=32)
def window_function(name: str, length: int, device: torch.device | str = "cpu",
                    dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Kaldi's symmetric windows over i = 0 .. length-1, a = 2 pi / (length - 1)."""
    if name not in WINDOWS:
        raise ValueError(f"window '{name}' is not one of: {', '.join(WINDOWS)}")
    i = torch.arange(length, dtype=torch.float64)
    a = 2 * math.pi / (length - 1)
    if name == "hamming":
        w = 0.54 - 0.46 * torch.cos(a * i)
    elif name == "hanning":
        w = 0.5 - 0.5 * torch.cos(a * i)
    elif name == "povey":                       # a Hann window to the power 0.85 (Kaldi's default)
        w = (0.5 - 0.5 * torch.cos(a * i)).pow(0.85)
    else:
        w = torch.ones(length, dtype=torch.float64)
    return w.to(device=device, dtype=dtype)


def mel_scale(freq):
    return 1127.0 * np.log(1.0 + np.asarray(freq, np.float64) / 700.0)


@functools.lru_cache(maxsize=32)
def mel_banks(mel_bins: int, n_fft: int, sample_rate: int, low_freq: float, high_freq: float,
              device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
              ) -> torch.Tensor:
    """(mel_bins, n_fft // 2 + 1) triangular filters, Kaldi's MelBanks (no VTLN)."""
    if not 0 <= low_freq < high_freq <= sample_rate / 2:
        raise ValueError(f"mel range [{low_freq}, {high_freq}] Hz must lie in [0, {sample_rate / 2}]")
    mel_low, mel_high = mel_scale(low_freq), mel_scale(high_freq)
    delta = (mel_high - mel_low) / (mel_bins + 1)
    left = mel_low + delta * np.arange(mel_bins)[:, None]               # (mel_bins, 1)
    centre, right = left + delta, left + 2 * delta
    # Kaldi weighs the first n_fft / 2 bins only; the Nyquist bin keeps weight 0
    mel = mel_scale(np.arange(n_fft // 2) * sample_rate / n_fft)[None, :]   # (1, n_fft / 2)
    up = (mel - left) / (centre - left)
    down = (right - mel) / (right - centre)
    inside = (mel > left) & (mel < right)
    weights = np.where(inside, np.where(mel <= centre, up, down), 0.0)
    weights = np.concatenate([weights, np.zeros((mel_bins, 1))], axis=1)
    return torch.from_numpy(weights).to(device=device, dtype=dtype)
