"""What the pretraining and finetuning loops share: budgets, seeds, the CUDA fast path (autocast,
TF32, activation checkpointing, DDP, torch.compile), stop signals, the non-finite loss watch, the
metrics log and progress bar, training checkpoints, and the run folder's guard and lock.

Runs never lose work silently:
- A run folder that already holds a run is only written with --resume (continue it) or
  --overwrite (replace it): `claim_run_dir`, which every command writing a run folder calls.
- One writer per run folder: RUN/.lock is held (flock) while a process writes the run; a second
  process on the same --out refuses. The lock dies with its process, so a crash never leaves
  a run locked.
- A file that cannot be written (checkpoint, metrics log, figure, config) stops the run at once
  with one line and exit status 2 (checkpoint.StorageError): the previous complete checkpoint and
  `last` are intact and `--resume` continues from there once the cause is fixed. The run does
  not train on past a failed checkpoint hoping for the next one: every step after it would be
  work that no checkpoint holds, and a disk that just filled up rarely empties by itself.

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
import math
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from avmae.checkpoint import (
    last_checkpoint,
    load_checkpoint,
    newest_usable,
    save_checkpoint,
)
from avmae.config import Config, ConfigError, Interrupted, RunError, TrainConfig, a_or_an
from avmae.models.transformer import set_grad_checkpointing
from avmae.run_dir import RunLog
from avmae.runtime import Dist, all_reduce_min, all_reduce_sum
from avmae.training.optim import lr_at, set_lr


@dataclass
class Budget:
    steps_per_epoch: int   # optimiser steps per epoch (per rank; the same on every rank)
    total_steps: int
    warmup_steps: int
    global_batch: int


def fit_global_batch(train: TrainConfig, world_size: int) -> None:
    """With train.global_batch > 0, set train.batch_size and train.accum_steps (in place) so that
    batch x accum x world_size == global_batch: global_batch / world_size clips per process, in
    micro-batches of the largest divisor of that not above train.batch_size (the memory cap),
    accumulation filling the rest. A global batch the processes cannot share evenly is refused."""
    if train.global_batch <= 0:
        return
    if train.global_batch % world_size:
        raise ConfigError(f"train.global_batch={train.global_batch} is not divisible by the "
                          f"{world_size} processes: use a global batch that is, or --set "
                          "train.batch_size (per process) instead")
    per_process = train.global_batch // world_size
    micro = max(b for b in range(1, min(train.batch_size, per_process) + 1) if per_process % b == 0)
    train.batch_size, train.accum_steps = micro, per_process // micro


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
        self.requested, self.signum = False, 0
        self._old = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (e.g. inside a test runner thread)
                pass

    def _handle(self, signum, frame):
        if self.requested:  # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        self.requested, self.signum = True, signum
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
        from avmae.runtime import any_rank
        return sync_point and any_rank(self.requested, d)


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
    """(weights, train_state, config, folder) of the newest checkpoint of `run_dir` that verifies
    and loads; each newer one skipped is named in a warning line."""
    if not (Path(run_dir) / "checkpoints").is_dir():
        raise ConfigError(f"--resume: no checkpoint in '{run_dir}/checkpoints': start it again "
                          "with --overwrite (or without --resume into a new --out)")
    (weights, cfg, found_kind, _, state), ckpt = newest_usable(run_dir, load_checkpoint, "--resume")
    if found_kind != kind:
        raise ConfigError(f"--resume: '{ckpt}' is {a_or_an(found_kind)} checkpoint, not {a_or_an(kind)} one")
    return weights, state, cfg, ckpt


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


# --- Batches and clip counts, the same in both loops ---------------------------------------------
def model_inputs(batch: dict, modalities: list[str], device: torch.device) -> dict:
    """{m: batch[m]} on `device`. Non-blocking: from the loader's pinned memory the copy overlaps
    compute, and from pageable memory it is staged without waiting for the GPU's queue."""
    return {m: batch[m].to(device, non_blocking=True) for m in modalities}


