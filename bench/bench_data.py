"""Data loading speed and size: raw mp4 vs shards format 1 vs format 2, at the paper's input.

    python bench/bench_data.py [--clips 24] [--hd-clips 4] [--seconds 10] [--passes 3]

Writes synthetic mp4 files with PyAV into a temporary folder (H.264 + AAC 44.1 kHz stereo,
`--clips` at 320x240 and `--hd-clips` at 1280x720, 25 fps), then measures in this one process,
with torch limited to one thread (= one DataLoader worker):

    ffmpeg_decode  PyAV decoding every source frame of the training window (no colour conversion,
                   no resize) and the 8 s of audio: the floor any decoding loader pays
    raw            build_dataset(manifest, train=True)[i]: read_clip + video_tensor + log-mel +
                   audio_tensor (what a loader on mp4 files does per clip)
    prepare        avmae prepare (one process): decode each whole clip once + write shards
    shards         format 2, build_dataset(shards, train=True)[i]: a fresh random 16/4 window,
                   ranged read, JPEG decoding of its frames, random crop/jitter + audio_tensor
    shards_read    the format-2 window read + JPEG decoding alone, without the transforms
    shards_eval    format 2, build_dataset(shards, train=False)[i]: centre crop
    format1        format 1's read path, emulated: the clip's fixed 16-frame window stored as raw
                   uint8 RGB at the short side and its float16 log-mel, read at an offset
                   (np.fromfile) + video_tensor + audio_tensor (what format 1's ShardSource did)
    bytes_per_clip format 2: the tar bytes per clip (whole clip: every 2nd frame as JPEG + the
                   whole log-mel + tar/json overhead); format 1: one window, raw frames + log-mel
    psnr           the model's video input (eval crop, [-1, 1]) from format 2 shards prepared
                   with --keep-every 1 (the same frames as the raw path) vs the raw path, in dB

and prints one JSON line per measurement (what, numbers, machine). The paper's input (Sec. 4.1):
16 frames at stride 4, 256 short side, 224 crop, 8 s of 16 kHz audio, 128 mels.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch

from avmae.config import build_config
from avmae.data import audio_tensor, build_dataset, prepare_shards, video_tensor

FPS = 25


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "av": av.__version__, "python": platform.python_version()}


def write_clip(path: Path, seconds: float, width: int, height: int, seed: int) -> None:
    """A moving pattern with some texture (not free to decode) and a chirp with noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    texture = rng.integers(0, 24, (height, width, 3), dtype=np.uint8)
    with av.open(str(path), "w", format="mp4") as out:
        vs = out.add_stream("libx264", rate=FPS, options={"crf": "23", "preset": "veryfast"})
        vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
        vs.codec_context.gop_size = 50  # 2 s, typical of web video
        sr = 44100
        aus = out.add_stream("aac", rate=sr, layout="stereo")  # every stream before muxing
        for i in range(int(seconds * FPS)):
            phase = i / FPS
            r = 127 + 100 * np.sin(x / 23.0 + 3 * phase)
            g = 127 + 100 * np.sin(y / 17.0 - 2 * phase)
            b = 127 + 100 * np.sin((x + y) / 31.0 + phase)
            img = np.stack([r, g, b], -1).astype(np.uint8) + texture
            cx = int((width - 40) * (0.5 + 0.5 * np.sin(phase)))
            img[height // 3: height // 3 + 40, cx: cx + 40] = (255, 32, 32)
            for packet in vs.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in vs.encode():
            out.mux(packet)
        t = np.arange(int(seconds * sr)) / sr
        wave = 0.3 * np.sin(2 * np.pi * (200 + 100 * t) * t) + 0.05 * rng.standard_normal(t.size)
        wave = np.stack([wave, wave[::-1]]).astype(np.float32)
        for s in range(0, t.size, 1024):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(wave[:, s:s + 1024]),
                                               format="fltp", layout="stereo")
            frame.sample_rate, frame.pts, frame.time_base = sr, s, Fraction(1, sr)
            for packet in aus.encode(frame):
                out.mux(packet)
        for packet in aus.encode():
            out.mux(packet)


