"""One training step (forward + backward + optimiser step), model only: pretraining or finetuning.

Reports clips/s and achieved GFLOP/s (analytic model FLOPs from `avmae.models.flops`) as a fraction of the
machine's matrix-multiply peak measured in the same process (on a GPU: MFU, also against the
datasheet's dense bf16 peak); optionally the largest batch that fits (`--max-batch`: doubling, then
one step between the last fit and the first out-of-memory) and the GPU-hours of the paper's
schedules at `--batch` clips per GPU (`--schedules`; 64 = the paper's 512 on 8 GPUs).

    python bench/bench_model.py                      # CPU: base pretraining, paper input, batch 2
    python bench/bench_model.py --device cuda --preset base --batch 64 --dtypes bf16 --max-batch \
        --schedules vggsound
    python bench/bench_model.py --device cuda --stage finetune --preset vggsound-large --batch 8 \
        --dtypes bf16 --grad-checkpointing --max-batch
    python bench/bench_model.py --smoke --device cpu --max-batch   # tiny sizes: does it run?

Each variant of the CUDA fast path can be switched off to measure what it brings: `--dtypes fp32`
(with TF32) or `--no-tf32`, `--no-fused` (foreach AdamW / SGD), `--attention math` (SDPA's
reference kernel instead of flash / memory-efficient), `--compile`, `--grad-checkpointing`.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
from common import best_time, emit, machine, matmul_peak_gflops, write_record  # noqa: E402

from avmae.config import build_config  # noqa: E402
from avmae.models import (  # noqa: E402  # noqa: E402
    AVMAE,  # noqa: E402
    VideoPatchEmbed,  # noqa: E402
    build_classifier,
    finetune_flops,
    param_groups_lrd,
    pretrain_flops,
    set_grad_checkpointing,  # noqa: E402
)
from avmae.training import build_optimizer, finetune_config, param_groups_weight_decay, per_modality_loss  # noqa: E402  # noqa: E402

# Dense (no sparsity) bf16 tensor-core peaks from the vendor datasheets, TFLOP/s.
DATASHEET_BF16_TFLOPS = [("H200", 989.4), ("GH200", 989.4), ("H100 PCIe", 756.5), ("H100", 989.4),
                         ("A100", 312.0), ("L40S", 362.1), ("A10G", 70.0)]
# The paper's schedules (Sec. 4.1, Table 14): training clips after unavailable URLs were removed.
# VGGSound 800 epochs and AudioSet-2M 80 (the same number of iterations, Sec. 4.2, Table 4/7).
SCHEDULES = {"vggsound": {"clips": 170_000, "epochs": 800},      # 170 000 training clips
             "audioset": {"clips": 1_800_000, "epochs": 80}}     # AS-2M: 1.8 M training videos
# Tiny sizes for --smoke: the preset's strategies at a few layers and a small input.
SMOKE = ["model.embed_dim=64", "model.num_heads=2", "model.depth=3", "model.fusion_layers=1",
         "model.decoder_embed_dim=32", "model.decoder_num_heads=2", "model.decoder_depth=1",
         "model.decoder_mlp_dim=64", "data.num_frames=4", "data.frame_stride=2",
         "data.short_side=32", "data.crop_size=32", "data.audio_seconds=0.64",
         "finetune.fusion_layer=2"]


def datasheet_tflops(device: str) -> float | None:
    if not device.startswith("cuda"):
        return None
    name = torch.cuda.get_device_name()
    for key, tflops in DATASHEET_BF16_TFLOPS:
        if key in name:
            return tflops
    return None


def config_for(args):
    overrides = args.overrides + (SMOKE if args.smoke else [])
    if args.stage == "pretrain":
        return build_config(args.preset, overrides)
    # As `avmae finetune` builds it from a pretraining checkpoint's config: Table 16's recipe,
    # the paper's pretraining input becomes 32 frames at stride 2.
    return finetune_config(build_config(args.preset, args.overrides), args.modality,
                           overrides=overrides)


class Bench:
    """The model and its optimiser (built once, on the device), and one training step on a batch
    of random inputs of any size."""

    def __init__(self, args, cfg, dtype: str):
        dev = args.device
        self.cfg, self.device, self.classes, self.stage = cfg, dev, args.classes, args.stage
        torch.manual_seed(0)
        with torch.device(dev):  # initialise on the device: seconds, not minutes, for ViT-L
            if args.stage == "pretrain":
                self.model = AVMAE(cfg.model)
            else:
                self.model = build_classifier(cfg, args.classes)
        if args.stage == "pretrain":
            groups = param_groups_weight_decay(self.model, cfg.train.weight_decay)
        else:
            groups = param_groups_lrd(self.model, 0.1, 0.0, cfg.finetune.layer_decay)
        set_grad_checkpointing(self.model, args.grad_checkpointing)
        if args.no_fused:
            self.optimizer = (torch.optim.SGD(groups, lr=0.1, momentum=0.9, foreach=True)
                              if cfg.train.optimizer == "sgd" else
                              torch.optim.AdamW(groups, lr=1e-4, betas=(0.9, 0.95), foreach=True))
        else:
            self.optimizer = build_optimizer(groups, cfg.train, 1e-4)
        self.forward = torch.compile(self.model) if args.compile else self.model
        dev_type = "cuda" if dev.startswith("cuda") else "cpu"
        self.autocast = ((lambda: torch.autocast(dev_type, dtype=torch.bfloat16)) if dtype == "bf16"
                         else contextlib.nullcontext)
        self.attention = contextlib.nullcontext
        if args.attention == "math":
            from torch.nn.attention import SDPBackend, sdpa_kernel
            self.attention = lambda: sdpa_kernel(SDPBackend.MATH)

    def inputs(self, batch: int) -> dict:
        d, dev = self.cfg.data, self.device
        return {"audio": torch.randn(batch, 1, d.audio_frames, d.mel_bins, device=dev),
                "video": torch.randn(batch, 3, d.num_frames, d.crop_size, d.crop_size, device=dev),
                "targets": torch.nn.functional.one_hot(torch.arange(batch, device=dev) % self.classes,
                                                       self.classes).float()}

    def step(self, x: dict) -> None:
        # The attention backend also holds for the backward: activation checkpointing recomputes
        # the forward there (it restores autocast itself, not the SDPA backend choice).
        with self.attention():
            with self.autocast():
                if self.stage == "pretrain":
                    loss = self.forward(x["audio"], x["video"])["loss"]
                else:
                    logits = self.forward(x["audio"], x["video"], per_modality=True)
                    loss, _ = per_modality_loss(logits, {m: x["targets"] for m in logits}, "single")
            loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)


def conv_tubelets(self, video: torch.Tensor) -> torch.Tensor:
    """The tubelet embedding as it was computed before: cuDNN's Conv3d (for the before row)."""
    return self.proj(video).flatten(2).transpose(1, 2)


