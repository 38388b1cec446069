"""`avmae check RUN`: the checkpoints of a run folder and whether each verifies.

    $ avmae check runs/pre
    runs/pre: not locked
    step_0000002  verified     model.safetensors 1.2 MB, train_state.pt 2.4 MB
    step_0000004  damaged: model.safetensors has 65536 bytes, 1234567 were written (truncated or replaced)
    last -> step_0000004
    --resume and --init would use step_0000002

States: verified (every file has the size and sha256 its COMPLETE marker recorded), unverified
(written before avmae recorded checksums: loads, but nothing vouches for it), damaged (a file is
missing, truncated or altered), incomplete (no COMPLETE marker: its writer was stopped). Exit status
0 when a checkpoint a run can continue from exists, 2 (with one line on stderr) when none does.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from avmae.checkpoint import BEST_NAME, MARKER, STATE, WEIGHTS, checkpoint_states, verify_checkpoint
from avmae.config import ConfigError
from avmae.run_dir import RunLock


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", metavar="RUN_OR_CHECKPOINT", help="a run folder (or one checkpoint folder)")


def run(args: argparse.Namespace) -> int:
    check(Path(args.run))
    return 0


def _size(path: Path) -> str:
    n = path.stat().st_size
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return ""


def describe(folder: Path, state: str) -> str:
    files = ", ".join(f"{name} {_size(folder / name)}" for name in (WEIGHTS, STATE)
                      if (folder / name).is_file())
    return f"{folder.name:<13} {state:<11}" + (f" {files}" if state in ("verified", "unverified") else "")


def check(path: Path) -> list[tuple[Path, str]]:
    """Print the state of every checkpoint of run `path`; returns [(folder, state)]."""
    if (path / WEIGHTS).is_file() or (path / MARKER).exists():  # one checkpoint folder
        try:
            state = verify_checkpoint(path)
        except ConfigError as err:
            state = f"damaged: {err}"
        print(describe(path, state))
        if state not in ("verified", "unverified"):
            raise ConfigError(f"checkpoint '{path}' does not verify: {state}")
        return [(path, state)]
    if not path.is_dir():
        raise ConfigError(f"no run folder at '{path}'")
    holder = RunLock(path).is_held()
    print(f"{path}: " + (f"being written by {holder}" if holder else "not locked"))
    states = checkpoint_states(path)
    for folder, state in states:
        print(describe(folder, state))
    root = path / "checkpoints"
    for link in ("last", BEST_NAME):
        if (root / link).is_symlink():
            target = (root / link).readlink()
            print(f"{link} -> {target}" + ("" if (root / target).exists() else " (missing)"))
    usable = [f for f, s in states if s in ("verified", "unverified") and f.name.startswith("step_")]
    if not states:
        raise ConfigError(f"'{path}' holds no checkpoint")
    if not usable:
        raise ConfigError(f"no checkpoint of '{path}' verifies: --resume and --init would refuse it")
    print(f"--resume and --init would use {usable[-1].name}")
    return states
