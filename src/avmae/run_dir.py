"""The run folder: its overwrite guard and lock, its config, and its metrics log.

- A run folder that already holds a run is only written with --resume (continue it) or
  --overwrite (replace it): `claim_run_dir`, which every command writing a run folder calls.
- One writer per run folder: RUN/.lock is held (flock) while a process writes the run; a second
  process on the same --out refuses. The lock dies with its process, so a crash never leaves
  a run locked.
- `RunLog`: rank 0's metrics as JSON lines in RUN/metrics.jsonl, TensorBoard events where
  installed, and a progress bar.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import socket
import time
from pathlib import Path

from tqdm import tqdm

from avmae.checkpoint import StorageError, storage_message, writing
from avmae.config import Config, ConfigError


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
            self.close()  # the progress bar ends its line: the error is one line of its own
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


def write_config(run_dir: Path, cfg: Config) -> None:
    with writing(run_dir / "config.json", run_dir):
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(cfg.to_json() + "\n")


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
