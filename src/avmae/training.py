"""What the pretraining and finetuning loops share: budgets, seeds, the CUDA fast path (autocast,
TF32, activation checkpointing, DDP, torch.compile), stop signals, the non-finite loss watch, the
metrics log and progress bar, and training checkpoints.

No host-device synchronisation per step: losses stay tensors on the device and are read (`.tolist`,
one transfer) only at the log interval; a non-finite loss is recorded on the device and acted on
at the next log step or checkpoint, before anything is saved (`FiniteWatch`).

Exact resume: every random stream of a step is derived from (train.seed, step): the data order and
augmentation from (seed, epoch, clip index), the masks from (seed, step, clip index), dropout and
mixup from `torch.manual_seed(step_seed(seed, step, rank))`. A checkpoint therefore needs only the
weights, the optimiser state and the step to continue exactly where an uninterrupted run would be.
"""

from __future__ import annotations

import contextlib
import json
import math
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from .checkpoint import last_checkpoint, load_train_state, load_weights, save_checkpoint
from .config import Config, ConfigError, RunError, TrainConfig
from .distributed import Dist, all_reduce_min, all_reduce_sum
from .transformer import set_grad_checkpointing


@dataclass
class Budget:
    steps_per_epoch: int   # optimiser steps per epoch (per rank; the same on every rank)
    total_steps: int
    warmup_steps: int
    global_batch: int


def resolve_budget(train: TrainConfig, batches_per_epoch: int, world_size: int) -> Budget:
    steps_per_epoch = batches_per_epoch // train.accum_steps
    if steps_per_epoch < 1:
        raise ConfigError(f"the dataset gives {batches_per_epoch} batch(es) of train.batch_size="
                          f"{train.batch_size} per process, fewer than train.accum_steps="
                          f"{train.accum_steps}: use a smaller batch or more clips")
    total = train.steps if train.steps > 0 else int(math.ceil(train.epochs * steps_per_epoch))
    warmup = train.warmup_steps if train.warmup_steps >= 0 else int(round(train.warmup_epochs * steps_per_epoch))
    return Budget(steps_per_epoch, total, min(warmup, total),
                  train.batch_size * train.accum_steps * world_size)


def lr_summary(train: TrainConfig, global_batch: int, peak_lr: float) -> str:
    """The start-of-run line about the learning rate: the paper gives each rate at its own batch
    size (Sec. B.1) and it is scaled linearly to the batch actually used."""
    return (f"peak lr {peak_lr:.4g} = train.base_lr {train.base_lr:g} x global batch {global_batch} / "
            f"train.lr_batch {train.lr_batch}")


def step_seed(seed: int, step: int, rank: int = 0) -> int:
    return (seed * 1_000_003 + step) * 1_009 + rank


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


def wrap_model(model: torch.nn.Module, train: TrainConfig, d: Dist):
    """(ddp, forward): the model with activation checkpointing as `train.grad_checkpointing` asks,
    in DDP under torchrun, and compiled with `train.compile`. `forward` is what a step calls;
    `ddp` gives `no_sync` for gradient accumulation. `model` itself keeps the state dict's names."""
    from torch.nn.parallel import DistributedDataParallel
    set_grad_checkpointing(model, train.grad_checkpointing)
    ddp = DistributedDataParallel(model, device_ids=[d.local_rank] if d.device.type == "cuda" else None) \
        if d.enabled else model
    forward = torch.compile(ddp) if train.compile else ddp
    return ddp, forward


class StopRequest:
    """SIGINT / SIGTERM set a flag; the loop saves a checkpoint at the end of the step and exits."""

    def __init__(self):
        self.requested = False
        self._old = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (e.g. inside a test runner thread)
                pass

    def _handle(self, signum, frame):
        if self.requested:  # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        self.requested = True
        tqdm.write(f"received {signal.Signals(signum).name}: saving a checkpoint, then stopping")

    def restore(self):
        for sig, old in self._old.items():
            signal.signal(sig, old)

    def agreed(self, d: Dist, sync_point: bool) -> bool:
        """Whether every rank stops after this step. Alone: at any step. Under DDP the ranks agree
        by an all-reduce, a synchronisation, so only at `sync_point`s (log steps, checkpoints):
        a preemption notice then waits at most train.log_every steps."""
        if not d.enabled:
            return self.requested
        from .distributed import any_rank
        return sync_point and any_rank(self.requested, d)


