"""Shared helpers for the benchmarks: machine description and a matrix-multiply peak measured in
the same process, so that every number is a ratio against this machine's own capability."""

from __future__ import annotations

import json
import os
import platform
import time

import torch


def machine() -> dict:
    info = {"python": platform.python_version(), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "cpu_count": os.cpu_count()}
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def best_time(fn, device: str, repeats: int = 5, warmup: int = 1) -> float:
    """Best wall time of `repeats` calls after `warmup` calls (seconds)."""
    for _ in range(warmup):
        fn()
    sync(device)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return best


def matmul_peak_gflops(dtype: torch.dtype, device: str = "cpu", n: int | None = None) -> float:
    """Achieved GFLOP/s of a large square matrix multiply: the practical peak of this machine
    (on a GPU the best of 8192 and 16384 squares; fp32 there uses TF32 when it is enabled)."""
    sizes = [n] if n else ([8192, 16384] if device.startswith("cuda") else [2048])
    best = 0.0
    for size in sizes:
        a = torch.randn(size, size, device=device, dtype=dtype)
        b = torch.randn(size, size, device=device, dtype=dtype)
        t = best_time(lambda: a @ b, device, repeats=5 if device == "cpu" else 20)
        best = max(best, 2 * size ** 3 / t / 1e9)
        del a, b
    return best


def emit(record: dict) -> None:
    print(json.dumps(record), flush=True)


def write_record(path: str | None, record: dict) -> None:
    """Append one JSON line to `path` (the GPU suite collects every measurement in one file)."""
    if path:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "a") as f:
            f.write(json.dumps(record) + "\n")