def out_of_memory(err: BaseException) -> bool:
    return isinstance(err, torch.cuda.OutOfMemoryError) or "out of memory" in str(err).lower()


def free(device: str) -> None:
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def time_batch(bench: Bench, batch: int, repeats: int, warmup: int):
    """(seconds per step, peak GiB) at `batch`, or None when it does not fit."""
    free(bench.device)
    try:
        x = bench.inputs(batch)
        t = best_time(lambda: bench.step(x), bench.device, repeats=repeats, warmup=warmup)
        cuda = bench.device.startswith("cuda")
        peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
    except RuntimeError as err:  # torch.cuda.OutOfMemoryError is one
        if not out_of_memory(err):
            raise
        bench.optimizer.zero_grad(set_to_none=True)
        return None
    finally:
        x = None  # noqa: F841  (drop the inputs and any graph before the next size)
        free(bench.device)
    return t, peak


def largest_batch(bench: Bench, start: int, limit: int):
    """Double from `start` until out of memory (or `limit`), then try the midpoint between the
    last fit and the first failure: (the largest batch found to fit, its (seconds, peak GiB) from
    one timed step after one warm-up), or (None, None)."""
    fit, failed, b = (None, None), None, start
    while True:  # `start` itself is always tried
        got = time_batch(bench, b, repeats=1, warmup=1)
        if got is None:
            failed = b
            break
        fit, b = (b, got), b * 2
        if b > limit:
            break
    if fit[0] is not None and failed is not None and failed - fit[0] > 1:
        mid = (fit[0] + failed) // 2
        got = time_batch(bench, mid, repeats=1, warmup=1)
        if got is not None:
            fit = (mid, got)
    return fit


