"""Decoding one clip with PyAV (FFmpeg): T video frames at a stride and a mono 16 kHz waveform.

    read_clip(path, cfg) -> RawClip(frames uint8 (T, H, W, 3), waveform float32 (S,), ...)
    read_whole_clip(path, cfg, every=k, encode=f) -> WholeClip (every k-th frame of the whole
        clip, each encoded; the audio of every window the clip allows): `avmae prepare`

The time model, in seconds on the file's own clock (presentation timestamps, so variable frame
rate works):

- The clip is the file, or the segment [start, end] of it (EPIC-Kitchens style); D = its length.
- Video window: T = cfg.num_frames frames, one every cfg.frame_stride source frames, so it lasts
  Wv = T * stride / fps, with fps the stream's average rate. Target times are a grid of step
  stride / fps starting on a source frame; each target takes the frame nearest in time.
- Audio window: Wa = audio_seconds (S = round(audio_seconds * sample_rate) samples), centred on
  the centre of the video window, so the two modalities stay in sync (paper Sec. 4.1).
- Where the window centre may go: each modality's window lies inside the clip when the clip is
  long enough, else the clip lies inside the audio window, and a video window starts at the clip
  start. The centre range is the intersection over the decoded modalities (it always contains
  D / 2 for audio; it is the video rule's own range if they do not meet). Training (`rng` given):
  uniform over the range. Evaluation: view v of n evenly spaced over the range, end to end
  (n = 1: the middle, i.e. the clip centre).

Padding policy (each is reported in `RawClip.problems`):
- Video shorter than its window (or a file that ends early): the last decoded frame is repeated;
  a window that starts before the first frame repeats the first frame. Frames after a segment's
  `end` are not used.
- Audio shorter than its window: silence (zeros) where the window has no audio, so the waveform
  stays aligned in time with the video. With the eval centre that is zero-padding on both sides,
  symmetric around the available audio (when the clip is at least as long as the video window,
  or has no video; a shorter video window starts at the clip start and the audio follows it).
  A segment's audio window may use the file's audio outside the segment (context, as for action
  segments); only time outside the file is zero.
  Paddings under PAD_TOLERANCE (codec priming, AAC frame rounding) are not reported.

Broken media never raises anything but MediaError: unreadable files (missing, zero bytes, garbage,
truncated before anything decodes, no audio or video stream) raise it; a missing stream gives
None for that modality; a stream that fails part-way returns what decoded, padded, with a note.

Speed: only the packets from the keyframe before the window to the last needed frame are decoded
(one seek per modality, other streams' packets discarded by the demuxer); FFmpeg's swscale
converts and resizes the chosen frames to RGB, nothing per pixel runs in Python. Rotation from
the display matrix (phones) is applied after resizing with np.rot90 (multiples of 90 degrees;
a mirrored display matrix is not undone). Non-square pixels (sample aspect ratio) are resized to
square ones.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from avmae.config import DataConfig

OPEN_TIMEOUT = 30.0      # seconds without data before FFmpeg gives up (network file systems)
READ_TIMEOUT = 30.0
SEEK_IF_AFTER = 0.5      # seconds: windows starting earlier than this decode from the file start
AUDIO_PREROLL = 0.3      # seconds decoded before the audio window: the first frame after a seek
                         # is codec warm-up (an AAC frame is 1024 samples, 128 ms at 8 kHz)
PAD_TOLERANCE = 0.05     # seconds of padding too small to report
_DECODE_ERRORS = (av.FFmpegError, OSError, ValueError, EOFError)       # raised by PyAV
_HEADER_ERRORS = _DECODE_ERRORS + (TypeError, ZeroDivisionError, OverflowError)  # odd metadata


# swscale threads: an argument since PyAV 15 or so; older versions scale on one thread anyway
_ONE_THREAD = {"threads": 1} if "threads" in (VideoReformatter.reformat.__doc__ or "") else {}


class MediaError(Exception):
    """The clip cannot be used: missing, zero bytes, corrupt, or no readable stream."""


@dataclass
class RawClip:
    frames: np.ndarray | None     # uint8 (T, H, W, 3), short side = cfg.short_side; None = no video
    waveform: np.ndarray | None   # float32 (S,) mono at cfg.sample_rate; None = no audio
    duration: float               # seconds of the source (or of its [start, end] segment)
    problems: list[str] = field(default_factory=list)


def read_clip(path, cfg: DataConfig, *, rng: np.random.Generator | None = None,
              view: int = 0, num_views: int = 1, start: float | None = None,
              end: float | None = None, video: bool = True, audio: bool = True) -> RawClip:
    """Decode the video and audio windows of one clip (see the module docstring for the policy).

    rng: a random window centre (training); None: the centre of view `view` of `num_views`
    evenly spaced windows. start / end: seconds, restrict the clip to a segment of the file.
    video / audio = False: do not decode that modality (its field is None, no problem noted),
    and its window does not restrict where the centre may go.
    """
    if not 0 <= view < num_views:
        raise ValueError(f"view={view} must be in [0, num_views={num_views})")
    path = os.fspath(path)
    return _decode(path, lambda c: _read(c, path, cfg, rng, view, num_views, start, end, video, audio))


def _decode(path: str, read):
    """read(container) on the opened file; a missing, empty or unopenable file, or a broken index
    or header found late (e.g. no time base), is a MediaError."""
    if not os.path.isfile(path):
        raise MediaError(f"{path}: no such file")
    if os.path.getsize(path) == 0:
        raise MediaError(f"{path}: zero bytes")
    try:
        container = _open(path)
    except _DECODE_ERRORS as err:
        raise MediaError(f"{path}: cannot open: {err}") from None
    with container:
        try:
            return read(container)
        except MediaError:
            raise
        except _HEADER_ERRORS as err:
            raise MediaError(f"{path}: {type(err).__name__}: {err}") from None


@dataclass
class WholeClip:
    """The whole clip, for `avmae prepare` (shards format 2)."""
    frames: list | None           # encode(uint8 (H, W, 3)) per kept frame; None = no video
    fps: float | None             # the source's frame rate; kept frame j is source frame j * every
    first_frame: float            # seconds from the clip start to kept frame 0 (< 1 / fps)
    waveform: np.ndarray | None   # float32 mono at cfg.sample_rate; None = no audio
    audio_start: float            # seconds from the clip start to waveform[0] (<= 0)
    duration: float               # seconds of the clip
    problems: list[str] = field(default_factory=list)


def read_whole_clip(path, cfg: DataConfig, *, every: int, encode, start: float | None = None,
                    end: float | None = None) -> WholeClip:
    """Every `every`-th source frame of the whole clip at cfg.short_side, each passed through
    `encode` as soon as it is decoded (so memory holds encoded frames only), and the audio of
    [min(0, D - Wa), max(D, Wa)) with Wa = cfg.audio_seconds: every audio window a centre in
    `centre_range` can ask for (zeros outside the file, as read_clip pads). Same errors and
    policy as read_clip; frames past the last decoded one are not kept."""
    path = os.fspath(path)
    return _decode(path, lambda c: _read_whole(c, path, cfg, every, encode, start, end))


def _read_whole(container, path, cfg, every, encode, start, end) -> WholeClip:
    vs, aus, t0, seg_start, seg_end, problems = _clip_span(container, path, start, end, True, True)
    D = seg_end - seg_start
    frames, fps, first = None, None, 0.0
    if vs is not None:
        fps = _frame_rate(vs, D)
        first_t = first_frame_time(seg_start, t0, fps, seg_start)
        count = max(1, math.ceil((seg_end - first_t) * fps / every - 1e-6))
        targets = first_t + np.arange(count) * every / fps
        convert = _RGBConverter(cfg.short_side, vs)
        picked, last_t = _pick_video(container, vs, targets, seg_start, seg_end, fps, problems,
                                     keep=lambda frame: encode(convert(frame)))
        if picked is not None:
            kept = max(1, int(np.sum(targets <= last_t + 0.5 / fps + 1e-6)))
            frames, first = picked[:kept], first_t - seg_start
            problems[:] = [p for p in problems if not p.startswith("video shorter than window")]
    Wa = cfg.audio_seconds
    a_start, a_end = min(0.0, D - Wa), max(D, Wa)
    waveform = None
    if aus is not None:
        S = int(round((a_end - a_start) * cfg.sample_rate))
        notes: list[str] = []
        waveform = _read_audio(container, aus, seg_start + a_start, S, cfg.sample_rate, notes)
        # padding to the span is by design; a clip shorter than the audio window is noted once
        problems += [n for n in notes if not n.startswith("audio shorter than window")]
        if D < Wa - PAD_TOLERANCE:
            problems.append(f"audio shorter than window: {D:.2f} s of {Wa:.2f} s, silence around it")
    if frames is None and waveform is None:
        raise MediaError(f"{path}: {'; '.join(problems)}")
    return WholeClip(frames=frames, fps=fps, first_frame=first, waveform=waveform,
                     audio_start=a_start, duration=D, problems=problems)


def _open(path: str):
    """av.open with a read timeout; undecodable metadata text is replaced, not fatal (PyAV < 19
    needs `metadata_errors` for that; PyAV 19 dropped the argument)."""
    try:
        return av.open(path, timeout=(OPEN_TIMEOUT, READ_TIMEOUT), metadata_errors="replace")
    except TypeError:
        return av.open(path, timeout=(OPEN_TIMEOUT, READ_TIMEOUT))


# ---- the steps of read_clip ---------------------------------------------------------------------

def _read(container, path, cfg, rng, view, num_views, start, end, want_video, want_audio) -> RawClip:
    vs, aus, t0, seg_start, seg_end, problems = _clip_span(container, path, start, end,
                                                           want_video, want_audio)
    D = seg_end - seg_start

    fps = _frame_rate(vs, D) if vs is not None else None
    S = int(round(cfg.audio_seconds * cfg.sample_rate))
    Wv = cfg.num_frames * cfg.frame_stride / fps if vs is not None else None
    Wa = S / cfg.sample_rate

    centre = draw_centre(centre_range(D, Wv, Wa if aus is not None else None), rng, view,
                         num_views)

    frames = None
    if vs is not None:
        # Start the window on a source frame (frames sit at t0 + i / fps), then centre the audio
        # on the window actually used.
        first = first_frame_time(seg_start + max(centre - Wv / 2, 0.0), t0, fps, seg_start)
        targets = first + np.arange(cfg.num_frames) * cfg.frame_stride / fps
        centre = first - seg_start + Wv / 2
        frames = _read_video(container, vs, targets, seg_start, seg_end, fps, cfg.short_side,
                             problems)
    waveform = None
    if aus is not None:
        a_start = seg_start + centre - Wa / 2
        waveform = _read_audio(container, aus, a_start, S, cfg.sample_rate, problems)
    if frames is None and waveform is None:
        raise MediaError(f"{path}: {'; '.join(problems)}")
    return RawClip(frames=frames, waveform=waveform, duration=D, problems=problems)


def _clip_span(container, path, start, end, want_video, want_audio):
    """The streams and the clip on the file's clock: -> (video stream | None, audio stream |
    None, t0, seg_start, seg_end, problems); the clip is [seg_start, seg_end)."""
    problems: list[str] = []
    vs = _video_stream(container) if want_video else None
    aus = container.streams.audio[0] if want_audio and container.streams.audio else None
    if want_video and vs is None:
        problems.append("no video stream")
    if want_audio and aus is None:
        problems.append("no audio stream")
    if vs is None and aus is None:
        raise MediaError(f"{path}: {' and '.join(problems) or 'nothing requested'}")
    main = vs if vs is not None else aus
    t0 = _start_time(main, container)
    file_end = t0 + _duration(main, container, t0)
    seg_start = t0 + (start or 0.0)
    seg_end = file_end if end is None else min(t0 + end, file_end)
    if seg_end <= seg_start:
        raise MediaError(f"{path}: segment [{start}, {end}] s is outside the file "
                         f"({file_end - t0:.2f} s long)")
    return vs, aus, t0, seg_start, seg_end, problems


def centre_range(D: float, Wv: float | None, Wa: float | None) -> tuple[float, float]:
    """Where the window centre may go, in seconds from the clip start: the intersection of each
    modality's range. A window that fits lies inside the clip; otherwise audio: the clip inside
    the window, video: the window starts at the clip start."""
    ranges = []
    if Wv is not None:
        ranges.append((Wv / 2, D - Wv / 2) if D >= Wv else (Wv / 2, Wv / 2))
    if Wa is not None:
        ranges.append((Wa / 2, D - Wa / 2) if D >= Wa else (D - Wa / 2, Wa / 2))
    lo, hi = max(r[0] for r in ranges), min(r[1] for r in ranges)
    return (lo, hi) if lo <= hi else ranges[0]


def draw_centre(bounds: tuple[float, float], rng: np.random.Generator | None, view: int,
                num_views: int) -> float:
    """The window centre (seconds from the clip start): uniform over the range in training (one
    rng draw, none when the range is a point), else view `view` of `num_views` evenly spaced
    end to end (one view: the middle). The raw path and the shards path both call this, so the
    same rng gives the same centre."""
    lo, hi = bounds
    if rng is not None:
        return rng.uniform(lo, hi) if hi > lo else lo
    if num_views == 1:
        return (lo + hi) / 2
    return lo + (hi - lo) * view / (num_views - 1)


def first_frame_time(t: float, t0: float, fps: float, not_before: float) -> float:
    """The source frame time (frames sit at t0 + i / fps) nearest to t, not before `not_before`."""
    first = t0 + round((t - t0) * fps) / fps
    return first + 1 / fps if first < not_before - 1e-6 else first


def _read_only(container, stream) -> None:
    """Let the demuxer skip every other stream's packets (3-4x less work for the audio pass of
    a video file). PyAV < 14 has no per-stream discard: then nothing is skipped."""
    Discard = getattr(av.stream, "Discard", None)
    if Discard is None:
        return
    for other in container.streams:
        other.discard = Discard.default if other is stream else Discard.all


def _video_stream(container):
    # cover art in audio files is a one-picture "video" stream, not video
    cover = getattr(getattr(av.stream, "Disposition", None), "attached_pic", 0)
    for stream in container.streams.video:
        if not (cover and stream.disposition & cover):
            return stream
    return None


def _start_time(stream, container) -> float:
    if stream.start_time is not None:
        return float(stream.start_time * stream.time_base)
    if container.start_time is not None:
        return container.start_time / av.time_base
    return 0.0


def _duration(stream, container, t0: float) -> float:
    """Seconds from t0 to the stream's end: the stream header, the container header, or (neither
    known, e.g. some raw or streamed files) a scan of the packet timestamps without decoding."""
    if stream.duration and stream.duration > 0:
        return float(stream.duration * stream.time_base)
    if container.duration and container.duration > 0:
        cstart = (container.start_time or 0) / av.time_base
        return container.duration / av.time_base - (t0 - cstart)
    last = t0
    for packet in container.demux(stream):
        if packet.pts is not None:
            last = max(last, float((packet.pts + (packet.duration or 0)) * stream.time_base))
    container.seek(0)
    return last - t0


def _frame_rate(vs, D: float) -> float:
    for rate in (vs.average_rate, vs.guessed_rate, vs.base_rate):
        if rate and 1 <= float(rate) <= 1000:
            return float(rate)
    if vs.frames and D > 0:
        return vs.frames / D
    return 25.0


# ---- video ------------------------------------------------------------------------------------

def _read_video(container, vs, targets, seg_start, seg_end, fps, short_side, problems):
    """uint8 (T, H, W, 3) at the target times, or None (noted) when nothing decodes."""
    picked, _ = _pick_video(container, vs, targets, seg_start, seg_end, fps, problems)
    return None if picked is None else _to_rgb(picked, short_side, vs)


def _pick_video(container, vs, targets, seg_start, seg_end, fps, problems, keep=None):
    """keep(frame) of the frame nearest each target (keep=None: the av frame itself) and the
    time of the last decoded frame; (None, None) (noted) when nothing decodes. Frames past the
    end repeat the last one, frames before the start the first one (both noted)."""
    half = 0.5 / fps
    # video is read first: the container is still at its start unless the window is far in
    seek = "window" if targets[0] - seg_start > SEEK_IF_AFTER or seg_start > SEEK_IF_AFTER \
        else None
    picked, first_t, last_t, error = _pick_frames(container, vs, targets, seg_start, seg_end,
                                                  half, seek, keep)
    if seek and (first_t is None or first_t > targets[0] + half):
        # the seek landed after the window (inexact index, or a truncated file): from the start
        picked, first_t, last_t, error = _pick_frames(container, vs, targets, seg_start,
                                                      seg_end, half, "start", keep)
    if first_t is None:
        problems.append("video stream could not be decoded" + (f": {error}" if error else ""))
        return None, None
    if error:
        problems.append(f"video decoding stopped at {last_t - seg_start:.2f} s: {error}")
    late = int(np.sum(targets > last_t + half + 1e-6))
    if late:
        problems.append(f"video shorter than window: repeated the last frame for {late} of "
                        f"{len(targets)} frames")
    early = int(np.sum(targets < first_t - half - 1e-6))
    if early:
        problems.append(f"video starts after the window: repeated the first frame for {early} "
                        f"of {len(targets)} frames")
    return picked, last_t


def _pick_frames(container, vs, targets, seg_start, seg_end, half, seek: str | None,
                 keep=None):
    """Seek ("window": to the keyframe before the window; "start"; None: stay), decode in
    presentation order and keep the frame nearest in time to each target (ties: the earlier),
    stopping at the first frame after the last target. Returns (keep(frame) per target, first and
    last decoded times, error or None). keep runs as frames are picked (each distinct frame
    once), so only its results are held, not the decoded frames."""
    keep = _KeepOnce(keep)
    T = len(targets)
    picked: list = [None] * T
    k, prev, prev_t, first_t, error = 0, None, None, None, None
    _read_only(container, vs)
    try:
        if seek == "window":
            container.seek(int(max(targets[0] - half, seg_start) / vs.time_base), stream=vs)
        elif seek == "start":
            container.seek(0)
        for frame, t in _decoded(container, vs, 2 * half):
            if t < seg_start - half:
                continue
            if t >= seg_end:
                break
            first_t = t if first_t is None else first_t
            # every target up to t lies between prev and this frame: take the nearer one
            while k < T and t >= targets[k]:
                nearer_prev = prev is not None and targets[k] - prev_t <= t - targets[k]
                picked[k] = keep(prev if nearer_prev else frame)
                k += 1
            prev, prev_t = frame, t
            if k == T:
                break
    except _DECODE_ERRORS as err:
        error = str(err)
    for j in range(k, T):
        picked[j] = keep(prev)
    return picked, first_t, prev_t, error


class _KeepOnce:
    """keep(frame), computed once per distinct frame: a frame is picked for consecutive
    targets only, so remembering the last two frames suffices."""

    def __init__(self, keep):
        self.keep = keep
        self.recent: list = []   # [(frame, result)], the last two

    def __call__(self, frame):
        if self.keep is None or frame is None:
            return frame
        for seen, result in self.recent:
            if seen is frame:
                return result
        result = self.keep(frame)
        self.recent = self.recent[-1:] + [(frame, result)]
        return result


def _decoded(container, stream, step: float):
    """(frame, presentation time in seconds) in presentation order; frames without timestamps
    are placed `step` after the previous one."""
    t, time_base = None, float(stream.time_base)
    for packet in container.demux(stream):
        for frame in packet.decode():
            ts = frame.pts if frame.pts is not None else frame.dts
            if ts is not None:
                t = ts * time_base
            else:
                t = t + step if t is not None else 0.0
            yield frame, t


def _to_rgb(picked, short_side: int, vs) -> np.ndarray:
    """Frames -> uint8 (T, H, W, 3), short side = short_side, square pixels, rotation applied.
    FFmpeg's swscale converts and resizes; each distinct frame once."""
    convert = _RGBConverter(short_side, vs)
    converted = {}
    for frame in picked:
        if id(frame) not in converted:
            converted[id(frame)] = convert(frame)
    return np.stack([converted[id(frame)] for frame in picked])


