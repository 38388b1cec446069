"""The synthetic audiovisual dataset (`avmae synth`): the project's embedded default.

Each clip is a real mp4 (H.264 yuv420p video, AAC audio) of one moving object on a textured
background. The object makes sound events: every event is seen (the object swells and flashes)
on the very frame where its sound starts (a tone burst, a buzz, a chirp or a noise burst).

The class needs both senses. With 8 classes k = 0..7,

    shape  s = k // 2                  (disc, square, triangle, ring)      -- seen only
    timbre t = (k // 2 + k % 2) % 4    (tone, buzz, chirp, noise)          -- heard only

each shape goes with two timbres and each timbre with two shapes (the classes form a cycle), so
video alone narrows a clip to 2 classes, audio alone to 2 other classes, and only both identify
it: a unimodal classifier expects 50 % at best, an audiovisual one can reach 100 %, which is what
makes the paper's audio < audiovisual and video < audiovisual claims testable at tiny scale.
Everything else is nuisance drawn independently of the class: colours, texture, a stripe
distractor, position, speed, rotation, size, event times and count, pitch, loudness, background
noise, a mains hum (tagged "hum" in `labels`), sample rate (16 / 22.05 / 44.1 / 48 kHz) and
channel count (mono or stereo), so the data pipeline's resampling and downmix are exercised.

Determinism: a clip is a pure function of (seed, index, its label, the size arguments), drawn
from np.random.default_rng([seed, index, stream]); the worker count changes nothing.

Files written in OUT_DIR:
    clips/NNNNN.mp4      the clips
    train.csv, test.csv  manifests: path (relative to OUT_DIR), label, labels, verb, noun
    classes.json         the classes, their shape / timbre, the tags and the generator arguments
    clips.jsonl          per clip: sample rate, channels, event onset times (for sync checks)
"""

from __future__ import annotations

import argparse
import concurrent.futures
import csv
import json
import multiprocessing
import os
import shutil
import sys
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from avmae.config import ConfigError

SHAPES = ("disc", "square", "triangle", "ring")
TIMBRES = ("tone", "buzz", "chirp", "noise")
NUM_CLASSES = 8
HUM_TAG = "hum"
SAMPLE_RATES = (16000, 22050, 44100, 48000)
MAX_AUDIO_HZ = 7000.0           # every sound stays below 16 kHz's Nyquist: resampling loses nothing

DEFAULTS = dict(clips=400, seed=0, seconds=3.0, size=80, fps=16, test_fraction=0.25)

# Object placement, as fractions of the frame side. The CPU preset (tiny-4l-cpu) resizes the short
# side to 72 (x1.0-1.15 jitter in training) and crops 64: an evaluation crop keeps the central 89 %
# of the frame. The object's centre stays in the middle 20 %; at rest it reaches at most 0.27 (0.35
# for a triangle's vertices) from there, so an evaluation crop keeps it whole except at the peak of
# a swell. It is about 30 px wide in the 64-px crop (two patches of 16 px): big enough that a masked
# autoencoder must know its shape to reconstruct the masked tubelets, and the background is kept
# quiet (faint texture and stripes) so that the pixels the loss sees are mostly the object's.
# (Measured: with objects 15-20 px wide on a busy background, AV-MAE initialisation finetuned no
# better than random init at the quickstart's scale; README, "How the quickstart was sized".)
CENTRE_BOX = (0.4, 0.6)
RADIUS_RANGE = (0.22, 0.27)
EVENT_SWELL = 0.3               # radius x (1 + 0.3) at an event onset
FLASH = 0.6                     # colour moves 60 % of the way to white / black at an onset
EVENT_SECONDS = (0.12, 0.3)     # length of an event's sound (and the time scale of its swell)
EVENT_GAP = (0.4, 1.0)          # seconds between onsets
DECAY = 0.4                     # an event's envelope decays as exp(-t / (DECAY x its length))
TEXTURE_AMP = (0.0, 0.03)       # background texture amplitude (RGB units)
STRIPE_AMP = (0.0, 0.02)        # drifting stripe distractor amplitude
FRAME_NOISE = (0.005, 0.03)     # per-pixel noise std
NOISE_LEVEL = (0.003, 0.03)     # audio background noise std, relative to an event
HUM_LEVEL = (0.03, 0.12)        # mains hum amplitude, when the clip has one (half of them)
BACKGROUND_SATURATION = (0.2, 0.8)
OBJECT_SATURATION = (0.3, 1.0)
PITCH_OCTAVES = 1.3             # base pitch 400 Hz x 2 ** U(0, PITCH_OCTAVES)