def profile_step(bench: Bench, batch: int, top: int) -> list[dict]:
    """The `top` kernels (CUDA) or operators (CPU) of one step at `batch` by their own time, each
    with its share of the step's total."""
    from torch.profiler import ProfilerActivity, profile
    cuda = bench.device.startswith("cuda")
    x = bench.inputs(batch)
    bench.step(x)  # warm
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        bench.step(x)
        if cuda:
            torch.cuda.synchronize()
    key = "self_device_time_total" if cuda else "self_cpu_time_total"
    events = [e for e in prof.key_averages() if getattr(e, key, 0) > 0]
    if cuda:  # kernels only: the CPU-side operators also carry device time of their kernels
        kernels = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA]
        events = kernels or events
    total = sum(getattr(e, key) for e in events) or 1.0
    events.sort(key=lambda e: getattr(e, key), reverse=True)
    free(bench.device)
    return [{"kernel": e.key[:120], "calls": e.count, "ms": round(getattr(e, key) / 1e3, 3),
             "share": round(getattr(e, key) / total, 4)} for e in events[:top]]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--stage", choices=["pretrain", "finetune"], default="pretrain")
    parser.add_argument("--preset", default="base")
    parser.add_argument("--modality", default="av", help="finetuning: audio, video or av (MBT)")
    parser.add_argument("--classes", type=int, default=309, help="finetuning: VGGSound's 309")
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtypes", default="fp32,bf16", help="fp32, bf16 (autocast)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--grad-checkpointing", action="store_true")
    parser.add_argument("--no-fused", action="store_true", help="foreach optimiser, not fused")
    parser.add_argument("--no-tf32", action="store_true", help="full fp32 matmuls on CUDA")
    parser.add_argument("--attention", choices=["auto", "math"], default="auto")
    parser.add_argument("--max-batch", action="store_true", help="also find the largest batch")
    parser.add_argument("--max-batch-limit", type=int, default=4096)
    parser.add_argument("--memory-gib", type=float, default=0,
                        help="cap this process's GPU memory (e.g. 80 for an 80 GB GPU)")
    parser.add_argument("--schedules", default="", help="vggsound,audioset: GPU-hours of the "
                        "paper's schedules at --batch per GPU")
    parser.add_argument("--conv-tubelets", action="store_true",
                        help="the tubelet embedding as cuDNN's Conv3d (before the matmul form)")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="also profile one step at --batch: its N kernels that take the most time")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: check that it runs")
    parser.add_argument("--out", help="append every JSON line to this file too")
    args = parser.parse_args()
    if args.smoke:  # no out-of-memory on a CPU, only swapping: keep the search small
        args.batch, args.max_batch_limit = min(args.batch, 2), min(args.max_batch_limit, 8)

    cuda = args.device.startswith("cuda")
    if cuda and args.memory_gib:  # e.g. 80: what fits on an 80 GB GPU, measured on a larger one
        total = torch.cuda.get_device_properties(args.device).total_memory / 2**30
        torch.cuda.set_per_process_memory_fraction(min(1.0, args.memory_gib / total),
                                                   torch.device(args.device).index or 0)
    if cuda and not args.no_tf32:
        from avmae.runtime import use_fast_math
        use_fast_math(torch.device(args.device))
    if args.conv_tubelets:
        VideoPatchEmbed.forward = conv_tubelets
    cfg = config_for(args)
    flops = (pretrain_flops(cfg) if args.stage == "pretrain" else finetune_flops(cfg, args.classes))
    gflop_per_clip = flops["train_gflops_per_clip"]
    sheet = datasheet_tflops(args.device)
    common = {"stage": args.stage, "preset": args.preset, "device": args.device,
              "tubelets": "conv3d" if args.conv_tubelets else "matmul",
              "compile": args.compile, "grad_checkpointing": args.grad_checkpointing,
              "fused": cuda and not args.no_fused, "tf32": cuda and not args.no_tf32,
              "attention": args.attention, "smoke": args.smoke, "memory_gib": args.memory_gib or None,
              "gflop_per_clip": round(gflop_per_clip, 2)}
    if args.stage == "finetune":
        common.update(modality=args.modality, num_frames=cfg.data.num_frames)

    def report(record):
        record = {**record, "machine": machine()}
        emit(record)
        write_record(args.out, record)

    for name in args.dtypes.split(","):
        matmul_dtype = torch.bfloat16 if name == "bf16" else torch.float32
        peak = matmul_peak_gflops(matmul_dtype, args.device, n=256 if args.smoke else None)
        report({"bench": "matmul_peak", "dtype": name, "device": args.device,
                "tf32": common["tf32"], "matmul_peak_gflops": round(peak, 1),
                "datasheet_bf16_tflops": sheet})
        bench = Bench(args, cfg, name)
        rows = [("step", args.batch, time_batch(bench, args.batch, args.repeats, 2 if args.compile else 1))]
        if args.profile:
            for record in profile_step(bench, args.batch, args.profile):
                report({"bench": "profile_kernel", **common, "dtype": name, "batch": args.batch,
                        **record})
        if args.max_batch:  # timed once at the largest batch: the search leaves no time for more
            rows.append(("largest_batch", *largest_batch(bench, args.batch, args.max_batch_limit)))
        bench = None
        for what, batch, result in rows:
            if result is None:
                report({"bench": f"{args.stage}_{what}", **common, "dtype": name, "batch": batch,
                        "fits": False})
                continue
            t, mem = result
            achieved = gflop_per_clip * batch / t
            record = {"bench": f"{args.stage}_{what}", **common, "dtype": name, "batch": batch,
                      "fits": True, "step_s": round(t, 4), "clips_per_s": round(batch / t, 2),
                      "achieved_gflops": round(achieved, 1), "matmul_peak_gflops": round(peak, 1),
                      "fraction_of_peak": round(achieved / peak, 3), "peak_memory_gib":
                      None if mem is None else round(mem, 2)}
            if sheet:
                record["mfu_datasheet"] = round(achieved / (sheet * 1e3), 3)
            report(record)
            if what == "step":  # the paper's global batch of 512 (Table 14) as 8 GPUs x 64
                for key in filter(None, args.schedules.split(",")):
                    s = SCHEDULES[key]
                    hours = s["epochs"] * s["clips"] / (batch / t) / 3600
                    report({"bench": "gpu_hours", **common, "dtype": name, "schedule": key,
                            "epochs": s["epochs"], "clips": s["clips"], "batch_per_gpu": batch,
                            "clips_per_s": round(batch / t, 2), "gpu_hours": round(hours, 1)})


if __name__ == "__main__":
    main()