class _RGBConverter:
    """av frame -> uint8 (H, W, 3) with the short side = short_side, square pixels, rotation
    applied; the output size and rotation are fixed by the first frame converted."""

    def __init__(self, short_side: int, vs):
        self.short_side, self.vs = short_side, vs
        # one swscale context for all frames, one thread: creating a context per frame (what
        # frame.to_ndarray(width=, height=) does) costs more than the scaling itself, and loader
        # workers already use every core
        self.reformatter = VideoReformatter()
        self.size = None

    def _fix_size(self, first) -> None:
        sar = self.vs.codec_context.sample_aspect_ratio
        width = first.width * (float(sar) if sar and float(sar) > 0 else 1.0)
        scale = self.short_side / min(width, first.height)
        self.size = (max(1, int(round(width * scale))), max(1, int(round(first.height * scale))))
        # display matrix: degrees counter-clockwise (FFmpeg's convention, as np.rot90's k > 0)
        self.quarter_turns = int(round(getattr(first, "rotation", 0) / 90)) % 4

    def __call__(self, frame) -> np.ndarray:
        if self.size is None:
            self._fix_size(frame)
        rgb = self.reformatter.reformat(frame, width=self.size[0], height=self.size[1],
                                        format="rgb24", interpolation="BILINEAR",
                                        **_ONE_THREAD).to_ndarray()
        return np.rot90(rgb, self.quarter_turns) if self.quarter_turns else rgb


