"""Shards format 2: the whole clip per entry, the temporal window chosen when it is read.

`avmae prepare` (avmae.data.prepare) writes, per clip, in standard tar files (WebDataset layout,
the key is the manifest row, zero padded):

    {key}.mjpeg    every `every`-th source frame of the whole clip at data.short_side, JPEG
                   files back to back (each starts FF D8 and ends FF D9: any reader can split
                   them; the index gives each frame's byte range)
    {key}.logmel   float16 (F, mel_bins): the log-mel of the whole clip, unnormalised, from
                   audio_start = min(0, D - audio_seconds) to max(D, audio_seconds) seconds
    {key}.json     labels, duration, frame rate, frame byte offsets, problems (the index entry)

Beside each `shard-NNNNNN.tar` a small `shard-NNNNNN.idx` (JSON) holds the same entries with the
members' offsets in the tar, so any rank or worker reads any clip, and of a clip only the frames
of its window, by a ranged read. `meta.json`: format "avmae-shards", version 2, the DataConfig
fields that shape the payload (PAYLOAD_FIELDS: loading refuses a config that differs), `every`,
the JPEG quality, label columns and vocabularies, counts of clips written, skipped and filled,
`skipped_reasons` (skipped clips by the kind of reason), `skipped_clips` (the first 100 skipped,
with path, line and reason: a 2 M-row manifest must not make meta.json huge), and the shards
with their clip counts. An index's `skipped` lists the clips skipped since the previous shard,
likewise the first 100, with `skipped_more` (counts by reason) only where there were more.

Why every 2nd frame by default: the inputs the presets and recipes use are 16 frames at stride 4
(pretraining) and 32 at stride 2 (finetuning, evaluation); both strides are multiples of 2, so
half the source rate holds every frame either input can ask for, at half the bytes of keeping
all. A config whose data.frame_stride is not a multiple of `every` is refused with one line.

The window, at read time, by the raw path's own rule (avmae.data.decode): the centre range of
the clip (`centre_range`) for the modalities read, the centre drawn by `draw_centre` (training:
uniform from the sample's rng, the same single draw the raw path makes; evaluation: view v of n
evenly spaced), the video window started on the nearest kept frame (the raw path: the nearest
source frame; with every=1 they are the same frame), frames past the end repeating the last one,
and the audio window centred on the video window actually used (paper Sec. 4.1: in sync). The
audio's log-mel frames are the stored ones nearest in time (<= 5 ms off the raw path's), with
log(eps), the log-mel of silence, outside the stored span, as the raw path pads with zeros.

Format 1 (one fixed raw-RGB window per clip) is refused with one line: prepare again.
"""

from __future__ import annotations

import io
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from avmae.config import ConfigError, DataConfig
from avmae.data.decode import MediaError, centre_range, draw_centre
from avmae.data.logmel import FLOAT_EPS, num_frames
from avmae.data.manifest import Clip, StringColumn
from avmae.data.storage import first_line, open_folder

SHARDS_FORMAT = "avmae-shards"
SHARDS_VERSION = 2
# DataConfig fields that shape what `avmae prepare` stores; a shards folder fixes them. The
# input length (num_frames, frame_stride) is chosen at read time.
PAYLOAD_FIELDS = ("short_side", "sample_rate", "mel_bins", "window")
DEFAULT_EVERY = 2
DEFAULT_JPEG_QUALITY = 90
SILENCE = math.log(FLOAT_EPS)    # the log-mel of zeros: every bin at Kaldi's floor


def encode_jpeg(rgb: np.ndarray, quality: int) -> bytes:
    """uint8 (H, W, 3) -> JPEG bytes (libjpeg-turbo through Pillow, 4:2:0 chroma)."""
    out = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(out, format="JPEG", quality=quality)
    return out.getvalue()


def decode_jpeg(data) -> np.ndarray:
    """JPEG bytes -> uint8 (H, W, 3), read-only (a view of Pillow's bytes: one copy fewer than
    np.asarray, which goes through the array interface)."""
    with Image.open(io.BytesIO(data)) as img:
        rgb = img if img.mode == "RGB" else img.convert("RGB")
        return np.frombuffer(rgb.tobytes(), np.uint8).reshape(rgb.height, rgb.width, 3)


# ---- the window, chosen at read time ----------------------------------------------------------