def ffmpeg_decode(path: Path, cfg) -> int:
    """Decode (no conversion) every video frame of the centre training window and 8 s of audio."""
    d = cfg.data
    frames = 0
    with av.open(str(path)) as c:
        vs = c.streams.video[0]
        duration = float(c.duration) / 1e6
        span = d.num_frames * d.frame_stride / FPS
        start = max(0.0, duration / 2 - span / 2)
        c.seek(int(start / vs.time_base), stream=vs)
        for frame in c.decode(vs):
            if frame.time is not None and frame.time >= start + span:
                break
            frames += 1
        aus = c.streams.audio[0]
        a_start = max(0.0, duration / 2 - d.audio_seconds / 2)
        c.seek(int(a_start / aus.time_base), stream=aus)
        for frame in c.decode(aus):
            if frame.time is not None and frame.time >= a_start + d.audio_seconds:
                break
    return frames


def timed(what: str, fn, items, info: dict, **extra) -> float:
    t = time.perf_counter()
    for item in items:
        fn(item)
    seconds = time.perf_counter() - t
    rate = len(items) / seconds
    print(json.dumps({"what": what, "clips_per_s": round(rate, 2), "seconds": round(seconds, 3),
                      "clips": len(items), **extra, "machine": info}), flush=True)
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clips", type=int, default=24, help="320x240 clips")
    parser.add_argument("--hd-clips", type=int, default=4, help="1280x720 clips")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--passes", type=int, default=3, help="passes over the shards")
    parser.add_argument("--preset", default="base", help="preset for the input size")
    parser.add_argument("--jpeg-quality", type=int, default=90)
    args = parser.parse_args()
    torch.set_num_threads(1)  # one DataLoader worker
    cfg = build_config(args.preset)
    info = machine()
    with tempfile.TemporaryDirectory(prefix="avmae-bench-") as tmp:
        tmp = Path(tmp)
        sizes = [(320, 240)] * args.clips + [(1280, 720)] * args.hd_clips
        for i, (w, h) in enumerate(sizes):
            write_clip(tmp / f"clip{i:03d}_{w}x{h}.mp4", args.seconds, w, h, seed=i)
        names = sorted(p.name for p in tmp.glob("*.mp4"))
        (tmp / "train.csv").write_text("path\n" + "\n".join(names) + "\n")
        groups = {"all": list(range(len(names)))}
        for w, h in sorted(set(sizes)):
            groups[f"{w}x{h}"] = [i for i, n in enumerate(names) if n.endswith(f"_{w}x{h}.mp4")]

        raw = build_dataset(tmp / "train.csv", cfg, train=True)
        raw[0]  # warm up (imports, filterbank)
        rates = {}
        for group, idx in groups.items():
            timed("ffmpeg_decode", lambda i: ffmpeg_decode(tmp / names[i], cfg), idx, info,
                  clips_of=group)
            rates["raw", group] = timed("raw", lambda i: raw[i], idx, info, clips_of=group)

        t = time.perf_counter()
        meta = prepare_shards(tmp / "train.csv", tmp / "shards", cfg.data, workers=1,
                              progress=False, jpeg_quality=args.jpeg_quality)
        seconds = time.perf_counter() - t
        print(json.dumps({"what": "prepare", "clips_per_s": round(len(names) / seconds, 2),
                          "seconds": round(seconds, 3), "clips": len(names), "workers": 1,
                          "machine": info}), flush=True)
        sizes_of(tmp / "shards", meta, groups, names, cfg, info)

        shards = build_dataset(tmp / "shards", cfg, train=True)
        shards[0]
        for group, idx in groups.items():
            rates["shards", group] = timed("shards", lambda i: shards[i], epochs(idx, args.passes),
                                           info, clips_of=group)
        rng = np.random.default_rng(0)
        timed("shards_read", lambda i: shards.source.load(i, rng=rng, view=0, num_views=1),
              groups["all"] * args.passes, info, clips_of="all")
        evaluation = build_dataset(tmp / "shards", cfg, train=False)
        timed("shards_eval", lambda i: evaluation[i], groups["all"] * args.passes, info,
              clips_of="all")

        old = Format1(tmp / "format1.bin", raw, cfg)
        for group, idx in groups.items():
            rates["format1", group] = timed("format1", old.load, idx * args.passes, info,
                                            clips_of=group)
        psnr_of(tmp, cfg, raw, groups, info, args.jpeg_quality)
        print(json.dumps({"what": "ratios", "format2_vs_raw": round(rates["shards", "all"] /
                                                                    rates["raw", "all"], 2),
                          "format2_vs_format1": round(rates["shards", "all"] /
                                                      rates["format1", "all"], 2),
                          "machine": info}), flush=True)