def class_parts(k: int) -> tuple[int, int]:
    """Class index -> (shape index, timbre index)."""
    return k // 2, (k // 2 + k % 2) % 4


def class_name(k: int) -> str:
    s, t = class_parts(k)
    return f"{SHAPES[s]}_{TIMBRES[t]}"


def class_table() -> list[dict]:
    """One dict per class: index, name, shape, timbre, and the verb / noun columns' values."""
    rows = []
    for k in range(NUM_CLASSES):
        s, t = class_parts(k)
        rows.append(dict(index=k, name=class_name(k), shape=SHAPES[s], timbre=TIMBRES[t],
                         verb=TIMBRES[t], noun=SHAPES[s]))
    return rows


# ---------------------------------------------------------------------------------------------
# What one clip looks and sounds like (all random draws happen here)
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ClipSpec:
    """Everything that defines one clip; rendering only adds seeded noise arrays."""

    seed: int
    index: int
    label: int
    seconds: float
    size: int
    fps: int
    # events: onset frame n is at time n / fps, in both streams
    event_frames: tuple[int, ...]
    event_durations: tuple[float, ...]     # seconds of sound (and envelope scale of the swell)
    event_gains: tuple[float, ...]
    # video nuisance
    background: tuple[float, float, float]  # RGB in [0, 1]
    colour: tuple[float, float, float]
    flash_to: float                          # 1.0 (towards white) or 0.0 (towards black)
    texture_amp: float
    stripe_amp: float
    stripe_period: float                     # pixels
    stripe_angle: float
    stripe_drift: float                      # radians per second
    frame_noise: float
    centre: tuple[float, float]              # pixels (x, y) at t = 0
    velocity: tuple[float, float]            # pixels per second, reflected inside CENTRE_BOX
    radius: float                            # pixels
    angle: float                             # radians at t = 0
    spin: float                              # radians per second
    # audio nuisance
    sample_rate: int
    channels: int
    pitch: float                             # Hz, the clip's base frequency
    pitch_jitter: tuple[float, ...]          # per-event factor
    chirp_up: bool
    pan: float                               # -1 left .. 1 right (stereo only)
    noise_level: float                       # background noise std relative to an event
    hum: float                               # mains hum amplitude, 0 = no hum
    hum_hz: float
    peak: float                              # peak amplitude after normalisation

    @property
    def shape(self) -> str:
        return SHAPES[class_parts(self.label)[0]]

    @property
    def timbre(self) -> str:
        return TIMBRES[class_parts(self.label)[1]]

    @property
    def num_frames(self) -> int:
        return int(round(self.seconds * self.fps))

    @property
    def num_samples(self) -> int:
        return int(round(self.seconds * self.sample_rate))

    @property
    def event_times(self) -> list[float]:
        return [n / self.fps for n in self.event_frames]

    @property
    def tags(self) -> list[str]:
        return [f"shape_{self.shape}", f"timbre_{self.timbre}"] + ([HUM_TAG] if self.hum > 0 else [])


def _event_frames(rng: np.random.Generator, seconds: float, fps: int) -> list[int]:
    """Onset frames: the first in 0.15-0.6 s, then gaps of 0.4-1.0 s, the last >= 0.35 s before
    the end so its sound fits. Gaps of at most 1 s mean any 2.56 s audio window (the CPU
    preset) hears at least two events, so the timbre is always audible."""
    frames: list[int] = []
    t = rng.uniform(0.15, 0.6)
    while t <= seconds - EVENT_SECONDS[1] - 0.05:
        n = int(round(t * fps))
        if not frames or n > frames[-1]:
            frames.append(n)
        t += rng.uniform(*EVENT_GAP)
    return frames


def _hsv_to_rgb(h: float, s: float, v: float) -> tuple[float, float, float]:
    i = int(h * 6) % 6
    f = h * 6 - int(h * 6)
    p, q, u = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    return [(v, u, p), (q, v, p), (p, v, u), (p, q, v), (u, p, v), (v, p, q)][i]