def count_clips(counts: dict, batch: dict, modalities: list[str]) -> None:
    """Clip counts from the loader's (host) batch, before it goes to the device."""
    n = len(batch["index"])
    counts["clips"] += n
    counts["skipped"] += int(batch["num_skipped"])
    for m in modalities:
        counts[f"filled_{m}"] += int((~batch[f"has_{m}"].numpy()).sum())


def placeholder_batch(batch: dict) -> dict:
    """For a batch whose clips were all unreadable: one all-zero clip, flagged as missing both
    modalities. It goes through the model like any batch (so DDP's gradient all-reduce happens
    on every rank) and the loop scales its loss to zero."""
    out = {k: torch.zeros((1,) + tuple(v.shape[1:]), dtype=v.dtype) if torch.is_tensor(v) else v
           for k, v in batch.items()}
    out["index"] = torch.full((1,), -1, dtype=torch.int64)
    return out


def epoch_summary(counts: dict, epoch: int, d: Dist, log: RunLog) -> None:
    """Log (and print, when a clip was skipped or filled) the epoch's clip counts, summed over
    ranks, then reset them: nothing is dropped silently (DESIGN "Errors and bad input")."""
    keys = ["clips", "skipped", "filled_audio", "filled_video"]
    totals = all_reduce_sum([float(counts[k]) for k in keys], d)
    record = {"epoch_end": epoch, **{k: int(v) for k, v in zip(keys, totals)}}
    log.write(record)
    if record["skipped"] or record["filled_audio"] or record["filled_video"]:
        log.print(f"epoch {epoch}: {record['clips']} clips, {record['skipped']} unreadable skipped, "
                  f"{record['filled_audio']} without audio and {record['filled_video']} without video filled")
    for k in keys:
        counts[k] = 0


# --- The loop both stages run ---------------------------------------------------------------------
AUGMENT_SALT = 0x5EED_A06  # keeps a step's augmentation stream apart from its dropout stream


def train_loop(*, t: TrainConfig, d: Dist, budget: Budget, run_dir: Path, model, ddp, optimizer,
               peak_lr: float, step: int, batches, log: RunLog, modalities: list[str],
               loss_keys: list[str], micro_step, save) -> None:
    """The skeleton of pretraining and finetuning: epochs of steps from `step` on, the lr
    schedule, per-step seeds, gradient accumulation over `t.accum_steps` micro-batches (DDP
    syncs on the last), clip counts, the non-finite watch, logging, checkpoints and stop requests.

    micro_step(batch, empty, step, generator) -> (loss, report) computes one micro-batch's loss
    (already zero for an all-unreadable placeholder batch, `empty`) and the tensors to log; the
    loop runs its backward. `generator` is the step's own CPU generator for augmentation.
    save(step, epoch, stopping) writes a checkpoint. A stop request (SIGINT / SIGTERM; under DDP
    agreed by every rank) saves a checkpoint and raises config.Interrupted.
    """
    return TrainLoop(t=t, d=d, budget=budget, run_dir=run_dir, model=model, ddp=ddp,
                     optimizer=optimizer, peak_lr=peak_lr, batches=batches, log=log,
                     modalities=modalities, loss_keys=loss_keys, micro_step=micro_step,
                     save=save).run(step)