def epochs(idx: list[int], passes: int) -> list[tuple[int, int]]:
    """(epoch, clip) items: each pass is another epoch, so another random window."""
    return [(epoch, i) for epoch in range(passes) for i in idx]


class Format1:
    """Format 1's payload and read path, rebuilt here to compare against: the eval-centre window
    of each clip (the raw path's frames) as raw uint8 RGB and its float16 log-mel, in one file,
    each clip read back at its offset."""

    def __init__(self, path: Path, raw, cfg):
        self.cfg, self.entries = cfg, []
        evaluation = build_dataset(raw_manifest(raw), cfg, train=False)
        with open(path, "wb") as f:
            for i in range(len(evaluation)):
                frames, logmel = evaluation.source.load(i, rng=None, view=0, num_views=1)
                logmel = logmel.numpy().astype(np.float16)
                self.entries.append((f.tell(), frames.shape, logmel.shape))
                f.write(frames.tobytes())
                f.write(logmel.tobytes())
        self.path = path

    def nbytes(self, i: int) -> int:
        _, frames, logmel = self.entries[i]
        return int(np.prod(frames) + 2 * np.prod(logmel))

    def load(self, i: int):
        offset, fshape, lshape = self.entries[i]
        frames = np.fromfile(self.path, np.uint8, int(np.prod(fshape)), offset=offset)
        logmel = np.fromfile(self.path, np.float16, int(np.prod(lshape)),
                             offset=offset + int(np.prod(fshape)))
        rng = np.random.default_rng(i)
        video = video_tensor(frames.reshape(fshape), self.cfg.data, train=True, rng=rng)
        audio = audio_tensor(torch.from_numpy(logmel.reshape(lshape)).float(), self.cfg.data)
        return video, audio


def raw_manifest(raw) -> Path:
    return Path(raw.source.paths[0]).parent / "train.csv"


def sizes_of(folder: Path, meta: dict, groups: dict, names: list[str], cfg, info) -> None:
    """Bytes per clip of format 2 (the tar bytes, headers included) and of format 1 (computed:
    16 frames x H x W x 3 + 798 x 128 x 2 for the log-mel, headers not counted)."""
    per_clip = {}
    for shard in meta["shards"]:
        for e in json.loads((folder / shard["index"]).read_text())["clips"]:
            v = e["video"]
            members = v["size"] + e["audio"]["size"] + len(json.dumps(e)) + 3 * 512
            old = cfg.data.num_frames * v["height"] * v["width"] * 3 + 798 * cfg.data.mel_bins * 2
            per_clip[e["row"]] = (members, old, len(v["frame_offsets"]) - 1)
    for group, idx in groups.items():
        new = float(np.mean([per_clip[i][0] for i in idx]))
        old = float(np.mean([per_clip[i][1] for i in idx]))
        print(json.dumps({"what": "bytes_per_clip", "clips_of": group,
                          "format2": int(new), "format1": int(old),
                          "format2_over_format1": round(new / old, 3),
                          "frames_kept": per_clip[idx[0]][2], "machine": info}), flush=True)


def psnr_of(tmp: Path, cfg, raw, groups: dict, info, quality: int) -> None:
    prepare_shards(tmp / "train.csv", tmp / "every1", cfg.data, workers=1, progress=False,
                   every=1, jpeg_quality=quality)
    fast = build_dataset(tmp / "every1", cfg, train=False)
    evaluation = build_dataset(raw_manifest(raw), cfg, train=False)
    for group, idx in groups.items():
        db = []
        for i in idx:
            a, b = evaluation[i]["video"], fast[i]["video"]
            db.append(float(10 * torch.log10(4.0 / ((a - b) ** 2).mean())))
        print(json.dumps({"what": "psnr", "clips_of": group, "jpeg_quality": quality,
                          "db_mean": round(float(np.mean(db)), 2),
                          "db_min": round(float(np.min(db)), 2), "machine": info}), flush=True)


if __name__ == "__main__":
    main()
