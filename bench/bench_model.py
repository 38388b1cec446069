"""One AV-MAE pretraining step (forward + backward + optimiser step), model only.

Reports clips/s and achieved GFLOP/s (analytic FLOPs from `avmae.flops`) as a fraction of the
machine's matrix-multiply peak measured in the same process, for fp32 and bf16 autocast.

    python bench/bench_model.py                      # CPU: base preset, paper input, batch 2
    python bench/bench_model.py --device cuda --preset large --batch 32 --dtypes bf16
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
from common import best_time, emit, machine, matmul_peak_gflops  # noqa: E402

from avmae.config import build_config  # noqa: E402
from avmae.flops import pretrain_flops  # noqa: E402
from avmae.model import AVMAE  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", default="base")
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtypes", default="fp32,bf16")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compile", action="store_true")
    args = parser.parse_args()

    cfg = build_config(args.preset, args.overrides)
    d = cfg.data
    model = AVMAE(cfg.model).to(args.device)
    step_model = torch.compile(model) if args.compile else model
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), fused=args.device != "cpu")
    audio = torch.randn(args.batch, 1, d.audio_frames, d.mel_bins, device=args.device)
    video = torch.randn(args.batch, 3, d.num_frames, d.crop_size, d.crop_size, device=args.device)
    gflop_per_step = pretrain_flops(cfg)["train_gflops_per_clip"] * args.batch
    dev_type = "cuda" if args.device.startswith("cuda") else "cpu"

    for name in args.dtypes.split(","):
        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[name]
        peak = matmul_peak_gflops(dtype, args.device)
        autocast = (torch.autocast(dev_type, dtype=torch.bfloat16) if name == "bf16"
                    else contextlib.nullcontext())

        def step():
            with autocast:
                loss = step_model(audio, video)["loss"]
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        t = best_time(step, args.device, repeats=args.repeats, warmup=2 if args.compile else 1)
        achieved = gflop_per_step / t
        emit({"bench": "pretrain_step", "preset": args.preset, "device": args.device, "dtype": name,
              "batch": args.batch, "compile": args.compile, "step_s": round(t, 4),
              "clips_per_s": round(args.batch / t, 3), "gflop_per_step": round(gflop_per_step, 1),
              "achieved_gflops": round(achieved, 1), "matmul_peak_gflops": round(peak, 1),
              "fraction_of_peak": round(achieved / peak, 3), "machine": machine()})


if __name__ == "__main__":
    main()
