"""`avmae stats DATA`: the log-mel mean/std (and per-channel video mean/std) of a dataset.

    avmae stats train.csv [--preset NAME] [--set data.window=hanning ...] [--max-clips N]

DATA is a manifest CSV or a shards folder (`avmae prepare`). Reads the centre window of every
clip (or of N clips spread evenly over the data) with the run's DataConfig, and prints one JSON
object on stdout:

    {"audio_mean": -4.27, "audio_std": 4.57, "video_mean": [r, g, b], "video_std": [r, g, b],
     "clips": 980, "skipped": 20, "audio_clips": 975, "video_clips": 980,
     "clips_with_problems": 31}

Use the audio numbers as `--set data.audio_mean=... --set data.audio_std=...` (they are the raw
log-mel statistics, before the (x - mean) / (2 * std) normalisation). Video statistics are of the
[-1, 1] frames at short_side resolution, uncropped. Statistics are exact (float64 sums over all
values), not averages of per-clip statistics. Frames of exact digital silence, which is what
padding a short clip produces, are left out of the audio statistics so that short clips do not
drag the mean towards the log floor. Unreadable clips are skipped and counted.

From shards the centre window is the one evaluation reads (ShardSource, one view): the same
window as from the manifest, with the shards' JPEG and float16 rounding, so the two agree to a
few hundredths (tests/test_logmel.py). The shards' payload fields (short side, sample rate, mel
bins, window) are taken from the shards themselves.
"""

from __future__ import annotations

import math
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from avmae.config import ConfigError, DataConfig
from avmae.data.decode import MediaError, read_clip
from avmae.data.logmel import FLOAT_EPS
from avmae.data.manifest import load_manifest
from avmae.data.storage import is_url
from avmae.data.transforms import audio_logmel


def dataset_stats(data: str | Path, cfg: DataConfig, max_clips: int = 0) -> dict:
    """The statistics `avmae stats` prints, of the manifest `data` read with `cfg` (all clips, or
    `max_clips` spread evenly over the manifest)."""
    if is_url(str(data)):
        raise ConfigError(f"{data} is a URL: stats reads local manifests only for now; pass the "
                          "manifest CSV the shards were prepared from")
    data = Path(data)
    if not data.exists():
        raise ConfigError(f"{data} not found: pass a manifest CSV or a shards folder")
    if max_clips < 0:
        raise ConfigError(f"--max-clips={max_clips} must be >= 0")
    if data.is_dir():
        return _shards_stats(data, cfg, max_clips)
    clips = load_manifest(data).clips
    acc = Accumulator()
    skipped = 0
    for i in tqdm(_picks(len(clips), max_clips), desc="stats", unit="clip", file=sys.stderr):
        clip = clips[i]
        try:
            raw = read_clip(clip.path, cfg, start=clip.start, end=clip.end)
        except MediaError:
            skipped += 1
            continue
        acc.add(raw.frames, None if raw.waveform is None else audio_logmel(raw.waveform, cfg),
                bool(raw.problems))
    return _result(acc, skipped, len(clips), data)


def _shards_stats(folder: Path, cfg: DataConfig, max_clips: int) -> dict:
    """The same statistics from a shards folder: each clip's centre window (evaluation's view)."""
    from avmae.data.shards import PAYLOAD_FIELDS, ShardSource, read_shards_meta
    stored = read_shards_meta(folder)["data"]
    cfg = replace(cfg, **{name: stored[name] for name in PAYLOAD_FIELDS})
    source = ShardSource(folder, cfg)
    acc = Accumulator()
    skipped = 0
    for i in tqdm(_picks(len(source), max_clips), desc="stats", unit="clip", file=sys.stderr):
        try:
            frames, logmel = source.load(int(i), rng=None, view=0, num_views=1)
        except MediaError:
            skipped += 1
            continue
        acc.add(frames, logmel, bool(source.problems[i]))
    return _result(acc, skipped, len(source), folder)


def _picks(n: int, max_clips: int) -> np.ndarray:
    """All clip indices, or `max_clips` of them spread evenly."""
    if max_clips and max_clips < n:
        return np.linspace(0, n - 1, max_clips).round().astype(int)
    return np.arange(n)


def _result(acc: "Accumulator", skipped: int, total: int, data: Path) -> dict:
    if acc.clips == 0:
        raise ConfigError(f"none of the {total} clips in {data} could be read")
    return {**acc.result(), "clips": acc.clips, "skipped": skipped}


class Accumulator:
    """Exact float64 sums for mean and std: audio over all log-mel values of non-silent frames,
    video per RGB channel over all [-1, 1] pixels."""

    def __init__(self):
        self.clips = self.audio_clips = self.video_clips = self.with_problems = 0
        self.a_n, self.a_sum, self.a_sq = 0, 0.0, 0.0
        self.v_n, self.v_sum, self.v_sq = 0, np.zeros(3), np.zeros(3)

    def add(self, frames: np.ndarray | None, logmel: torch.Tensor | None, problems: bool) -> None:
        """One clip: uint8 frames (T, H, W, 3) and its log-mel (frames, bins), either may be None;
        problems: padded, missing stream, decoding stopped."""
        self.clips += 1
        self.with_problems += problems
        if logmel is not None:
            mel = logmel.double()                                      # (frames, bins)
            silent = (mel <= math.log(FLOAT_EPS) + 1e-4).all(dim=1)     # padding or digital silence
            mel = mel[~silent]
            if mel.numel():
                self.audio_clips += 1
                self.a_n += mel.numel()
                self.a_sum += float(mel.sum())
                self.a_sq += float((mel * mel).sum())
        if frames is not None:
            self.video_clips += 1
            x = torch.from_numpy(np.ascontiguousarray(frames)).reshape(-1, 3).double() / 127.5 - 1.0   # (pixels, 3)
            self.v_n += x.shape[0]
            self.v_sum += x.sum(0).numpy()
            self.v_sq += (x * x).sum(0).numpy()

    def result(self) -> dict:
        out = {"audio_mean": None, "audio_std": None, "video_mean": None, "video_std": None}
        if self.a_n:
            mean = self.a_sum / self.a_n
            out["audio_mean"] = mean
            out["audio_std"] = math.sqrt(max(self.a_sq / self.a_n - mean * mean, 0.0))
        if self.v_n:
            mean = self.v_sum / self.v_n
            out["video_mean"] = mean.tolist()
            out["video_std"] = np.sqrt(np.maximum(self.v_sq / self.v_n - mean ** 2, 0)).tolist()
        out["audio_clips"], out["video_clips"] = self.audio_clips, self.video_clips
        out["clips_with_problems"] = self.with_problems
        return out
