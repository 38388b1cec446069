"""Pretraining throughput end to end (data loading included) against the model-only step,
measured in the same process on the synthetic set.

    python bench/bench_pretrain.py                       # tiny-4l-cpu on the default synthetic clips
    python bench/bench_pretrain.py --preset base --batch 2 --size 256 --seconds 8
    python bench/bench_pretrain.py --device cuda --preset base --batch 64 --clips 160 --size 256 \
        --seconds 8 --workers 14 --sources shards --loop-steps 40 --out RESULTS.jsonl
    python bench/bench_pretrain.py --smoke               # tiny sizes: does it run?

Both feed the model through the training loops' own loader (`build_train_loader`: workers and
prefetch live across epochs, pinned memory on CUDA) and step as the loop does (bf16 autocast on
CUDA, the fused optimiser, TF32, non-blocking copies).

On a CPU it alternates `--steps` steps fed by the loader with the same number of steps on a
batch already in memory (so both see the same machine load) and compares the medians; on a GPU,
whose steps are asynchronous, it times blocks of `--steps` steps (resident, fed, resident) with
one synchronisation per block. `data_overhead` = 1 - model_step / end_to_end_step.

`--loop-steps N` also runs `avmae pretrain` itself (the real loop, from the shards) for N steps and
reports its clips/s from the metrics log; on CUDA it counts the host-device synchronisations the
loop makes (torch.cuda.set_sync_debug_mode), which should come from log steps only.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path

import torch

sys.path.insert(0, os.path.dirname(__file__))
from common import emit, machine, sync, write_record  # noqa: E402

from avmae.cli import main as avmae  # noqa: E402
from avmae.config import build_config  # noqa: E402
from avmae.data import build_dataset, build_train_loader  # noqa: E402
from avmae.models import AVMAE  # noqa: E402
from avmae.runtime import (
    autocast,
    use_fast_math,  # noqa: E402
)
from avmae.training import (  # noqa: E402
    build_optimizer,
    model_inputs,  # noqa: E402
    param_groups_weight_decay,
)

SMOKE = ["model.embed_dim=64", "model.num_heads=2", "model.depth=2", "model.fusion_layers=1",
         "model.decoder_embed_dim=32", "model.decoder_num_heads=2", "model.decoder_depth=1",
         "model.decoder_mlp_dim=64", "data.num_frames=4", "data.frame_stride=2",
         "data.short_side=36", "data.crop_size=32", "data.audio_seconds=0.64"]


class Trainer:
    def __init__(self, cfg, device: torch.device):
        torch.manual_seed(0)
        self.model = AVMAE(cfg.model).to(device)
        self.optimizer = build_optimizer(param_groups_weight_decay(self.model, 0.0), cfg.train, 1e-4)
        self.device, self.amp = device, cfg.train.amp

    def __call__(self, batch: dict) -> None:
        inputs = model_inputs(batch, ["audio", "video"], self.device)
        with autocast(self.amp, self.device):
            loss = self.model(**inputs)["loss"]
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)


def endless(dataset, cfg, batch: int):
    """The loop's loader over as many epochs as needed."""
    per_epoch = len(dataset) // batch
    if per_epoch < 1:
        sys.exit(f"--batch {batch} is larger than the {len(dataset)} training clips: raise --clips")
    return iter(build_train_loader(dataset, cfg, batch_size=batch, rank=0, world_size=1, seed=0,
                                   per_epoch=per_epoch, start=0, total=10**9))


def measure_cpu(step, batches, held, steps: int) -> tuple[float, float]:
    fed, resident = [], []
    for _ in range(steps):
        t0 = time.perf_counter()
        step(next(batches))
        fed.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        step(held)
        resident.append(time.perf_counter() - t0)
    return statistics.median(resident), statistics.median(fed)


def measure_cuda(step, batches, held, steps: int, device: str) -> tuple[float, float]:
    def block(feed) -> float:
        sync(device)
        t0 = time.perf_counter()
        for _ in range(steps):
            step(feed())
        sync(device)
        return (time.perf_counter() - t0) / steps
    first = block(lambda: held)
    fed = block(lambda: next(batches))
    second = block(lambda: held)
    return (first + second) / 2, fed