# ---- audio ------------------------------------------------------------------------------------

def _read_audio(container, aus, a_start, S, sample_rate, problems):
    """float32 (S,) mono at sample_rate for [a_start, a_start + S / sample_rate), zeros where the
    file has no audio; None (noted) when nothing decodes."""
    seek = a_start - AUDIO_PREROLL > _start_time(aus, container) + SEEK_IF_AFTER
    wave, first_t, error = _decode_audio(container, aus, a_start, S, sample_rate, seek)
    if seek and (first_t is None or first_t > a_start + PAD_TOLERANCE):
        wave, first_t, error = _decode_audio(container, aus, a_start, S, sample_rate, seek=False)
    if first_t is None:
        problems.append("audio stream could not be decoded" + (f": {error}" if error else ""))
        return None
    if error:
        problems.append(f"audio decoding stopped early: {error}")
    # sample j of `wave` is at first_t + j / sample_rate
    offset = int(round((a_start - first_t) * sample_rate))
    out = np.zeros(S, np.float32)
    lo, hi = max(offset, 0), min(offset + S, len(wave))
    if hi > lo:
        out[lo - offset: hi - offset] = wave[lo:hi]
    padded = S - max(hi - lo, 0)
    if padded > PAD_TOLERANCE * sample_rate:
        problems.append(f"audio shorter than window: zero-padded {padded / sample_rate:.2f} s "
                        f"of {S / sample_rate:.2f} s")
    return out