def _luma(rgb) -> float:
    return 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]


def clip_spec(seed: int, index: int, label: int, *, seconds: float = DEFAULTS["seconds"],
              size: int = DEFAULTS["size"], fps: int = DEFAULTS["fps"]) -> ClipSpec:
    """Draw clip `index`'s nuisances. None depends on `label` (so none leaks it)."""
    rng = np.random.default_rng([seed, index, 0])
    frames = _event_frames(rng, seconds, fps)
    n = len(frames)
    dark = rng.random() < 0.5          # a dark background gets a light object, and vice versa
    while True:                        # redraw until the object stands out in brightness too
        background = _hsv_to_rgb(rng.random(), rng.uniform(*BACKGROUND_SATURATION),
                                 rng.uniform(0.1, 0.3) if dark else rng.uniform(0.7, 0.9))
        colour = _hsv_to_rgb(rng.random(), rng.uniform(*OBJECT_SATURATION),
                             rng.uniform(0.75, 1.0) if dark else rng.uniform(0.05, 0.3))
        if abs(_luma(colour) - _luma(background)) >= 0.3:
            break
    lo, hi = CENTRE_BOX
    direction = rng.uniform(0, 2 * np.pi)
    speed = rng.uniform(0.05, 0.25) * size
    return ClipSpec(
        seed=seed, index=index, label=label, seconds=seconds, size=size, fps=fps,
        event_frames=tuple(frames),
        event_durations=tuple(float(x) for x in rng.uniform(*EVENT_SECONDS, n)),
        event_gains=tuple(float(x) for x in rng.uniform(0.6, 1.0, n)),
        background=tuple(float(x) for x in background),
        colour=tuple(float(x) for x in colour),
        flash_to=1.0 if dark else 0.0,
        texture_amp=float(rng.uniform(*TEXTURE_AMP)),
        stripe_amp=float(rng.uniform(*STRIPE_AMP)),
        stripe_period=float(rng.uniform(0.1, 0.3) * size),
        stripe_angle=float(rng.uniform(0, np.pi)),
        stripe_drift=float(rng.uniform(-3, 3)),
        frame_noise=float(rng.uniform(*FRAME_NOISE)),
        centre=(float(rng.uniform(lo, hi) * size), float(rng.uniform(lo, hi) * size)),
        velocity=(float(speed * np.cos(direction)), float(speed * np.sin(direction))),
        radius=float(rng.uniform(*RADIUS_RANGE) * size),
        angle=float(rng.uniform(0, 2 * np.pi)),
        spin=float(rng.uniform(-1.0, 1.0)),
        sample_rate=int(rng.choice(SAMPLE_RATES)),
        channels=2 if rng.random() < 0.3 else 1,
        pitch=float(400 * 2 ** rng.uniform(0, PITCH_OCTAVES)),
        pitch_jitter=tuple(float(2 ** x) for x in rng.uniform(-0.1, 0.1, n)),
        chirp_up=bool(rng.random() < 0.5),
        pan=float(rng.uniform(-0.7, 0.7)),
        noise_level=float(rng.uniform(*NOISE_LEVEL)),
        hum=float(rng.uniform(*HUM_LEVEL)) if rng.random() < 0.5 else 0.0,
        hum_hz=float(rng.uniform(50, 100)),
        peak=float(rng.uniform(0.3, 0.9)),
    )


# ---------------------------------------------------------------------------------------------
# Video: numpy drawing
# ---------------------------------------------------------------------------------------------

def _smooth_field(rng: np.random.Generator, size: int, cells: int = 4) -> np.ndarray:
    """(size, size) smooth random texture in [-1, 1]: bilinear upsampling of a coarse grid."""
    coarse = rng.uniform(-1.0, 1.0, (cells + 1, cells + 1))
    x = np.linspace(0, cells, size)
    rows = np.stack([np.interp(x, np.arange(cells + 1), r) for r in coarse])      # (cells+1, size)
    return np.stack([np.interp(x, np.arange(cells + 1), c) for c in rows.T], 1)   # (size, size)