def run_loop(args, data: Path, run: Path, device: str) -> dict:
    """`avmae pretrain` for --loop-steps steps; clips/s after the first log, and on CUDA the
    synchronisations it made, by source line."""
    sets = [f"train.steps={args.loop_steps}", f"train.batch_size={args.batch}", "train.log_every=10",
            f"train.checkpoint_every={10**6}", "train.figure_clips=0",
            f"data.num_workers={args.workers}", "train.warmup_steps=1", *args.overrides,
            *(SMOKE if args.smoke else [])]
    argv = ["pretrain", "--preset", args.preset, "--data", str(data), "--out", str(run),
            "--device", device, *[a for s in sets for a in ("--set", s)]]
    cuda = device.startswith("cuda")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if cuda:
            torch.cuda.set_sync_debug_mode("warn")
        try:
            code = avmae(argv)
        finally:
            if cuda:
                torch.cuda.set_sync_debug_mode("default")
    syncs = Counter(f"{Path(w.filename).name}:{w.lineno}" for w in caught
                    if "synchroniz" in str(w.message))
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()
            if '"clips_per_s"' in line]
    steady = [r["clips_per_s"] for r in rows if r["step"] > 1 and r["step"] > args.loop_steps // 4]
    return {"exit_code": code, "steps": args.loop_steps,
            "clips_per_s": round(statistics.median(steady), 2) if steady else None,
            "host_device_syncs": sum(syncs.values()) if cuda else None,
            "log_steps": len(rows), "sync_sites": dict(syncs.most_common(8)) if cuda else None}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--preset", default="tiny-4l-cpu")
    p.add_argument("--set", action="append", default=[], dest="overrides")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--clips", type=int, default=64)
    p.add_argument("--size", type=int, default=80)
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--synth-workers", type=int, default=2)
    p.add_argument("--sources", default="shards,raw", help="shards and/or raw (mp4)")
    p.add_argument("--loop-steps", type=int, default=0, help="also run `avmae pretrain` this long")
    p.add_argument("--smoke", action="store_true", help="tiny sizes: check that it runs")
    p.add_argument("--out", help="append every JSON line to this file too")
    args = p.parse_args()
    if args.smoke:
        args.batch, args.steps, args.clips = min(args.batch, 4), min(args.steps, 3), 16
        args.size, args.seconds = 48, 1.2
    overrides = args.overrides + (SMOKE if args.smoke else []) + [f"data.num_workers={args.workers}"]
    cfg = build_config(args.preset, overrides)
    device = torch.device(args.device)
    use_fast_math(device)

    def report(record):
        record = {**record, "machine": machine()}
        emit(record)
        write_record(args.out, record)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        quiet = ["--workers", str(args.synth_workers)]
        t0 = time.perf_counter()
        assert avmae(["synth", str(tmp / "data"), "--clips", str(args.clips), "--size", str(args.size),
                      "--seconds", str(args.seconds), *quiet]) == 0
        sets = [a for s in args.overrides + (SMOKE if args.smoke else []) for a in ("--set", s)]
        assert avmae(["prepare", str(tmp / "data" / "train.csv"), "--out", str(tmp / "shards"),
                      "--preset", args.preset, *sets, *quiet]) == 0
        report({"bench": "bench_data_setup", "seconds": round(time.perf_counter() - t0, 1),
                "clips": args.clips, "size": args.size, "clip_seconds": args.seconds})
        step = Trainer(cfg, device)
        sources = {"shards": tmp / "shards", "raw": tmp / "data" / "train.csv"}
        for name in args.sources.split(","):
            dataset = build_dataset(sources[name], cfg, train=True)
            batches = endless(dataset, cfg, args.batch)
            held = {k: v.to(device) if torch.is_tensor(v) else v for k, v in next(batches).items()}
            step(held)                                        # warm-up (and workers start)
            step(next(batches))
            if device.type == "cuda":
                model_only, end_to_end = measure_cuda(step, batches, held, args.steps, args.device)
            else:
                model_only, end_to_end = measure_cpu(step, batches, held, args.steps)
            del batches
            report({"bench": "pretrain_end_to_end", "source": "shards" if name == "shards" else "raw_mp4",
                    "preset": args.preset, "device": args.device, "batch": args.batch,
                    "workers": args.workers, "prefetch_factor": cfg.data.prefetch_factor,
                    "smoke": args.smoke, "model_step_s": round(model_only, 4),
                    "end_to_end_step_s": round(end_to_end, 4),
                    "data_overhead": round(1 - model_only / end_to_end, 3),
                    "clips_per_s": round(args.batch / end_to_end, 2)})
        if args.loop_steps > 0:
            loop = run_loop(args, tmp / "shards", tmp / "run", args.device)
            report({"bench": "pretrain_loop", "preset": args.preset, "device": args.device,
                    "batch": args.batch, "workers": args.workers, "smoke": args.smoke, **loop})


if __name__ == "__main__":
    main()
