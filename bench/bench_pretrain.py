"""Pretraining throughput end to end (data loading included) against the model-only step,
measured in the same process on the synthetic set.

    python bench/bench_pretrain.py                       # tiny-4l-cpu on the default synthetic clips
    python bench/bench_pretrain.py --preset base --batch 2 --size 256 --seconds 8

For each data source (shards, raw mp4) it alternates `--steps` pretraining steps fed by a
DataLoader with `--workers` workers and the same number of steps on a batch already in memory
(so both see the same machine load), and compares the medians:
`data_overhead` = 1 - model_step / end_to_end_step.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, os.path.dirname(__file__))
from common import emit, machine  # noqa: E402

from avmae.cli import main as avmae  # noqa: E402
from avmae.config import build_config  # noqa: E402
from avmae.data.dataset import build_dataset, build_loader  # noqa: E402
from avmae.model import AVMAE  # noqa: E402


def train_step(model, opt, batch) -> None:
    loss = model(audio=batch["audio"], video=batch["video"])["loss"]
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--preset", default="tiny-4l-cpu")
    p.add_argument("--set", action="append", default=[], dest="overrides")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--clips", type=int, default=64)
    p.add_argument("--size", type=int, default=80)
    p.add_argument("--seconds", type=float, default=3.0)
    args = p.parse_args()
    cfg = build_config(args.preset, args.overrides + [f"data.num_workers={args.workers}"])
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        quiet = ["--workers", "2"]
        assert avmae(["synth", str(tmp / "data"), "--clips", str(args.clips), "--size", str(args.size),
                      "--seconds", str(args.seconds), *quiet]) == 0
        sets = [a for s in args.overrides for a in ("--set", s)]
        assert avmae(["prepare", str(tmp / "data" / "train.csv"), "--out", str(tmp / "shards"),
                      "--preset", args.preset, *sets, *quiet]) == 0
        torch.manual_seed(0)
        model = AVMAE(cfg.model)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95))
        for source in (tmp / "shards", tmp / "data" / "train.csv"):
            dataset = build_dataset(source, cfg, train=True)
            loader = build_loader(dataset, cfg, train=True, batch_size=args.batch, seed=0, epoch=0)
            batches = iter(loader)
            held = next(batches)                              # warm-up (and workers start)
            train_step(model, opt, held)
            # Alternate a step fed by the loader with a step on a batch already in memory, so
            # that both see the same machine load; compare the medians.
            fed, resident = [], []
            for n in range(args.steps):
                t0 = time.perf_counter()
                try:
                    batch = next(batches)
                except StopIteration:
                    loader = build_loader(dataset, cfg, train=True, batch_size=args.batch, seed=0,
                                          epoch=n + 1)
                    batches = iter(loader)
                    batch = next(batches)
                train_step(model, opt, batch)
                fed.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                train_step(model, opt, held)
                resident.append(time.perf_counter() - t0)
            del batches, loader
            end_to_end, model_only = statistics.median(fed), statistics.median(resident)
            emit({"bench": "pretrain_end_to_end", "source": "shards" if source.is_dir() else "raw_mp4",
                  "preset": args.preset, "batch": args.batch, "workers": args.workers,
                  "model_step_s": round(model_only, 4), "end_to_end_step_s": round(end_to_end, 4),
                  "data_overhead": round(1 - model_only / end_to_end, 3),
                  "clips_per_s": round(args.batch / end_to_end, 2), "machine": machine()})


if __name__ == "__main__":
    main()