class TrainLoop:
    """train_loop's state: what it is given, the stop request, the non-finite watch, the
    throughput and the epoch's clip counts. `run` goes through the epochs, `train_step` is one
    optimiser step, `accumulate` its micro-batches, `micro_batch` one of them."""

    def __init__(self, *, t: TrainConfig, d: Dist, budget: Budget, run_dir: Path, model, ddp,
                 optimizer, peak_lr: float, batches, log: RunLog, modalities: list[str],
                 loss_keys: list[str], micro_step, save):
        self.t, self.d, self.budget, self.run_dir = t, d, budget, run_dir
        self.model, self.ddp, self.optimizer, self.peak_lr = model, ddp, optimizer, peak_lr
        self.batches, self.log, self.modalities, self.loss_keys = batches, log, modalities, loss_keys
        self.micro_step, self.save = micro_step, save

    def run(self, step: int) -> None:
        """Every step from `step` on (a stop request raises Interrupted after its checkpoint)."""
        budget = self.budget
        self.stop, self.finite, self.speed = StopRequest(), FiniteWatch(self.d.device), Throughput()
        self.counts = {"clips": 0, "skipped": 0, "filled_audio": 0, "filled_video": 0}
        self.model.train()
        try:
            while step < budget.total_steps:
                epoch, step_in_epoch = divmod(step, budget.steps_per_epoch)
                for _ in range(step_in_epoch, min(budget.steps_per_epoch,
                                                  step_in_epoch + budget.total_steps - step)):
                    self.train_step(step, epoch)
                    step += 1
                if step % budget.steps_per_epoch == 0 or step == budget.total_steps:
                    epoch_summary(self.counts, epoch, self.d, self.log)
        finally:
            self.stop.restore()
            self.log.close()

    def train_step(self, step: int, epoch: int) -> None:
        """Optimiser step `step` (0-based) -> step + 1: lr, seeds, micro-batches, update, log,
        checkpoint. A stop request ends the run after it: its checkpoint saved, Interrupted."""
        t, d, budget = self.t, self.d, self.budget
        lr = lr_at(step, budget.total_steps, budget.warmup_steps, self.peak_lr, t.min_lr)
        set_lr(self.optimizer, lr)  # x each group's lr_scale (layer-wise decay in finetuning)
        # Stochastic depth and dropout draw from torch's global RNG, augmentation from its
        # own CPU generator: both are functions of (seed, step, rank), so resume is exact.
        torch.manual_seed(step_seed(t.seed, step, d.rank))
        generator = torch.Generator().manual_seed(
            (step_seed(t.seed, step, d.rank) + AUGMENT_SALT) % 2**63)
        losses = self.accumulate(step, generator)
        apply_gradients(self.model, self.optimizer, t.clip_grad)
        step += 1
        log_now = is_log_step(t, budget, step)
        save_now = step % t.checkpoint_every == 0 or step == budget.total_steps
        stop_now = self.stop.agreed(d, log_now or save_now)
        if log_now or save_now or stop_now:
            self.finite.check(d, self.run_dir)
        log_step(self.log, d, t, budget, step, epoch, lr, losses, self.speed)
        if save_now or stop_now:
            self.save(step, epoch, stop_now)
        if stop_now:
            self.log.print(f"stopped at step {step}; resume with --resume")
            name = signal.Signals(self.stop.signum).name if self.stop.signum else "a stop request"
            raise Interrupted(f"{name} at step {step} of {budget.total_steps}: checkpoint saved; "
                              "continue with --resume", self.stop.signum or signal.SIGTERM)

    def accumulate(self, step: int, generator: torch.Generator) -> dict:
        """The step's `t.accum_steps` micro-batches, backpropagated; their losses averaged (device
        tensors, read at log steps only)."""
        accum = self.t.accum_steps
        losses = dict.fromkeys(self.loss_keys, 0.0)  # the same keys on every rank; tensors after
        for micro in range(accum):
            report = self.micro_batch(step, generator, last=micro == accum - 1)
            losses = {k: v + report[k].detach() / accum if k in report else v
                      for k, v in losses.items()}
        return losses

    def micro_batch(self, step: int, generator: torch.Generator, last: bool) -> dict:
        """One micro-batch: counted, its loss backpropagated (DDP syncs on the `last`); returns
        micro_step's report."""
        batch = next(self.batches)
        count_clips(self.counts, batch, self.modalities)
        self.speed.add(len(batch["index"]))
        sync = self.ddp.no_sync() if self.d.enabled and not last else contextlib.nullcontext()
        empty = len(batch["index"]) == 0  # every clip unreadable
        batch = placeholder_batch(batch) if empty else batch
        with sync:
            loss, report = self.micro_step(batch, empty, step, generator)
            self.finite.observe(loss, step + 1)
            (loss / self.t.accum_steps).backward()
        return report
