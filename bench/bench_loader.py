"""The training loader alone, across epochs: a new loader per epoch (what the loops did before:
workers start and the prefetch pipeline refills at every epoch) against the run's one loader
(`build_train_loader`: workers and prefetch live for the whole run), measured alternately in the
same process, no model.

    python bench/bench_loader.py                      # tiny-4l-cpu input, 64 clips, 6 epochs
    python bench/bench_loader.py --preset base --size 256 --seconds 8 --clips 48 --batch 8

Prints one JSON line per loader kind: clips/s over all epochs (median of --repeats passes).
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
    p.add_argument("--out", help="append every JSON line to this file too")
    args = p.parse_args()
    cfg = build_config(args.preset, args.overrides + [f"data.num_workers={args.workers}"])
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        assert avmae(["synth", str(tmp / "data"), "--clips", str(args.clips), "--size", str(args.size),
                      "--seconds", str(args.seconds), "--workers", "2"]) == 0
        sets = [a for s in args.overrides for a in ("--set", s)]
        assert avmae(["prepare", str(tmp / "data" / "train.csv"), "--out", str(tmp / "shards"),
                      "--preset", args.preset, *sets, "--workers", "2"]) == 0
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


if __name__ == "__main__":
    main()
