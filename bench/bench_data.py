"""Data loading speed: clips/s of one worker process, raw mp4 vs shards, at the paper's input.

    python bench/bench_data.py [--clips 24] [--hd-clips 4] [--seconds 10] [--passes 3]

Writes synthetic mp4 files with PyAV into a temporary folder (H.264 + AAC 44.1 kHz stereo,
`--clips` at 320x240 and `--hd-clips` at 1280x720, 25 fps), then measures in this one process,
with torch limited to one thread (= one DataLoader worker):

    ffmpeg_decode  PyAV decoding every source frame of the training window (no colour conversion,
                   no resize) and the 8 s of audio: the floor any decoding loader pays
    raw            build_dataset(manifest, train=True)[i]: read_clip + video_tensor + log-mel +
                   audio_tensor (what a loader on mp4 files does per clip)
    prepare        avmae prepare (one process): decode once + write shards
    shards         build_dataset(shards, train=True)[i]: read at an offset + random crop/jitter
                   + audio_tensor
    shards_read    the read at an offset part alone
    shards_eval    build_dataset(shards, train=False)[i]: centre crop, no resize

and prints one JSON line per measurement (what, clips_per_s, seconds, clips, machine). The paper's
input (Sec. 4.1): 16 frames at stride 4, 256 short side, 224 crop, 8 s of 16 kHz audio, 128 mels.
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
from avmae.data import build_dataset, prepare_shards

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
        prepare_shards(tmp / "train.csv", tmp / "shards", cfg.data, workers=1, progress=False)
        seconds = time.perf_counter() - t
        print(json.dumps({"what": "prepare", "clips_per_s": round(len(names) / seconds, 2),
                          "seconds": round(seconds, 3), "clips": len(names), "workers": 1,
                          "machine": info}), flush=True)

        shards = build_dataset(tmp / "shards", cfg, train=True)
        shards[0]
        for group, idx in groups.items():
            passes = []
            for epoch in range(args.passes):
                passes += idx
            shards.set_epoch(0)
            rates["shards", group] = timed("shards", lambda i: shards[i], passes, info,
                                           clips_of=group)
        # the shard read alone (read at an offset), without the transforms
        timed("shards_read", lambda i: shards.source.load(i, rng=None, view=0, num_views=1),
              groups["all"] * args.passes, info, clips_of="all")
        evaluation = build_dataset(tmp / "shards", cfg, train=False)
        timed("shards_eval", lambda i: evaluation[i], groups["all"] * args.passes, info,
              clips_of="all")
        print(json.dumps({"what": "shards_vs_raw", "speedup": round(rates["shards", "all"] /
                                                                     rates["raw", "all"], 1),
                          "machine": info}), flush=True)


if __name__ == "__main__":
    main()