class RunLog:
    """Rank 0's metrics: JSON lines in RUN/metrics.jsonl, TensorBoard events where installed,
    and a progress bar."""

    def __init__(self, run_dir: Path, enabled: bool, total_steps: int, initial_step: int, desc: str):
        self.enabled = enabled
        self.path = run_dir / "metrics.jsonl"
        self.tb = None
        self.bar = None
        if not enabled:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
            self.tb = SummaryWriter(str(run_dir / "tensorboard"))
        except Exception:  # TensorBoard is optional
            self.tb = None
        self.bar = tqdm(total=total_steps, initial=initial_step, desc=desc, dynamic_ncols=True,
                        unit="step")

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.tb is not None and "step" in record:
            for k, v in record.items():
                if isinstance(v, (int, float)) and k != "step":
                    self.tb.add_scalar(k, v, record["step"])

    def progress(self, n: int, **postfix) -> None:
        if self.bar is not None:
            self.bar.update(n)
            if postfix:
                self.bar.set_postfix({k: (f"{v:.4g}" if isinstance(v, float) else v)
                                      for k, v in postfix.items()}, refresh=False)

    def print(self, line: str) -> None:
        if self.enabled:
            tqdm.write(line)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.tb is not None:
            self.tb.close()


class Throughput:
    def __init__(self):
        self.t0, self.clips = time.perf_counter(), 0

    def add(self, clips: int) -> None:
        self.clips += clips

    def rate(self) -> float:
        dt = time.perf_counter() - self.t0
        r = self.clips / dt if dt > 0 else 0.0
        self.t0, self.clips = time.perf_counter(), 0
        return r


def apply_gradients(model: torch.nn.Module, optimizer: torch.optim.Optimizer, clip_grad: float) -> None:
    """Clip the gradient norm (finetuning: 1.0), step, and clear the gradients."""
    if clip_grad > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def is_log_step(train: TrainConfig, budget: Budget, step: int) -> bool:
    """Every `log_every` steps, the first and the last: where the host reads device values."""
    return step % train.log_every == 0 or step == budget.total_steps or step == 1


def log_step(log: RunLog, d: Dist, train: TrainConfig, budget: Budget, step: int, epoch: int,
             lr: float, losses: dict[str, torch.Tensor | float], speed: Throughput) -> None:
    """At a log step: the step's losses (0-d tensors, read here in one transfer) averaged over
    ranks, lr and clips/s to the metrics log and the progress bar."""
    if is_log_step(train, budget, step):
        tensors = [v.detach().float() for v in losses.values() if torch.is_tensor(v)]
        read = iter(torch.stack(tensors).tolist() if tensors else [])
        values = [next(read) if torch.is_tensor(v) else float(v) for v in losses.values()]
        reduced = all_reduce_sum(values, d)
        record = {"step": step, "epoch": epoch, "lr": lr,
                  **{k: v / d.world_size for k, v in zip(losses, reduced)},
                  "clips_per_s": speed.rate() * d.world_size}
        log.write(record)
        log.progress(0, **{k: v for k, v in record.items() if k.startswith("loss")},
                     lr=lr, clips_s=record["clips_per_s"])
    log.progress(1)


def save_training_checkpoint(run_dir: Path, step: int, model: torch.nn.Module, cfg: Config, kind: str,
                             optimizer: torch.optim.Optimizer, extra: dict | None = None,
                             extra_metadata: dict | None = None) -> Path:
    state = {"step": step, "optimizer": optimizer.state_dict(), **(extra or {})}
    return save_checkpoint(run_dir, step, model.state_dict(), cfg, kind, state,
                           keep=cfg.train.keep_checkpoints, extra_metadata=extra_metadata)


def load_resume(run_dir: Path, kind: str) -> tuple[dict, dict, Config, Path]:
    """(weights, train_state, config) of the last complete checkpoint of `run_dir`."""
    ckpt = last_checkpoint(run_dir)
    if ckpt is None:
        raise ConfigError(f"--resume: no complete checkpoint in '{run_dir}/checkpoints'; start "
                          "without --resume or point --out at an existing run")
    weights, cfg, found_kind, _ = load_weights(ckpt)
    if found_kind != kind:
        raise ConfigError(f"--resume: '{ckpt}' is a {found_kind} checkpoint, not {kind}")
    return weights, load_train_state(ckpt), cfg, ckpt


class FiniteWatch:
    """Records, on the device, the first step whose loss is not finite; `check` (at log steps and
    before every checkpoint) stops the run naming it. Nothing is saved after a bad step, so the
    last checkpoint is good, and the step itself needs no host-device synchronisation."""

    def __init__(self, device: torch.device):
        self.first_bad = torch.zeros((), dtype=torch.int64, device=device)  # 0: none (steps >= 1)

    def observe(self, loss: torch.Tensor, step: int) -> None:
        bad = ~torch.isfinite(loss.detach()).all()
        self.first_bad = torch.where(bad & (self.first_bad == 0), step, self.first_bad)

    def check(self, d: Dist, run_dir: Path) -> None:
        first = int(self.first_bad)  # the one synchronisation, at a log step or checkpoint
        first = all_reduce_min(first if first > 0 else 2**62, d)
        if first < 2**62:
            last = last_checkpoint(run_dir)
            kept = f"the last good checkpoint is {last}" if last else "no checkpoint was written yet"
            raise RunError(f"non-finite loss at step {first}; {kept}. Lower train.base_lr or check the data")


def write_config(run_dir: Path, cfg: Config) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(cfg.to_json() + "\n")


def read_metrics(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
