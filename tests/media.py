"""Test media written with PyAV: small real files for the decoder and the broken-media policy.

Every writer takes the output path and returns it. Video frames encode their own index so tests
can check which source frames were sampled (`frame_index`); audio is a tone, a tone burst or any
signal from `audio_fn(times) -> (channels, samples)`.

    write_clip(path, seconds=2.0, fps=25, size=(64, 48), ...)   normal mp4: H.264 + AAC
    write_video_only / write_audio_only / write_one_frame / write_short (0.2 s)
    write_4k (3840x2160, 2 frames) / write_odd_size (97x61) / write_surround (5.1 at 48 kHz)
    write_8khz / write_vfr (25 fps then 10 fps) / write_rotated (display matrix)
    write_zero_bytes / write_garbage / write_truncated (keeps the first bytes of a clip)
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Callable

import av
import numpy as np

# ---- frames that say which frame they are ----------------------------------------------------

def index_frame(i: int, width: int, height: int) -> np.ndarray:
    """uint8 (H, W, 3): left half grey 16*(i % 16) + 8, right half grey 16*(i // 16) + 8.

    Flat grey survives H.264 and the RGB -> YUV -> RGB round trip within a few levels, and steps
    of 16 keep the index readable after scaling (up to 256 frames).
    """
    img = np.empty((height, width, 3), np.uint8)
    img[:, : width // 2] = 16 * (i % 16) + 8
    img[:, width // 2:] = 16 * (i // 16) + 8
    return img


def frame_index(img: np.ndarray) -> int:
    """Read back `index_frame`'s index from a decoded (H, W, 3) frame (any size)."""
    h, w = img.shape[:2]
    low = float(img[h // 4: 3 * h // 4, w // 8: 3 * w // 8].mean())
    high = float(img[h // 4: 3 * h // 4, 5 * w // 8: 7 * w // 8].mean())
    return int(round((low - 8) / 16)) + 16 * int(round((high - 8) / 16))


def tone(freq: float = 440.0, amplitude: float = 0.3) -> Callable[[np.ndarray], np.ndarray]:
    """audio_fn for a sine tone: times (S,) -> (1, S)."""
    return lambda t: (amplitude * np.sin(2 * np.pi * freq * t))[None].astype(np.float32)


def tone_burst(centre: float, width: float = 0.1, freq: float = 1000.0,
               amplitude: float = 0.5) -> Callable[[np.ndarray], np.ndarray]:
    """audio_fn: silence except a tone in [centre - width/2, centre + width/2]."""
    def fn(t):
        on = np.abs(t - centre) <= width / 2
        return (on * amplitude * np.sin(2 * np.pi * freq * t))[None].astype(np.float32)
    return fn


# ---- the writer --------------------------------------------------------------------------------

def write_clip(path, *, seconds: float = 2.0, fps: int = 25, size: tuple[int, int] = (64, 48),
               sample_rate: int = 16000, layout: str = "mono", video: bool = True,
               audio: bool = True, num_frames: int | None = None,
               frame_fn: Callable[[int, int, int], np.ndarray] = index_frame,
               audio_fn: Callable[[np.ndarray], np.ndarray] | None = None,
               video_codec: str = "libx264", pix_fmt: str = "yuv420p", gop: int = 10,
               frame_times: list[float] | None = None, rotation: int = 0,
               faststart: bool = False, audio_seconds: float | None = None,
               container: str = "mp4", audio_codec: str = "aac") -> Path:
    """Write a clip, an mp4 with H.264 + AAC by default. size = (width, height).

    gop: keyframe interval, small so that seeking lands inside the clip. frame_times: explicit
    presentation times in seconds (variable frame rate), else i / fps. audio_fn: times (S,) ->
    (1 or channels, S) float in [-1, 1]; a 440 Hz tone by default. faststart: index at the front
    (so a truncated copy still has it).
    """
    path = Path(path)
    width, height = size
    # the video clock: 1 / fps for a constant rate (every container takes it, AVI needs it),
    # milliseconds for explicit frame times
    clock = Fraction(1, 1000) if frame_times is not None else Fraction(1, fps)
    if frame_times is None:
        n = num_frames if num_frames is not None else int(round(seconds * fps))
        frame_times = [i / fps for i in range(n)]
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", format=container, options=options) as out:
        vs = as_ = None
        if video:
            codec_options = {"crf": "12", "preset": "ultrafast"} if video_codec == "libx264" else {}
            vs = out.add_stream(video_codec, rate=fps, options=codec_options)
            vs.width, vs.height, vs.pix_fmt = width, height, pix_fmt
            vs.codec_context.gop_size = gop
            vs.time_base = vs.codec_context.time_base = clock
            if rotation:
                vs.set_display_rotation(rotation)
        if audio:
            as_ = out.add_stream(audio_codec, rate=sample_rate, layout=layout)
        if vs is not None:
            for i, t in enumerate(frame_times):
                frame = av.VideoFrame.from_ndarray(frame_fn(i, width, height), format="rgb24")
                frame.pts = int(round(t / clock))
                frame.time_base = clock
                for packet in vs.encode(frame):
                    out.mux(packet)
            for packet in vs.encode():
                out.mux(packet)
        if as_ is not None:
            total = audio_seconds if audio_seconds is not None else seconds
            _write_audio(out, as_, total, sample_rate, layout, audio_fn or tone())
    return path


def _write_audio(out, stream, seconds, sample_rate, layout, audio_fn):
    channels = av.AudioLayout(layout).nb_channels
    n = int(round(seconds * sample_rate))
    t = np.arange(n) / sample_rate
    signal = np.asarray(audio_fn(t), np.float32)
    signal = np.broadcast_to(signal, (channels, n)) if signal.shape[0] == 1 else signal
    formats = stream.codec_context.codec.audio_formats            # what the encoder takes
    fmt = next((f for f in formats if f.name in ("fltp", "flt")), formats[0])
    if fmt.name.startswith("s16"):
        signal = np.round(signal * 32767).astype(np.int16)
    elif fmt.name.startswith("s32"):
        signal = np.round(signal * 2147483647.0).astype(np.int32)
    chunk = stream.codec_context.frame_size or 1024           # 1024 for AAC
    for s in range(0, n, chunk):
        block = signal[:, s: s + chunk]
        block = np.ascontiguousarray(block if fmt.is_planar else block.T.reshape(1, -1))
        frame = av.AudioFrame.from_ndarray(block, format=fmt.name, layout=layout)
        frame.sample_rate = sample_rate
        frame.pts = s
        frame.time_base = Fraction(1, sample_rate)
        for packet in stream.encode(frame):
            out.mux(packet)
    for packet in stream.encode():
        out.mux(packet)


# ---- the catalogue of awkward files ------------------------------------------------------------

def write_video_only(path, **kw) -> Path:
    return write_clip(path, audio=False, **kw)


def write_audio_only(path, **kw) -> Path:
    return write_clip(path, video=False, **kw)


def write_one_frame(path, **kw) -> Path:
    return write_clip(path, num_frames=1, seconds=0.04, **kw)


def write_short(path, seconds: float = 0.2, **kw) -> Path:
    return write_clip(path, seconds=seconds, **kw)


def write_4k(path, **kw) -> Path:
    return write_clip(path, size=(3840, 2160), num_frames=2, seconds=0.08, **kw)


def write_odd_size(path, size=(97, 61), **kw) -> Path:
    # 4:2:0 needs even sizes; H.264 in 4:4:4 takes any size
    return write_clip(path, size=size, pix_fmt="yuv444p", **kw)


def write_surround(path, **kw) -> Path:
    return write_clip(path, sample_rate=48000, layout="5.1", **kw)


def write_8khz(path, **kw) -> Path:
    return write_clip(path, sample_rate=8000, **kw)


def write_vfr(path, **kw) -> Path:
    """1 s at 25 fps, then 1 s at 10 fps (frame k's index is still k)."""
    times = [i / 25 for i in range(25)] + [1.0 + i / 10 for i in range(10)]
    return write_clip(path, frame_times=times, seconds=2.0, **kw)


def write_rotated(path, rotation: int = -90, **kw) -> Path:
    return write_clip(path, rotation=rotation, **kw)


def write_zero_bytes(path) -> Path:
    path = Path(path)
    path.write_bytes(b"")
    return path


def write_garbage(path, size: int = 20000, seed: int = 0) -> Path:
    path = Path(path)
    path.write_bytes(np.random.default_rng(seed).integers(0, 256, size, np.uint8).tobytes())
    return path


def write_truncated(path, keep: float = 0.5, faststart: bool = True, **kw) -> Path:
    """A clip cut after `keep` of its bytes. With faststart the index survives and the first
    frames still decode; without it the index (at the end) is lost and nothing decodes."""
    path = Path(path)
    full = path.with_name(path.stem + "-full" + path.suffix)
    write_clip(full, faststart=faststart, **kw)
    data = full.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    full.unlink()
    return path