def video_window(centre: float, num: int, stride: int, fps: float, every: int, first: float,
                 kept: int) -> tuple[np.ndarray, float]:
    """Kept-frame indices of a window of `num` frames every `stride` source frames centred near
    `centre` (seconds), and the centre of the window actually used. Kept frame j is at
    first + j * every / fps; the window starts on the nearest kept frame, not before the clip."""
    Wv = num * stride / fps
    j0 = max(0, int(round((max(centre - Wv / 2, 0.0) - first) * fps / every)))
    indices = np.minimum(j0 + np.arange(num) * (stride // every), kept - 1)
    return indices, first + j0 * every / fps + Wv / 2


def audio_window(logmel: np.ndarray, audio_start: float, centre: float,
                 data: DataConfig) -> np.ndarray:
    """The log-mel frames of the audio window centred on `centre` (seconds from the clip
    start): as many frames as the raw path's window gives, silence outside the stored span."""
    hop = int(data.sample_rate * 0.01)
    S = int(round(data.audio_seconds * data.sample_rate))
    n = num_frames(S, data.sample_rate)
    f0 = int(round((centre - data.audio_seconds / 2 - audio_start) * data.sample_rate / hop))
    out = np.full((n, logmel.shape[1]), SILENCE, np.float32)
    lo, hi = max(f0, 0), min(f0 + n, logmel.shape[0])
    if hi > lo:
        out[lo - f0: hi - f0] = logmel[lo:hi]
    return out


@dataclass
class JpegFrames:
    """A video window left undecoded (data.jpeg_decode=cuda): its distinct frames' JPEG files
    back to back, and which of them fills each of the window's T positions (a window past the
    clip's end repeats its last frame). Decoded after the batch by avmae.data.gpu_jpeg."""

    data: torch.Tensor       # uint8 (N,): the JPEG files back to back
    bounds: torch.Tensor     # int64 (K + 1,): file k is data[bounds[k]:bounds[k + 1]]
    order: torch.Tensor      # int64 (T,): the file at each position of the window
    height: int              # of every frame (the shards' index)
    width: int

    def files(self) -> list[torch.Tensor]:
        """The K JPEG files as 1-D uint8 tensors (views of `data`)."""
        b = self.bounds.tolist()
        return [self.data[b[k]: b[k + 1]] for k in range(len(b) - 1)]


# ---- the source ---------------------------------------------------------------------------------

class ShardSource:
    """Clips of a format-2 shards folder: one ranged read per member, the window chosen here.
    The folder is a local path or an fsspec URL (avmae.data.storage: ranged reads, retries).

    Per clip the numbers a worker needs are numpy arrays (see dataset.py's note on forked
    workers): member offsets, duration, frame rate, kept frames and their byte offsets."""

    def __init__(self, folder: str | os.PathLike, data: DataConfig, *, video: bool = True,
                 audio: bool = True):
        self.folder = open_folder(folder)
        self.meta = read_shards_meta(self.folder)
        check_payload(self.meta, data, self.folder)
        self.every = int(self.meta["every"])
        check_stride(data, self.every, self.folder)
        self.data, self.video, self.audio = data, video, audio
        self.shards = [s["tar"] for s in self.meta["shards"]]
        entries, shard_of = [], []
        for number, shard in enumerate(self.meta["shards"]):
            clips = json.loads(_read_small(self.folder, shard["index"]))["clips"]
            entries += clips
            shard_of += [number] * len(clips)
        if not entries:
            raise ConfigError(f"shards folder {self.folder} holds no clips")
        self.clips = [clip_of(e) for e in entries]
        self.paths = StringColumn(e["path"] for e in entries)
        self.shard_of = np.array(shard_of, np.int32)
        self._columns(entries)

    def _columns(self, entries: list[dict]) -> None:
        """The per-clip numbers as arrays; -1 offsets: modality absent."""
        n = len(entries)
        self.duration = np.array([e["duration"] for e in entries], np.float64)
        self.problems = np.array([bool(e.get("problems")) for e in entries], bool)
        self.video_at = np.full(n, -1, np.int64)          # offset of the mjpeg member
        self.fps = np.ones(n, np.float64)
        self.first = np.zeros(n, np.float64)
        self.size = np.zeros((n, 2), np.int64)            # frame height, width
        self.kept = np.zeros(n, np.int64)
        self.frame_ptr = np.zeros(n + 1, np.int64)        # clip i's frame offsets:
        offsets = []                                      # frame_bytes[frame_ptr[i]:frame_ptr[i+1]]
        self.audio_at = np.full((n, 2), -1, np.int64)     # offset, log-mel frames
        self.audio_start = np.zeros(n, np.float64)
        for i, e in enumerate(entries):
            v, a = e["video"], e["audio"]
            if v is not None:
                self.video_at[i], self.fps[i], self.first[i] = v["offset"], v["fps"], v["first"]
                self.size[i] = v["height"], v["width"]
                self.kept[i] = len(v["frame_offsets"]) - 1
                offsets.append(np.asarray(v["frame_offsets"], np.int64))
            self.frame_ptr[i + 1] = self.frame_ptr[i] + (self.kept[i] + 1 if v else 0)
            if a is not None:
                self.audio_at[i] = a["offset"], a["frames"]
                self.audio_start[i] = a["start"]
        self.frame_bytes = np.concatenate(offsets) if offsets else np.zeros(0, np.int64)
        self.mel_bins = int(self.meta["data"]["mel_bins"])

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, i: int, *, rng: np.random.Generator | None, view: int, num_views: int,
             decode: bool = True):
        """-> (frames uint8 (T, H, W, 3) | None, log-mel float32 (frames, mel) | None) of the
        window drawn as the raw path draws it (module docstring). decode=False: the frames as
        JpegFrames instead, to be decoded after the batch (data.jpeg_decode=cuda)."""
        d = self.data
        has_video = self.video and self.video_at[i] >= 0
        has_audio = self.audio and self.audio_at[i, 0] >= 0
        fps = float(self.fps[i])
        Wv = d.num_frames * d.frame_stride / fps if has_video else None
        bounds = centre_range(float(self.duration[i]), Wv,
                              d.audio_seconds if has_audio else None)
        centre = draw_centre(bounds, rng, view, num_views)
        frames = logmel = None
        if has_video:
            indices, centre = video_window(centre, d.num_frames, d.frame_stride, fps, self.every,
                                           float(self.first[i]), int(self.kept[i]))
            frames = self._frames(i, indices) if decode else self._jpeg_frames(i, indices)
        if has_audio:
            logmel = torch.from_numpy(audio_window(self._logmel(i), float(self.audio_start[i]),
                                                   centre, d))
        return frames, logmel

    def _window_bytes(self, i: int, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(bytes of clip i's kept frames from the first of `indices` to the last, in one read;
        the frames' offsets in those bytes)."""
        offsets = self.frame_bytes[self.frame_ptr[i]: self.frame_ptr[i + 1]]
        lo, hi = int(indices.min()), int(indices.max())
        base = int(offsets[lo])
        buf = self._read(int(self.shard_of[i]), int(self.video_at[i]) + base,
                         int(offsets[hi + 1]) - base)
        return buf, offsets - base

    def _frames(self, i: int, indices: np.ndarray) -> np.ndarray:
        """The kept frames `indices` of clip i: one read from the first to the last, then each
        distinct frame decoded once."""
        buf, offsets = self._window_bytes(i, indices)
        out = None
        try:  # a shard rewritten under the run: PIL raises OSError (or a wrong-size frame)
            for j in np.unique(indices).tolist():
                frame = decode_jpeg(buf[offsets[j]: offsets[j + 1]])
                if out is None:
                    out = np.empty((len(indices), *frame.shape), np.uint8)
                out[indices == j] = frame            # the frame at each position it fills
            return out
        except (OSError, ValueError, SyntaxError) as err:
            raise MediaError(f"damaged frame in {self.shards[self.shard_of[i]]}: {err}") from None

    def _jpeg_frames(self, i: int, indices: np.ndarray) -> JpegFrames:
        """The kept frames `indices` of clip i undecoded: each distinct frame's JPEG file once.
        A frame that is not one whole JPEG file (a shard rewritten under the run) is refused
        here, in the worker, as decoding it would be."""
        buf, offsets = self._window_bytes(i, indices)
        distinct, order = np.unique(indices, return_inverse=True)
        files = [buf[offsets[j]: offsets[j + 1]] for j in distinct.tolist()]
        if not all(len(f) > 4 and f[0] == 0xFF and f[1] == 0xD8 and f[-2] == 0xFF and f[-1] == 0xD9
                   for f in files):
            raise MediaError(f"damaged frame in {self.shards[self.shard_of[i]]}: not a JPEG file")
        bounds = np.cumsum([0] + [len(f) for f in files], dtype=np.int64)
        height, width = self.size[i].tolist()
        return JpegFrames(torch.from_numpy(np.concatenate(files)), torch.from_numpy(bounds),
                          torch.from_numpy(order.reshape(-1).astype(np.int64)), height, width)

    def _logmel(self, i: int) -> np.ndarray:
        offset, frames = self.audio_at[i].tolist()
        raw = self._read(int(self.shard_of[i]), offset, frames * self.mel_bins * 2)
        return raw.view(np.float16).reshape(frames, self.mel_bins)

    def _read(self, shard: int, offset: int, nbytes: int) -> np.ndarray:
        """Bytes at an offset of a shard (a uint8 array): a ranged read, local or remote."""
        return self.folder.read(self.shards[shard], offset, nbytes)

    def reopen(self) -> None:
        """Called in each worker: open its own files (a forked worker must not share a file
        position with its parent or siblings) or its own filesystem object for a URL."""
        self.folder.reopen()


def clip_of(entry: dict) -> Clip:
    """An index entry -> the manifest row it came from (labels as the manifest gives them)."""
    targets = {k: tuple(v) if isinstance(v, list) else v for k, v in entry["targets"].items()}
    return Clip(path=Path(entry["path"]), line=entry["line"], start=entry.get("start"),
                end=entry.get("end"), targets=targets)


# ---- meta.json ------------------------------------------------------------------------------------

def read_shards_meta(folder) -> dict:
    """meta.json of a format-2 shards folder (a path or URL); any other format or version is
    refused, and so is a folder without one (a missing bucket, a typo)."""
    folder = open_folder(folder)
    if not folder.exists("meta.json"):
        if folder.remote:
            raise ConfigError(f"{folder} is not a shards folder (no meta.json there: is the "
                              "bucket or path right?); a URL must name a folder that `avmae "
                              "prepare MANIFEST --out URL` wrote")
        raise ConfigError(f"{folder} is not a shards folder (no meta.json); write one with "
                          "`avmae prepare MANIFEST --out FOLDER`, or pass a manifest CSV")
    meta = json.loads(_read_small(folder, "meta.json"))
    if meta.get("format") != SHARDS_FORMAT or meta.get("version") != SHARDS_VERSION:
        found = f"version {meta.get('version')}" if meta.get("format") == SHARDS_FORMAT \
            else "an unknown format"
        raise ConfigError(f"{folder} holds avmae shards of {found}; this avmae reads version "
                          f"{SHARDS_VERSION} (whole clips): run `avmae prepare MANIFEST --out "
                          f"{folder} --overwrite` again")
    return meta


def _read_small(folder, name: str) -> str:
    """A small file of the folder (meta.json, an index); a failure is one line (a remote
    folder words its own failures)."""
    try:
        return folder.read_text(name)
    except OSError as err:
        raise ConfigError(f"cannot read {folder}/{name}: {first_line(err)}") from None


def shards_current(folder) -> bool:
    """Whether `folder` (a path or URL) holds finished shards of this format and version."""
    try:
        meta = json.loads(open_folder(folder).read_text("meta.json"))
    except (OSError, ValueError, ConfigError):
        return False
    return meta.get("format") == SHARDS_FORMAT and meta.get("version") == SHARDS_VERSION


def check_payload(meta: dict, data: DataConfig, folder: Path) -> None:
    """Refuse a config whose decoding settings differ from those the shards were written with."""
    for name in PAYLOAD_FIELDS:
        stored, wanted = meta["data"][name], getattr(data, name)
        if (float(stored) != float(wanted)) if isinstance(wanted, (int, float)) else stored != wanted:
            raise ConfigError(f"shards {folder} were prepared with data.{name}={stored} but the "
                              f"config has {wanted}; use --set data.{name}={stored} or re-run "
                              "`avmae prepare` with this config")


def check_stride(data: DataConfig, every: int, folder: Path) -> None:
    """A window's frames must be kept frames: data.frame_stride a multiple of `every`."""
    if data.frame_stride % every:
        need = math.gcd(data.frame_stride, every)
        raise ConfigError(f"shards {folder} keep every {every} source frames but "
                          f"data.frame_stride={data.frame_stride} needs every {need}; re-run "
                          f"`avmae prepare` with --keep-every {need}")
