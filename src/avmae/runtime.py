"""Where a run executes: torch.distributed set-up for runs launched with torchrun (DDP): NCCL on GPUs, gloo on CPU.

A plain `avmae pretrain` is a world of one; `torchrun --nproc_per_node N -m avmae.cli pretrain ...`
(or `torchrun ... $(which avmae) pretrain ...`) gives each process its RANK / WORLD_SIZE / LOCAL_RANK.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from avmae.config import ConfigError


@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def resolve_device(device: str = "auto") -> torch.device:
    """'auto' -> cuda where available, else cpu; otherwise the device named."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"--device {device}: not a device; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(f"--device {device}: no CUDA GPU is visible to this torch "
                              f"(torch {torch.__version__}); use --device cpu or auto")
        if dev.index is not None and dev.index >= count:
            raise ConfigError(f"--device {device}: this machine has {count} CUDA GPU"
                              f"{'' if count == 1 else 's'} (cuda:0 to cuda:{count - 1})")
    elif dev.type == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise ConfigError(f"--device {device}: Apple's MPS is not available here; use --device cpu or auto")
    elif dev.type != "cpu":
        raise ConfigError(f"--device {device}: avmae runs on cpu, cuda or mps; use --device auto, cpu or cuda")
    return dev


def setup(device: str = "auto") -> Dist:
    """Read torchrun's environment, pick the device, and join the process group when world > 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device)
    if dev.type == "cuda" and dev.index is None:  # under torchrun each process takes its own GPU
        torch.cuda.set_device(local)
        dev = torch.device("cuda", local)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return Dist(rank, world, local, dev)


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(values: list[float], d: Dist) -> list[float]:
    """Sum a few scalars over ranks (for logging counts and losses)."""
    if not d.enabled:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=d.device)
    dist.all_reduce(t)
    return t.tolist()


def all_reduce_min(value: int, d: Dist) -> int:
    """The smallest of one integer over ranks (the first step with a non-finite loss)."""
    if not d.enabled:
        return value
    t = torch.tensor([value], dtype=torch.int64, device=d.device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return int(t.item())


def any_rank(flag: bool, d: Dist) -> bool:
    """True on every rank if `flag` is true on any (a stop request, a non-finite loss)."""
    return all_reduce_sum([float(flag)], d)[0] > 0


def barrier(d: Dist) -> None:
    if d.enabled:
        dist.barrier()


# ---- the CUDA fast path: bf16 autocast and TF32 ----

def autocast(amp: str, device: torch.device):
    """bf16 autocast where asked for ("bf16") or, with "auto", on GPUs that support it."""
    use = amp == "bf16" or (amp == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported())
    if not use:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def use_fast_math(device: torch.device) -> None:
    """TF32 for what stays fp32 on a CUDA device (matmuls outside autocast, e.g. the optimiser-side
    and evaluation passes; convolutions: cuDNN's default already). Process-wide, set once per run."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
