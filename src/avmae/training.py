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
import errno
import json
import math
import os
import shutil
import signal
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from .checkpoint import (StorageError, last_checkpoint, load_checkpoint, newest_usable,
                         save_checkpoint, storage_message, writing)
from .config import Config, ConfigError, RunError, TrainConfig
from .distributed import Dist, all_reduce_min, all_reduce_sum
from .optimization import lr_at, set_lr
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
        self.run_dir = run_dir
        self.path = run_dir / "metrics.jsonl"
        self.tb = None
        self.bar = None
        if not enabled:
            return
        end_torn_line(self.path, run_dir)
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
        line = json.dumps(record) + "\n"
        size = self.path.stat().st_size if self.path.exists() else 0
        try:
            with open(self.path, "a") as f:
                f.write(line)
        except OSError as err:
            with contextlib.suppress(OSError):  # no torn line left for the resumed run to append to
                os.truncate(self.path, size)
            raise StorageError(storage_message(self.path, err, self.run_dir)) from None
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
    """(weights, train_state, config, folder) of the newest checkpoint of `run_dir` that verifies
    and loads; each newer one skipped is named in a warning line."""
    if not (Path(run_dir) / "checkpoints").is_dir():
        raise ConfigError(f"--resume: no checkpoint in '{run_dir}/checkpoints': start it again "
                          "with --overwrite (or without --resume into a new --out)")
    (weights, cfg, found_kind, _, state), ckpt = newest_usable(run_dir, load_checkpoint, "--resume")
    if found_kind != kind:
        raise ConfigError(f"--resume: '{ckpt}' is a {found_kind} checkpoint, not {kind}")
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


def write_config(run_dir: Path, cfg: Config) -> None:
    with writing(run_dir / "config.json", run_dir):
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(cfg.to_json() + "\n")


def add_run_dir_arguments(parser) -> None:
    """--resume and --overwrite, for every command that writes a run folder."""
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --out from its newest checkpoint that verifies")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the run already in --out (its checkpoints, metrics, figures)")


# ---- the run folder: overwrite guard and lock -------------------------------------------------

# What a run leaves in its folder (checkpoint.py's layout); --overwrite removes these and only
# these, so a folder that also holds a user's own files keeps them.
RUN_FILES = ("config.json", "metrics.jsonl", "checkpoints", "figures", "tensorboard",
             "loss_curve.png", "vocab.json")


def guard_run_dir(run_dir: Path, *, resume: bool, overwrite: bool, files=RUN_FILES,
                  what: str = "a run", resume_flag: bool = True) -> None:
    """Refuse to write into a folder that already holds `what` (any of `files`) unless the user
    said --resume (continue it) or --overwrite (replace it: those files are removed now).
    resume_flag=False: the command has no --resume (the message names --overwrite only)."""
    run_dir = Path(run_dir)
    if resume and overwrite:
        raise ConfigError("--resume continues a run and --overwrite replaces it: give one of them")
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"--out '{run_dir}' is a file; give a folder")
    found = [name for name in files if (run_dir / name).exists() or (run_dir / name).is_symlink()]
    if not found or resume:
        return
    if not overwrite:
        how = ("add --resume to continue it or --overwrite to replace it" if resume_flag
               else "pass --overwrite to replace it")
        raise ConfigError(f"'{run_dir}' already holds {what} ({', '.join(found)}): {how}, or "
                          "choose another --out")
    for name in found:
        path = run_dir / name
        with writing(path):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()