def _decode_audio(container, aus, a_start, S, sample_rate, seek):
    """Decode from just before a_start until the window is covered; mix to mono and resample
    with FFmpeg's swresample. Returns (float32 samples, time of the first one, error or None)."""
    resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
    chunks, have, first_t, error = [], 0, None, None
    a_end = a_start + S / sample_rate
    _read_only(container, aus)
    try:
        # after a mid-file seek the first frame is codec warm-up: the pre-roll covers it
        if seek:
            container.seek(math.floor((a_start - AUDIO_PREROLL) / aus.time_base), stream=aus)
        else:
            _rewind(container, aus)
        for packet in container.demux(aus):
            for frame in packet.decode():
                if first_t is None:
                    first_t = float(frame.time) if frame.pts is not None else \
                        _start_time(aus, container)
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray()[0])
                    have += out.samples
            if first_t is not None and first_t + have / sample_rate >= a_end:
                break
        for out in resampler.resample(None):  # flush the resampler's delay line
            chunks.append(out.to_ndarray()[0])
    except _DECODE_ERRORS as err:
        error = str(err)
    wave = np.concatenate(chunks).astype(np.float32, copy=False) if chunks else np.zeros(0, np.float32)
    return wave, first_t, error


def _rewind(container, aus) -> None:
    """Back to the first audio packet. Seeking the audio stream to before its start also returns
    the codec's priming packet (AAC in mp4), whose overlap the first real samples need; formats
    that refuse such a seek (e.g. AVI) rewind the whole container instead."""
    try:
        container.seek(math.floor((_start_time(aus, container) - 1.0) / aus.time_base),
                       stream=aus)
    except av.FFmpegError:
        container.seek(0)
