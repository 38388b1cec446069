"""Checkpoints (DESIGN "Files"): safetensors weights with the config in their metadata, training
state loadable with `torch.load(..., weights_only=True)`, written atomically.

Layout of a run folder:
    RUN/config.json                          the resolved config
    RUN/checkpoints/step_000500/model.safetensors   weights; metadata {"config", "kind", "step"}
    RUN/checkpoints/step_000500/train_state.pt      optimiser, scheduler, step, RNG, data position
    RUN/checkpoints/last -> step_000500      a symbolic link to the newest complete checkpoint
A checkpoint directory is complete once its `COMPLETE` marker exists; writers create it in a
temporary directory and rename it into place, so a run killed at any moment leaves the last
complete checkpoint readable.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .config import Config, ConfigError

KINDS = ("avmae_pretrain", "avmae_finetune")
BEST_NAME = "best"  # RUN/checkpoints/best -> the checkpoint with the best validation metric


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def save_checkpoint(run_dir: str | Path, step: int, state_dict: dict[str, torch.Tensor], cfg: Config,
                    kind: str, train_state: dict | None = None, keep: int = 2,
                    extra_metadata: dict[str, str] | None = None) -> Path:
    """Write RUN/checkpoints/step_XXXXXX atomically, point `last` at it, keep the newest `keep`."""
    assert kind in KINDS
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    name = f"step_{step:07d}"
    final, tmp = root / name, root / f".tmp_{name}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    metadata = {"config": cfg.to_json(), "kind": kind, "step": str(step), **(extra_metadata or {})}
    tensors = {k: v.detach().contiguous().cpu() for k, v in state_dict.items()}
    save_file(tensors, str(tmp / "model.safetensors"), metadata=metadata)
    _fsync_file(tmp / "model.safetensors")
    if train_state is not None:
        torch.save(train_state, tmp / "train_state.pt")
        _fsync_file(tmp / "train_state.pt")
    (tmp / "COMPLETE").write_text("ok\n")
    _fsync_dir(tmp)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    point_link(root, "last", name)
    steps = sorted(p for p in root.glob("step_*") if (p / "COMPLETE").exists())
    for old in steps[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def save_best(run_dir: str | Path, ckpt: Path, step: int, scores: dict) -> Path:
    """RUN/checkpoints/best -> best_XXXXXXX: the weights of checkpoint `ckpt` (a hard link where
    the file system allows, else a copy) and its validation scores, swapped in atomically like
    `last`, so `best` always names a complete checkpoint."""
    root = Path(run_dir) / "checkpoints"
    name = f"best_{step:07d}"
    final, tmp = root / name, root / f".tmp_{name}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        os.link(ckpt / "model.safetensors", tmp / "model.safetensors")
    except OSError:
        shutil.copyfile(ckpt / "model.safetensors", tmp / "model.safetensors")
        _fsync_file(tmp / "model.safetensors")
    (tmp / "val_metrics.json").write_text(json.dumps({"step": step, **scores}) + "\n")
    (tmp / "COMPLETE").write_text("ok\n")
    _fsync_dir(tmp)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    point_link(root, BEST_NAME, name)
    for old in root.glob("best_*"):
        if old.name != name:
            shutil.rmtree(old, ignore_errors=True)
    return final


def point_link(root: Path, link: str, target: str) -> None:
    """Make root/link a symbolic link to root/target, atomically (a temporary link, renamed)."""
    tmp = root / f".{link}.tmp"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    tmp.symlink_to(target)
    os.replace(tmp, root / link)
    _fsync_dir(root)


def last_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint of a run folder, or None."""
    root = Path(run_dir) / "checkpoints"
    if (root / "last" / "COMPLETE").exists():
        return (root / "last").resolve()
    steps = sorted(p for p in root.glob("step_*") if (p / "COMPLETE").exists())
    return steps[-1] if steps else None


def resolve_weights(path: str | Path) -> Path:
    """Accept a run folder, a checkpoint folder, `RUN/checkpoints/last`, or a .safetensors file."""
    p = Path(path)
    if p.is_file():
        return p
    if (p / "model.safetensors").is_file():
        return p / "model.safetensors"
    if p.is_dir():
        found = last_checkpoint(p)
        if found is not None:
            return found / "model.safetensors"
    raise ConfigError(f"no checkpoint at '{path}': give a run folder, a checkpoint folder or a "
                      ".safetensors file")


def load_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], Config, str, dict[str, str]]:
    """Read weights, config and kind of a checkpoint (no pickled code is executed)."""
    file = resolve_weights(path)
    try:
        with safe_open(str(file), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as err:  # safetensors raises several error types for corrupt files
        raise ConfigError(f"cannot read checkpoint '{file}': {err}") from None
    if "config" not in meta or meta.get("kind") not in KINDS:
        raise ConfigError(f"'{file}' is not an avmae checkpoint (no config/kind metadata)")
    cfg = Config.from_dict(json.loads(meta["config"]))
    return tensors, cfg, meta["kind"], meta


def load_train_state(ckpt_dir: str | Path) -> dict:
    path = Path(ckpt_dir) / "train_state.pt"
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ConfigError(f"cannot read training state '{path}': {err}") from None