class RunLock:
    """RUN/.lock, held with flock(2) while a process writes the run folder.

    The kernel drops a flock when its process ends, however it ends, so the lock of a crashed or
    killed run never blocks the next one; the file itself stays and only says who held it last
    (pid, host, time, for the message). On a file system without flock (some network mounts) the
    lock falls back to that record: a pid that is not alive on this host does not block."""

    NAME = ".lock"

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / self.NAME
        self.fd: int | None = None
        self.created = False  # the folder was made for this run (removed again if left empty)

    def acquire(self) -> None:
        self.created = not self.path.parent.exists()
        while True:
            with writing(self.path):
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                held = self._flock(fd)
                # a lock file removed by its last holder (see release) between our open and our
                # flock is not the lock any more: take the new one
                same = held is not None or os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            except BaseException:
                os.close(fd)
                raise
            if same:
                break
            os.close(fd)
        if held is not None:
            os.close(fd)
            raise ConfigError(f"'{self.path.parent}' is being written by another process "
                              f"({held}); wait for it to finish, or choose another --out")
        self.fd = fd
        record = json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                             "since": time.strftime("%Y-%m-%dT%H:%M:%S")}) + "\n"
        try:
            with writing(self.path):
                os.ftruncate(fd, 0)
                os.pwrite(fd, record.encode(), 0)
        except BaseException:
            self.release()
            raise

    def _flock(self, fd: int) -> str | None:
        """None when this process now holds the lock, else who holds it."""
        try:
            import fcntl
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return None
        except (BlockingIOError, PermissionError):
            return self.holder() or "a process that left no record"
        except (ImportError, OSError) as err:
            if isinstance(err, OSError) and err.errno in (errno.EAGAIN, errno.EACCES):
                return self.holder() or "a process that left no record"
            return self.holder(alive_only=True)  # no flock here: trust a live pid

    def holder(self, alive_only: bool = False) -> str | None:
        """'pid N on HOST since T' from the lock file; with alive_only, None when that process is
        known to be gone (its pid is not alive on this host)."""
        try:
            info = json.loads(self.path.read_text())
            pid, host = int(info["pid"]), str(info["host"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if alive_only and host == socket.gethostname() and not pid_alive(pid):
            return None
        return f"pid {pid} on {host} since {info.get('since', '?')}"

    def is_held(self) -> str | None:
        """Who holds the lock now (for `avmae check`), without taking it; None if nobody."""
        if not self.path.exists():
            return None
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError:
            return None
        try:
            import fcntl
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except (BlockingIOError, PermissionError):
                return self.holder() or "a process that left no record"
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        except (ImportError, OSError):
            return self.holder(alive_only=True)
        finally:
            os.close(fd)

    def release(self) -> None:
        """Drop the lock. The file stays (see the class docstring), unless the folder was made
        for this run and holds nothing else (a command that failed before writing anything)."""
        if self.fd is None:
            return
        if self.created and [p.name for p in self.path.parent.iterdir()] == [self.NAME]:
            with contextlib.suppress(OSError):
                self.path.unlink()
                self.path.parent.rmdir()
        os.close(self.fd)  # drops the flock
        self.fd = None

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


@contextlib.contextmanager
def claim_run_dir(run_dir: Path, *, resume: bool, overwrite: bool, files=RUN_FILES,
                  what: str = "a run", resume_flag: bool = True, main: bool | None = None):
    """Lock the run folder, then apply the overwrite guard; the lock is held until the block
    ends. main=False (ranks other than 0 under torchrun): nothing, rank 0 owns the folder."""
    if main is None:
        main = int(os.environ.get("RANK", "0")) == 0
    if not main:
        yield
        return
    if resume and overwrite:  # before anything is created
        raise ConfigError("--resume continues a run and --overwrite replaces it: give one of them")
    if Path(run_dir).exists() and not Path(run_dir).is_dir():
        raise ConfigError(f"--out '{run_dir}' is a file; give a folder")
    if resume and not Path(run_dir).is_dir():
        raise ConfigError(f"--resume: there is no run folder '{run_dir}'; start a new run without "
                          "--resume")
    with RunLock(run_dir):
        guard_run_dir(run_dir, resume=resume, overwrite=overwrite, files=files, what=what,
                      resume_flag=resume_flag)
        yield


def end_torn_line(path: Path, run_dir: Path) -> None:
    """A log whose writer was killed mid-line gets its newline, so the next record starts a line
    of its own (read_metrics then skips the torn one)."""
    with writing(path, run_dir):
        if path.exists() and path.stat().st_size > 0:
            with open(path, "rb+") as f:
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":
                    f.write(b"\n")


def read_metrics(run_dir: Path) -> list[dict]:
    """The records of RUN/metrics.jsonl; a line torn by a killed writer is skipped."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return [r for r in records if isinstance(r, dict)]


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
               loss_keys: list[str], micro_step, save) -> bool:
    """The skeleton of pretraining and finetuning: epochs of steps from `step` on, the lr
    schedule, per-step seeds, gradient accumulation over `t.accum_steps` micro-batches (DDP
    syncs on the last), clip counts, the non-finite watch, logging, checkpoints and stop requests.

    micro_step(batch, empty, step, generator) -> (loss, report) computes one micro-batch's loss
    (already zero for an all-unreadable placeholder batch, `empty`) and the tensors to log; the
    loop runs its backward. `generator` is the step's own CPU generator for augmentation.
    save(step, epoch, stopping) writes a checkpoint. Returns True when a stop request ended
    the run early (its checkpoint saved), False once every step is done.
    """
    stop, finite, speed = StopRequest(), FiniteWatch(d.device), Throughput()
    counts = {"clips": 0, "skipped": 0, "filled_audio": 0, "filled_video": 0}
    model.train()
    try:
        while step < budget.total_steps:
            epoch, step_in_epoch = divmod(step, budget.steps_per_epoch)
            for _ in range(step_in_epoch, budget.steps_per_epoch):
                if step >= budget.total_steps:
                    break
                lr = lr_at(step, budget.total_steps, budget.warmup_steps, peak_lr, t.min_lr)
                set_lr(optimizer, lr)  # x each group's lr_scale (layer-wise decay in finetuning)
                # Stochastic depth and dropout draw from torch's global RNG, augmentation from its
                # own CPU generator: both are functions of (seed, step, rank), so resume is exact.
                torch.manual_seed(step_seed(t.seed, step, d.rank))
                generator = torch.Generator().manual_seed(
                    (step_seed(t.seed, step, d.rank) + AUGMENT_SALT) % 2**63)
                losses = dict.fromkeys(loss_keys, 0.0)  # the same keys on every rank; tensors after
                for micro in range(t.accum_steps):
                    batch = next(batches)
                    count_clips(counts, batch, modalities)
                    speed.add(len(batch["index"]))
                    last_micro = micro == t.accum_steps - 1
                    sync = ddp.no_sync() if d.enabled and not last_micro else contextlib.nullcontext()
                    empty = len(batch["index"]) == 0  # every clip unreadable
                    batch = placeholder_batch(batch) if empty else batch
                    with sync:
                        loss, report = micro_step(batch, empty, step, generator)
                        finite.observe(loss, step + 1)
                        (loss / t.accum_steps).backward()
                    for k in losses:  # tensors: read at log steps only
                        if k in report:
                            losses[k] = losses[k] + report[k].detach() / t.accum_steps
                apply_gradients(model, optimizer, t.clip_grad)
                step += 1
                log_now = is_log_step(t, budget, step)
                save_now = step % t.checkpoint_every == 0 or step == budget.total_steps
                stop_now = stop.agreed(d, log_now or save_now)
                if log_now or save_now or stop_now:
                    finite.check(d, run_dir)
                log_step(log, d, t, budget, step, epoch, lr, losses, speed)
                if save_now or stop_now:
                    save(step, epoch, stop_now)
                if stop_now:
                    log.print(f"stopped at step {step}; resume with --resume")
                    return True
            if step % budget.steps_per_epoch == 0 or step == budget.total_steps:
                epoch_summary(counts, epoch, d, log)
    finally:
        stop.restore()
        log.close()
    return False
