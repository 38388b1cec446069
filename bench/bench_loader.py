"""The training loader alone, across epochs: a new loader per epoch (what the loops did before:
workers start and the prefetch pipeline refills at every epoch) against the run's one loader
(`build_train_loader`: workers and prefetch live for the whole run), measured alternately in the
same process, no model.

    python bench/bench_loader.py                      # tiny-4l-cpu input, 64 clips, 6 epochs
    python bench/bench_loader.py --preset base --size 256 --seconds 8 --clips 48 --batch 8

Prints one JSON line per loader kind: clips/s over all epochs (median of --repeats passes).

With --jpeg-decode cpu cuda it measures instead the run's loader from the same format-2 shards
with data.jpeg_decode set to each (cuda: the workers leave the JPEG frames undecoded and each
batch is decoded by nvJPEG on the GPU, avmae.data.gpu_jpeg), alternately in one process; each
line says which path was actually used ("jpeg_decode", and why: without CUDA or torchvision the
flag falls back to the CPU path). The clock stops after the GPU has finished the last batch.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, os.path.dirname(__file__))
from common import emit, machine, write_record  # noqa: E402

from avmae.cli import main as avmae  # noqa: E402
from avmae.config import build_config  # noqa: E402
from avmae.data import build_dataset, build_loader, build_train_loader  # noqa: E402


def per_epoch_loaders(dataset, cfg, batch: int, epochs: int) -> int:
    """As before: a loader per epoch, with torch's default prefetch (2 batches per worker)."""
    cfg = copy.deepcopy(cfg)
    cfg.data.prefetch_factor = 2
    clips = 0
    for epoch in range(epochs):
        for b in build_loader(dataset, cfg, train=True, batch_size=batch, seed=0, epoch=epoch):
            clips += len(b["index"])
    return clips


def run_loader(dataset, cfg, batch: int, epochs: int) -> int:
    per_epoch = len(dataset) // batch
    loader = build_train_loader(dataset, cfg, batch_size=batch, rank=0, world_size=1, seed=0,
                                per_epoch=per_epoch, start=0, total=per_epoch * epochs)
    return sum(len(b["index"]) for b in loader)


def jpeg_decode_loader(dataset, cfg, batch: int, epochs: int) -> int:
    """The run's loader; on the GPU path, waits for the decoding of the last batch."""
    clips = run_loader(dataset, cfg, batch, epochs)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return clips


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--preset", default="tiny-4l-cpu")
    p.add_argument("--set", action="append", default=[], dest="overrides")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--clips", type=int, default=64)
    p.add_argument("--size", type=int, default=80)
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--synth-workers", type=int, default=2, help="processes for synth and prepare")
    p.add_argument("--jpeg-decode", nargs="+", choices=["cpu", "cuda"],
                   help="measure the run's loader with data.jpeg_decode set to each instead")
    p.add_argument("--out", help="append every JSON line to this file too")
    args = p.parse_args()
    cfg = build_config(args.preset, args.overrides + [f"data.num_workers={args.workers}"])
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        assert avmae(["synth", str(tmp / "data"), "--clips", str(args.clips), "--size", str(args.size),
                      "--seconds", str(args.seconds), "--workers", str(args.synth_workers)]) == 0
        sets = [a for s in args.overrides for a in ("--set", s)]
        assert avmae(["prepare", str(tmp / "data" / "train.csv"), "--out", str(tmp / "shards"),
                      "--preset", args.preset, *sets, "--workers", str(args.synth_workers)]) == 0
        if args.jpeg_decode:
            return measure_jpeg_decode(tmp / "shards", cfg, args)
        dataset = build_dataset(tmp / "shards", cfg, train=True)
        times = {"per_epoch_loaders": [], "run_loader": []}
        for _ in range(args.repeats):
            for name, fn in (("per_epoch_loaders", per_epoch_loaders), ("run_loader", run_loader)):
                t0 = time.perf_counter()
                clips = fn(dataset, cfg, args.batch, args.epochs)
                times[name].append((time.perf_counter() - t0, clips))
        for name, runs in times.items():
            seconds = statistics.median(t for t, _ in runs)
            record = {"bench": "train_loader", "loader": name, "preset": args.preset,
                      "batch": args.batch, "epochs": args.epochs, "workers": args.workers,
                      "prefetch_factor": 2 if name == "per_epoch_loaders" else cfg.data.prefetch_factor,
                      "clips": runs[0][1],
                      "seconds": round(seconds, 3), "clips_per_s": round(runs[0][1] / seconds, 1),
                      "machine": machine()}
            emit(record)
            write_record(args.out, record)


def measure_jpeg_decode(shards: Path, cfg, args) -> None:
    """One JSON line per data.jpeg_decode value: the run's loader, clips/s over all epochs."""
    datasets = {}
    for mode in args.jpeg_decode:
        mode_cfg = copy.deepcopy(cfg)
        mode_cfg.data.jpeg_decode = mode
        datasets[mode] = (build_dataset(shards, mode_cfg, train=True), mode_cfg)
    times = {mode: [] for mode in datasets}
    for _ in range(args.repeats):
        for mode, (dataset, mode_cfg) in datasets.items():
            t0 = time.perf_counter()
            clips = jpeg_decode_loader(dataset, mode_cfg, args.batch, args.epochs)
            times[mode].append((time.perf_counter() - t0, clips))
    for mode, runs in times.items():
        seconds = statistics.median(t for t, _ in runs)
        record = {"bench": "train_loader_jpeg_decode", **datasets[mode][0].jpeg_decode,
                  "preset": args.preset, "batch": args.batch, "epochs": args.epochs,
                  "workers": args.workers, "clips": runs[0][1], "seconds": round(seconds, 3),
                  "clips_per_s": round(runs[0][1] / seconds, 1), "machine": machine()}
        emit(record)
        write_record(args.out, record)


if __name__ == "__main__":
    main()