def _reflect(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Bounce `x` back and forth inside [lo, hi] (a triangle wave)."""
    span = hi - lo
    y = np.mod(x - lo, 2 * span)
    return lo + np.where(y > span, 2 * span - y, y)


def shape_sdf(shape: str, x: np.ndarray, y: np.ndarray, radius: np.ndarray) -> np.ndarray:
    """Signed distance (pixels, < 0 inside) of a shape centred at the origin, already rotated.

    Sizes are chosen so that the four shapes have similar areas (2.2-3.1 r^2): size is not a cue.
    """
    d = np.sqrt(x * x + y * y)
    if shape == "disc":
        return d - radius
    if shape == "ring":                                  # outer radius r, inner r / 2
        return np.abs(d - 0.75 * radius) - 0.25 * radius
    if shape == "square":                                # half-side 0.85 r
        return np.maximum(np.abs(x), np.abs(y)) - 0.85 * radius
    if shape == "triangle":                              # equilateral, circumradius 1.3 r
        normals = [(0.0, 1.0), (np.sqrt(3) / 2, -0.5), (-np.sqrt(3) / 2, -0.5)]   # y points down
        return np.max([nx * x + ny * y for nx, ny in normals], axis=0) - 0.65 * radius
    raise ValueError(f"unknown shape {shape!r}")


def event_envelope(spec: ClipSpec, times: np.ndarray) -> np.ndarray:
    """Visual event strength at `times` (s): 1 on an onset frame, decaying with the sound."""
    v = np.zeros_like(times)
    for n, d in zip(spec.event_frames, spec.event_durations):
        dt = times - n / spec.fps
        v = np.maximum(v, np.where(dt >= -1e-9, np.exp(-np.clip(dt, 0, None) / (DECAY * d)), 0.0))
    return v


def render_video(spec: ClipSpec) -> np.ndarray:
    """uint8 (T, H, W, 3) RGB frames; frame n shows time n / fps."""
    rng = np.random.default_rng([spec.seed, spec.index, 1])
    S, T = spec.size, spec.num_frames
    yy, xx = np.mgrid[0:S, 0:S].astype(np.float64) + 0.5                         # pixel centres
    times = np.arange(T) / spec.fps                                                # (T,)

    # Background: colour + smooth texture (tinted per channel) + drifting stripes + pixel noise.
    tint = rng.uniform(0.5, 1.0, 3)
    texture = _smooth_field(rng, S)[..., None] * tint * spec.texture_amp          # (S, S, 3)
    ca, sa = np.cos(spec.stripe_angle), np.sin(spec.stripe_angle)
    phase = 2 * np.pi * (xx * ca + yy * sa) / spec.stripe_period                  # (S, S)
    stripes = spec.stripe_amp * np.sin(phase[None] + spec.stripe_drift * times[:, None, None])
    frames = np.asarray(spec.background) + texture[None] + stripes[..., None]     # (T, S, S, 3)

    # The object: position bounces in the centre box; it swells and flashes on events.
    lo, hi = CENTRE_BOX[0] * S, CENTRE_BOX[1] * S
    cx = _reflect(spec.centre[0] + spec.velocity[0] * times, lo, hi)[:, None, None]  # (T, 1, 1)
    cy = _reflect(spec.centre[1] + spec.velocity[1] * times, lo, hi)[:, None, None]
    ev = event_envelope(spec, times)                                               # (T,)
    radius = (spec.radius * (1 + EVENT_SWELL * ev))[:, None, None]
    angle = (spec.angle + spec.spin * times)[:, None, None]
    dx, dy = xx[None] - cx, yy[None] - cy                                          # (T, S, S)
    c, s = np.cos(angle), np.sin(angle)
    sdf = shape_sdf(spec.shape, c * dx + s * dy, -s * dx + c * dy, radius)
    alpha = np.clip(0.5 - sdf, 0.0, 1.0)[..., None]                                # 1-px antialiasing
    colour = np.asarray(spec.colour)[None] + FLASH * ev[:, None] * (spec.flash_to - np.asarray(spec.colour))
    frames = frames * (1 - alpha) + colour[:, None, None, :] * alpha

    frames = frames + rng.normal(0.0, spec.frame_noise, frames.shape)
    return (np.clip(frames, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# Audio: numpy synthesis
# ---------------------------------------------------------------------------------------------

def _burst(timbre: str, f0: float, duration: float, sr: int, chirp_up: bool,
           rng: np.random.Generator) -> np.ndarray:
    """One event's sound, (n,) float with unit RMS before its envelope."""
    t = np.arange(int(round(duration * sr))) / sr
    if timbre == "tone":                                 # a pure sine
        wave = np.sin(2 * np.pi * f0 * t)
    elif timbre == "buzz":                               # odd harmonics 1/h: a band-limited square
        wave = sum(np.sin(2 * np.pi * h * f0 * t) / h for h in range(1, 64, 2) if h * f0 < MAX_AUDIO_HZ)
    elif timbre == "chirp":                              # 1.5 octaves up or down over the event
        rate = (1.5 if chirp_up else -1.5) * np.log(2) / duration
        wave = np.sin(2 * np.pi * f0 * np.expm1(rate * t) / rate)
    elif timbre == "noise":                              # white noise band-passed to 1.5-6 x f0
        spectrum = np.fft.rfft(rng.standard_normal(len(t)))
        freqs = np.fft.rfftfreq(len(t), 1 / sr)
        spectrum[(freqs < 1.5 * f0) | (freqs > min(6 * f0, MAX_AUDIO_HZ))] = 0
        wave = np.fft.irfft(spectrum, len(t))
    else:
        raise ValueError(f"unknown timbre {timbre!r}")
    return wave / (np.sqrt(np.mean(wave ** 2)) + 1e-12)


def render_audio(spec: ClipSpec) -> np.ndarray:
    """float32 (channels, samples) at spec.sample_rate, peak = spec.peak (never clips)."""
    rng = np.random.default_rng([spec.seed, spec.index, 2])
    sr, S = spec.sample_rate, spec.num_samples
    events = np.zeros(S)
    for n, d, g, j in zip(spec.event_frames, spec.event_durations, spec.event_gains, spec.pitch_jitter):
        wave = _burst(spec.timbre, spec.pitch * j, d, sr, spec.chirp_up, rng)
        t = np.arange(len(wave)) / sr
        # 5 ms attack (the onset), exponential decay, 10 ms fade so the burst ends at zero
        env = np.minimum(t / 0.005, 1) * np.exp(-t / (DECAY * d)) * np.minimum((d - t) / 0.01, 1)
        start = int(round(n / spec.fps * sr))
        stop = min(S, start + len(wave))
        events[start:stop] += (g * env * wave)[: stop - start]

    t = np.arange(S) / sr
    hum = spec.hum * sum(a * np.sin(2 * np.pi * h * spec.hum_hz * t + rng.uniform(0, 2 * np.pi))
                         for h, a in ((1, 1.0), (2, 0.5), (3, 0.25)))
    if spec.channels == 2:                               # constant-power pan of the object
        gains = np.array([np.cos((spec.pan + 1) * np.pi / 4), np.sin((spec.pan + 1) * np.pi / 4)]) * np.sqrt(2)
    else:
        gains = np.ones(1)
    audio = gains[:, None] * events[None] + hum[None]
    audio = audio + rng.normal(0.0, spec.noise_level, audio.shape)
    audio = audio * (spec.peak / (np.abs(audio).max() + 1e-12))
    return audio.astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Encoding
# ---------------------------------------------------------------------------------------------

def write_clip(path: str | os.PathLike, spec: ClipSpec) -> None:
    """Encode `spec` as an mp4 (H.264 yuv420p + AAC), written to a temporary name then renamed."""
    import av

    path = Path(path)
    frames, audio = render_video(spec), render_audio(spec)
    tmp = path.with_name(path.name + ".part")
    with av.open(str(tmp), mode="w", format="mp4") as container:
        video = container.add_stream("libx264", rate=Fraction(spec.fps))
        video.width = video.height = spec.size
        video.pix_fmt = "yuv420p"
        video.codec_context.gop_size = spec.fps          # a keyframe every second: cheap seeks
        # Bit-exact output: one thread, and no macroblock-tree rate control, whose floating point
        # changes with the process's FP state (importing torch alters it) and so with worker count.
        video.codec_context.thread_count = 1
        video.options = {"crf": "18", "preset": "fast", "x264-params": "mbtree=0"}
        layout = "stereo" if spec.channels == 2 else "mono"
        sound = container.add_stream("aac", rate=spec.sample_rate, layout=layout)
        sound.codec_context.thread_count = 1

        chunk, pos = 1024, 0                             # AAC's frame size
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = i
            container.mux(video.encode(frame))
            # interleave: audio up to the end of this video frame
            until = audio.shape[1] if i == len(frames) - 1 else int(round((i + 1) / spec.fps * spec.sample_rate))
            while pos < until:
                part = np.ascontiguousarray(audio[:, pos:pos + chunk])
                af = av.AudioFrame.from_ndarray(part, format="fltp", layout=layout)
                af.sample_rate, af.pts = spec.sample_rate, pos
                container.mux(sound.encode(af))
                pos += part.shape[1]
        container.mux(video.encode(None))
        container.mux(sound.encode(None))
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------
# The dataset: labels, split, parallel generation, manifests
# ---------------------------------------------------------------------------------------------

def split_plan(clips: int, seed: int, test_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """(labels (clips,) int, is_test (clips,) bool): balanced classes in a seeded order, and a
    split stratified by class, round(test_fraction * n_k) of each class's n_k clips (at least 1
    and at most n_k - 1) in test."""
    rng = np.random.default_rng([seed, 2**31 - 1])     # a stream no clip index uses
    labels = rng.permutation(np.arange(clips) % NUM_CLASSES)
    is_test = np.zeros(clips, dtype=bool)
    for k in range(NUM_CLASSES):
        members = np.flatnonzero(labels == k)
        n_test = min(max(int(round(test_fraction * len(members))), 1), len(members) - 1)
        is_test[rng.permutation(members)[:n_test]] = True
    return labels, is_test


def clip_path(index: int) -> str:
    return f"clips/{index:05d}.mp4"


def _make_clip(job: tuple) -> dict:
    """Worker: render and write one clip; returns its clips.jsonl record."""
    out_dir, seed, index, label, seconds, size, fps = job
    spec = clip_spec(seed, index, label, seconds=seconds, size=size, fps=fps)
    write_clip(Path(out_dir) / clip_path(index), spec)
    return dict(path=clip_path(index), label=class_name(label), labels=";".join(spec.tags),
                sample_rate=spec.sample_rate, channels=spec.channels, fps=fps, size=size,
                seconds=seconds, event_times=[round(x, 6) for x in spec.event_times])


def _validate(out_dir, clips, seed, seconds, size, fps, test_fraction, workers) -> Path:
    if clips < 2 * NUM_CLASSES:
        raise ConfigError(f"--clips {clips} is too few: use at least {2 * NUM_CLASSES} "
                          f"(two per class, so each of the {NUM_CLASSES} classes is in train and test)")
    if seed < 0:
        raise ConfigError(f"--seed {seed} must be >= 0")
    if not 1.0 <= seconds <= 60.0:
        raise ConfigError(f"--seconds {seconds} must be between 1 and 60")
    if size % 16 or not 32 <= size <= 1024:
        raise ConfigError(f"--size {size} must be a multiple of 16 between 32 and 1024")
    if not 4 <= fps <= 60:
        raise ConfigError(f"--fps {fps} must be between 4 and 60")
    if not 0.0 < test_fraction < 1.0:
        raise ConfigError(f"--test-fraction {test_fraction} must be between 0 and 1 (exclusive)")
    if workers < 1:
        raise ConfigError(f"--workers {workers} must be >= 1")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"OUT_DIR {out} exists and is not a folder: choose another path")
    return out


# What a dataset folder holds: an existing one is replaced only with --overwrite.
DATASET_FILES = ("clips", "train.csv", "test.csv", "clips.jsonl", "classes.json")


def generate(out_dir: str | os.PathLike, *, clips: int = DEFAULTS["clips"], seed: int = DEFAULTS["seed"],
             seconds: float = DEFAULTS["seconds"], size: int = DEFAULTS["size"], fps: int = DEFAULTS["fps"],
             test_fraction: float = DEFAULTS["test_fraction"], workers: int = 1,
             progress: bool = True, overwrite: bool = False) -> dict:
    """Write the dataset to `out_dir`; returns a summary (clip counts, paths, seconds taken). A
    dataset already there is refused unless overwrite=True (then its clips/ is replaced)."""
    from tqdm import tqdm

    out = _validate(out_dir, clips, seed, seconds, size, fps, test_fraction, workers)
    existing = [n for n in DATASET_FILES if (out / n).exists()]
    if existing and not overwrite:
        raise ConfigError(f"OUT_DIR {out} already holds a dataset ({', '.join(existing)}): add "
                          "--overwrite to replace it, or choose another folder")
    if existing and (out / "clips").is_dir():
        shutil.rmtree(out / "clips")
    try:
        (out / "clips").mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"cannot create {out / 'clips'}: {err.strerror}") from None
    labels, is_test = split_plan(clips, seed, test_fraction)
    jobs = [(str(out), seed, i, int(labels[i]), float(seconds), size, fps) for i in range(clips)]

    start = time.perf_counter()
    records: list[dict | None] = [None] * clips
    bar = tqdm(total=clips, desc="avmae synth", unit="clip", file=sys.stderr, disable=not progress)
    if workers == 1:
        for job in jobs:
            records[job[2]] = _make_clip(job)
            bar.update()
    else:
        # spawn, not fork: the parent may hold torch's threads (the CLI imports every command)
        ctx = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(workers, mp_context=ctx) as pool:
            futures = {pool.submit(_make_clip, job): job[2] for job in jobs}
            for future in concurrent.futures.as_completed(futures):
                records[futures[future]] = future.result()
                bar.update()
    bar.close()

    classes = class_table()
    for name, want in (("train.csv", False), ("test.csv", True)):
        with open(out / name, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["path", "label", "labels", "verb", "noun"])
            writer.writeheader()
            for i in np.flatnonzero(is_test == want):
                row = classes[int(labels[i])]
                writer.writerow(dict(path=records[i]["path"], label=row["name"], labels=records[i]["labels"],
                                     verb=row["verb"], noun=row["noun"]))
    with open(out / "clips.jsonl", "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    description = dict(
        num_classes=NUM_CLASSES, classes=classes, shapes=list(SHAPES), timbres=list(TIMBRES),
        tags=[f"shape_{s}" for s in SHAPES] + [f"timbre_{t}" for t in TIMBRES] + [HUM_TAG],
        rule="shape = SHAPES[k // 2], timbre = TIMBRES[(k // 2 + k % 2) % 4]: video alone or audio "
             "alone leaves 2 candidate classes; both identify the class",
        columns=dict(label="class name '<shape>_<timbre>'", labels="';'-separated tags: shape_<s>, "
                     "timbre_<t>, and 'hum' when a mains hum is in the background",
                     verb="the timbre (heard)", noun="the shape (seen)"),
        generator=dict(clips=clips, seed=seed, seconds=seconds, size=size, fps=fps,
                       test_fraction=test_fraction, sample_rates=list(SAMPLE_RATES)),
    )
    (out / "classes.json").write_text(json.dumps(description, indent=2) + "\n")
    return dict(out_dir=str(out), clips=clips, train=int((~is_test).sum()), test=int(is_test.sum()),
                seconds_taken=round(time.perf_counter() - start, 2))


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out_dir", metavar="OUT_DIR", help="folder for clips/, train.csv, test.csv, classes.json")
    parser.add_argument("--clips", type=int, default=DEFAULTS["clips"],
                        help="clips in train + test (default %(default)s)")
    parser.add_argument("--seed", type=int, default=DEFAULTS["seed"], help="same seed, same dataset (default %(default)s)")
    parser.add_argument("--seconds", type=float, default=DEFAULTS["seconds"], help="clip length (default %(default)s)")
    parser.add_argument("--size", type=int, default=DEFAULTS["size"],
                        help="square frame side in pixels, a multiple of 16 (default %(default)s)")
    parser.add_argument("--fps", type=int, default=DEFAULTS["fps"], help="video frame rate (default %(default)s)")
    parser.add_argument("--test-fraction", type=float, default=DEFAULTS["test_fraction"],
                        help="fraction of each class in test.csv (default %(default)s)")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1),
                        help="processes encoding clips (default min(2, CPUs))")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a dataset already in OUT_DIR (its clips and manifests)")


def run(args: argparse.Namespace) -> int:
    summary = generate(args.out_dir, clips=args.clips, seed=args.seed, seconds=args.seconds, size=args.size,
                       fps=args.fps, test_fraction=args.test_fraction, workers=args.workers,
                       overwrite=args.overwrite)
    print(f"wrote {summary['clips']} clips ({summary['train']} train, {summary['test']} test) to "
          f"{summary['out_dir']} in {summary['seconds_taken']} s")
    return 0
