"""Checkpoints (DESIGN "Files"): safetensors weights with the config in their metadata, training
state loadable with `torch.load(..., weights_only=True)`, written atomically, verified on load.

Layout of a run folder:
    RUN/config.json                          the resolved config
    RUN/metrics.jsonl                        the metrics log (JSON lines)
    RUN/.lock                                held while a process writes the run (run_dir.RunLock)
    RUN/checkpoints/step_0000500/model.safetensors   weights; metadata {"config", "kind", "step"}
    RUN/checkpoints/step_0000500/train_state.pt      optimiser, step, epoch (best score when finetuning)
    RUN/checkpoints/step_0000500/COMPLETE    written last: {"files": {name: {"bytes", "sha256"}}}
    RUN/checkpoints/last -> step_0000500     a symbolic link to the newest complete checkpoint
A checkpoint folder is complete once its COMPLETE marker exists; writers create it in a temporary
folder and rename it into place, so a run killed at any moment leaves the last complete checkpoint
readable. The marker records each file's size and sha256, checked whenever the checkpoint is
loaded: a file truncated or damaged later (a killed copy, a bad sync) is caught, and a run folder
given to --resume or --init falls back to its newest checkpoint that verifies. Checkpoints written
before records existed (marker "ok") still load, as "unverified".

Write errors (a full disk, a quota, a read-only folder) become a StorageError: one line naming
the file and the operating system's reason, exit status 2. The temporary folder is removed and
every earlier checkpoint and `last` stay as they were.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import pickle
import shutil
import sys
from pathlib import Path

import torch
from safetensors import safe_open

from avmae.config import Config, ConfigError

PRETRAIN_KIND = "avmae_pretrain"  # the "kind" metadata of an AV-MAE pretraining model's weights
FINETUNE_KIND = "avmae_finetune"  # ... and of a finetuned classifier's
KINDS = (PRETRAIN_KIND, FINETUNE_KIND)
BEST_NAME = "best"  # RUN/checkpoints/best -> the checkpoint with the best validation metric
WEIGHTS, STATE, MARKER = "model.safetensors", "train_state.pt", "COMPLETE"
MARKER_FORMAT = "avmae-checkpoint"


class StorageError(ConfigError):
    """A file of a run could not be written (disk full, quota, read-only, a folder in the way):
    one line naming the file and the operating system's reason, exit status 2."""


def step_name(step: int) -> str:
    return f"step_{step:07d}"


def errno_text(err: OSError) -> str:
    """'No space left on device (ENOSPC)': the operating system's words and the errno name."""
    if err.errno is None:
        return str(err) or type(err).__name__
    return f"{os.strerror(err.errno)} ({errno.errorcode.get(err.errno, err.errno)})"


def storage_message(path: str | Path, err: OSError, run_dir: str | Path | None = None) -> str:
    """The one line of a failed write: the file, the reason, and what the run still holds."""
    line = f"cannot write '{path}': {errno_text(err)}"
    if run_dir is not None:
        try:
            kept = last_checkpoint(run_dir)
        except OSError:  # the folder itself is unreadable now: say nothing rather than guess
            return line
        line += (f"; the last complete checkpoint {kept} is intact: fix the cause, then continue "
                 "with --resume") if kept else "; no checkpoint had been written yet"
    return line


@contextlib.contextmanager
def writing(path: str | Path, run_dir: str | Path | None = None):
    """Turn an OSError raised while writing `path` into a StorageError (one line, exit 2)."""
    try:
        yield
    except OSError as err:
        raise StorageError(storage_message(path, err, run_dir)) from None


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
    fd = os.open(path, os.O_RDONLY)  # fsync flushes the file, whichever descriptor asks
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class HashingWriter:
    """A binary file being written: what goes through `write` is also counted and hashed, so
    the checksum recorded is the one of the bytes handed to the operating system."""

    def __init__(self, f):
        self.f, self.sha, self.bytes = f, hashlib.sha256(), 0
        self.error: OSError | None = None  # the first failed write

    def write(self, data) -> int:
        try:
            n = self.f.write(data)
        except OSError as err:
            self.error = self.error or err
            raise
        self.sha.update(data)
        self.bytes += memoryview(data).nbytes
        return n

    def flush(self) -> None:
        self.f.flush()

    def record(self) -> dict:
        return {"bytes": self.bytes, "sha256": self.sha.hexdigest()}


SAFETENSORS_DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
                      torch.float64: "F64", torch.int64: "I64", torch.int32: "I32", torch.int16: "I16",
                      torch.int8: "I8", torch.uint8: "U8", torch.bool: "BOOL"}


def write_safetensors(f, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """The safetensors format, streamed: 8-byte little-endian header length, the JSON header
    (padded with spaces to 8 bytes), then each tensor's bytes in header order, no holes.
    Readable by `safetensors.safe_open` like the library's own files."""
    header: dict = {"__metadata__": metadata}
    offset = 0
    names = sorted(tensors)
    for name in names:
        t = tensors[name]
        n = t.numel() * t.element_size()
        header[name] = {"dtype": SAFETENSORS_DTYPES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    f.write(len(raw).to_bytes(8, "little"))
    f.write(raw)
    for name in names:
        t = tensors[name].contiguous()
        if t.numel():  # numpy has no bfloat16: write its bits
            f.write(memoryview((t.view(torch.int16) if t.dtype == torch.bfloat16 else t).numpy()).cast("B"))


def write_file(path: Path, fill) -> dict:
    """Create `path`, let `fill(writer)` write it, fsync it; {"bytes", "sha256"} of its content.
    Every byte goes through Python's file object, so a full disk raises an OSError with its
    errno (safetensors' and torch's own file writers do not report it that way)."""
    with open(path, "wb") as f:
        out = HashingWriter(f)
        try:
            fill(out)
        except Exception:
            # torch.save's zip writer answers a failed write with its own RuntimeError ("unexpected
            # pos"), raised while closing: the OSError underneath is the one to report.
            if out.error is not None:
                raise out.error from None
            raise
    _fsync_file(path)
    return out.record()


class Stage:
    """A checkpoint folder being filled in its temporary place: what `write` writes is recorded
    (size, sha256) for the COMPLETE marker; `current` is the path being written, for the message
    if a write fails."""

    def __init__(self, tmp: Path):
        self.tmp, self.current, self.files = tmp, tmp, {}

    def write(self, name: str, fill) -> None:
        self.current = self.tmp / name
        self.files[name] = write_file(self.current, fill)


@contextlib.contextmanager
def staged(run_dir: str | Path, name: str, link: str, step: int):
    """Write RUN/checkpoints/NAME atomically: the block fills a temporary folder (`Stage`), then it
    is sealed (COMPLETE with each file's checksum), renamed into place and `link` pointed at it.
    An OSError anywhere removes the temporary folder and becomes one StorageError line naming the
    path being written; earlier checkpoints and links stay as they were."""
    root = Path(run_dir) / "checkpoints"
    final, tmp = root / name, root / f".tmp_{name}"
    stage = Stage(tmp)
    try:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        yield stage
        stage.current = tmp / MARKER
        write_marker(tmp, step, stage.files)
        _fsync_dir(tmp)
        stage.current = final
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        stage.current = root / link
        point_link(root, link, name)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)  # frees the space the partial files took
        current = stage.current
        shown = final / current.name if current.parent == tmp else current
        raise StorageError(storage_message(shown, err, run_dir)) from None


def save_checkpoint(run_dir: str | Path, step: int, state_dict: dict[str, torch.Tensor], cfg: Config,
                    kind: str, train_state: dict | None = None, keep: int = 2,
                    extra_metadata: dict[str, str] | None = None) -> Path:
    """Write RUN/checkpoints/step_XXXXXXX atomically, point `last` at it, keep the newest `keep`.

    The files are written into a temporary folder; its COMPLETE marker records the size and
    sha256 of each, and the folder is renamed into place. A failed write (StorageError, one line)
    removes the temporary folder and leaves every earlier checkpoint and `last` as they were."""
    assert kind in KINDS
    metadata = {"config": cfg.to_json(), "kind": kind, "step": str(step), **(extra_metadata or {})}
    tensors = {k: v.detach().contiguous().cpu() for k, v in state_dict.items()}
    name = step_name(step)
    with staged(run_dir, name, "last", step) as stage:
        # Streamed through write_file, tensor by tensor: a full disk is reported as one, and no
        # second copy of the weights is made (a ViT-L import stays at its parameters' size).
        stage.write(WEIGHTS, lambda f: write_safetensors(f, tensors, metadata))
        if train_state is not None:
            stage.write(STATE, lambda f: torch.save(train_state, f))
    root = Path(run_dir) / "checkpoints"
    final = root / name
    prune(root, step, keep)
    return final


def prune(root: Path, step: int, keep: int) -> None:
    """Keep the newest `keep` complete checkpoints up to `step`. Those after it (a run resumed
    from an earlier checkpoint than its newest) are left alone: they are replaced when the run
    reaches their step, so the checkpoint a run resumed from is never the one removed."""
    if keep <= 0:
        return
    done = [p for p in step_checkpoints(root.parent) if (p / MARKER).exists()
            and checkpoint_step(p) <= step]
    for old in done[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def write_marker(folder: Path, step: int, files: dict[str, dict]) -> None:
    """COMPLETE: written last, so its presence says the folder is whole; it records what whole
    means (each file's size and sha256), checked whenever the checkpoint is loaded."""
    text = json.dumps({"format": MARKER_FORMAT, "step": step, "files": files}, indent=1) + "\n"
    write_file(folder / MARKER, lambda f: f.write(text.encode()))


def save_best(run_dir: str | Path, ckpt: Path, step: int, scores: dict) -> Path:
    """RUN/checkpoints/best -> best_XXXXXXX: the weights of checkpoint `ckpt` (a hard link where
    the file system allows, else a copy) and its validation scores, swapped in atomically like
    `last`, so `best` always names a complete checkpoint."""
    root = Path(run_dir) / "checkpoints"
    name = f"best_{step:07d}"
    final = root / name
    with staged(run_dir, name, BEST_NAME, step) as stage:
        stage.current = stage.tmp / WEIGHTS
        recorded = (read_marker(ckpt) or {}).get(WEIGHTS)
        try:
            os.link(ckpt / WEIGHTS, stage.tmp / WEIGHTS)
            if recorded:
                stage.files[WEIGHTS] = recorded
        except OSError:
            stage.write(WEIGHTS, lambda f: _copy_into(ckpt / WEIGHTS, f))
        text = json.dumps({"step": step, **scores}) + "\n"
        stage.write("val_metrics.json", lambda f: f.write(text.encode()))
    for old in root.glob("best_*"):
        if old.name != name:
            shutil.rmtree(old, ignore_errors=True)
    return final


def _copy_into(source: Path, out) -> None:
    with open(source, "rb") as f:
        while chunk := f.read(1 << 24):
            out.write(chunk)


def point_link(root: Path, link: str, target: str) -> None:
    """Make root/link a symbolic link to root/target, atomically (a temporary link, renamed)."""
    tmp = root / f".{link}.tmp"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    tmp.symlink_to(target)
    os.replace(tmp, root / link)
    _fsync_dir(root)


# ---- finding and verifying checkpoints ------------------------------------------------------

def checkpoint_step(path: Path) -> int:
    try:
        return int(path.name.split("_", 1)[1])
    except (IndexError, ValueError):
        return -1


def step_checkpoints(run_dir: str | Path) -> list[Path]:
    """Every RUN/checkpoints/step_* folder (complete or not), oldest first."""
    root = Path(run_dir) / "checkpoints"
    found = [p for p in root.glob("step_*") if p.is_dir() and checkpoint_step(p) >= 0]
    return sorted(found, key=checkpoint_step)


def last_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint of a run folder (by its marker; not verified), or None."""
    done = [p for p in step_checkpoints(run_dir) if (p / MARKER).exists()]
    return done[-1] if done else None


def read_marker(folder: Path) -> dict[str, dict] | None:
    """The {file: {"bytes", "sha256"}} record of a complete checkpoint; None for a checkpoint
    written before records existed (its marker reads "ok"). Raises if there is no marker."""
    path = folder / MARKER
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError("incomplete (no COMPLETE marker: its writer was stopped)") from None
    except OSError as err:
        raise ConfigError(f"unreadable marker: {errno_text(err)}") from None
    if text.strip() == "ok":
        return None
    try:
        marker = json.loads(text)
        assert marker["format"] == MARKER_FORMAT
        return {str(k): {"bytes": int(v["bytes"]), "sha256": str(v["sha256"])}
                for k, v in marker["files"].items()}
    except (ValueError, KeyError, TypeError, AssertionError, AttributeError):
        raise ConfigError("its COMPLETE marker is damaged") from None


def file_sha256(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            sha.update(chunk)
    return sha.hexdigest()


def verify_checkpoint(folder: Path, files: tuple[str, ...] | None = None) -> str:
    """"verified" (every file of `files`, default all recorded, has its recorded size and sha256)
    or "unverified" (a checkpoint from before records: its weights' header is only checked to
    be whole); raises ConfigError with the reason otherwise."""
    record = read_marker(folder)
    if record is None:
        wanted = files or tuple(n for n in (WEIGHTS, STATE) if (folder / n).exists())
        for name in wanted:
            if not (folder / name).is_file():
                raise ConfigError(f"{name} is missing")
        if WEIGHTS in wanted:
            check_safetensors(folder / WEIGHTS)
        return "unverified"
    for name in files or tuple(record):
        path = folder / name
        if name not in record:
            if name == STATE and not path.exists():
                raise ConfigError(f"{name} was not saved with it")
            raise ConfigError(f"{name} is not in its COMPLETE record")
        if not path.is_file():
            raise ConfigError(f"{name} is missing")
        size = path.stat().st_size
        if size != record[name]["bytes"]:
            raise ConfigError(f"{name} has {size} bytes, {record[name]['bytes']} were written "
                              "(truncated or replaced)")
        if file_sha256(path) != record[name]["sha256"]:
            raise ConfigError(f"{name} does not match the sha256 recorded when it was written")
    return "verified"


def check_safetensors(path: Path) -> None:
    """A safetensors file whose header parses and whose data reaches its end (not truncated)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            f.metadata()
    except Exception as err:  # safetensors raises several error types for corrupt files
        raise ConfigError(f"{path.name} is unreadable ({one_line(err)})") from None


def warn(line: str) -> None:
    """One warning line on stderr (rank 0 only, under torchrun)."""
    if os.environ.get("RANK", "0") == "0":
        sys.stderr.write(f"avmae: warning: {line}\n")
        sys.stderr.flush()


def newest_usable(run_dir: str | Path, use, purpose: str):
    """(use(checkpoint), checkpoint) for the newest checkpoint of the run for which `use`
    succeeds (it verifies and loads), with one warning line per newer checkpoint skipped.
    None usable: one error naming each checkpoint and why."""
    run_dir = Path(run_dir)
    skipped = []
    for ckpt in reversed(step_checkpoints(run_dir)):
        try:
            result = use(ckpt)
        except ConfigError as err:
            skipped.append((ckpt, str(err)))
            continue
        for bad, why in skipped:
            warn(f"{purpose}: skipped checkpoint {bad}: {why}; using {ckpt.name}")
        return result, ckpt
    if not skipped:
        raise ConfigError(f"{purpose}: no checkpoint in '{run_dir / 'checkpoints'}'")
    reasons = "; ".join(f"{c.name}: {why}" for c, why in skipped)
    raise ConfigError(f"{purpose}: no checkpoint of '{run_dir}' verifies ({reasons})")


def one_line(err: BaseException) -> str:
    """The informative line of a multi-line library error."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__


def resolve_weights(path: str | Path, purpose: str = "checkpoint") -> Path:
    """Accept a run folder (its newest checkpoint whose weights verify, warning about each newer
    one skipped), a checkpoint folder, `RUN/checkpoints/last`, or a .safetensors file (verified
    when its folder's COMPLETE marker records it)."""
    p = Path(path)
    if p.is_file():
        verify_weights_file(p)
        return p
    if (p / WEIGHTS).is_file():
        verify_weights_file(p / WEIGHTS)
        return p / WEIGHTS
    if p.is_dir() and step_checkpoints(p):
        _, ckpt = newest_usable(p, lambda c: verify_checkpoint(c, (WEIGHTS,)), purpose)
        return ckpt / WEIGHTS
    raise ConfigError(f"no checkpoint at '{path}': give a run folder, a checkpoint folder or a "
                      ".safetensors file")


def verify_weights_file(file: Path) -> None:
    """A weights file inside a checkpoint folder is checked against the folder's record."""
    folder = file.parent
    if file.name == WEIGHTS and (folder / MARKER).exists():
        try:
            verify_checkpoint(folder, (WEIGHTS,))
        except ConfigError as err:
            raise ConfigError(f"checkpoint '{folder}' is damaged: {err}") from None


def load_weights(path: str | Path, purpose: str = "checkpoint"
                 ) -> tuple[dict[str, torch.Tensor], Config, str, dict[str, str]]:
    """Read weights, config and kind of a checkpoint (no pickled code is executed)."""
    return read_weights(resolve_weights(path, purpose))


def looks_like_flax(file: str | Path) -> bool:
    """True for a Flax msgpack checkpoint (it opens with a msgpack map; a safetensors file opens
    with its 8-byte header length, then '{')."""
    try:
        with open(file, "rb") as f:
            head = f.read(9)
    except OSError:
        return False
    return len(head) == 9 and (0x80 <= head[0] <= 0x8F or head[0] in (0xDE, 0xDF)) and head[8:9] != b"{"


def read_weights(file: Path) -> tuple[dict[str, torch.Tensor], Config, str, dict[str, str]]:
    try:
        with safe_open(str(file), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as err:  # safetensors raises several error types for corrupt files
        if looks_like_flax(file):
            raise ConfigError(f"'{file}' is a Flax checkpoint (an official Scenic release): run "
                              f"`avmae import-scenic {file} --out RUN` first, then use RUN") from None
        raise ConfigError(f"cannot read checkpoint '{file}': {one_line(err)}") from None
    if "config" not in meta or meta.get("kind") not in KINDS:
        raise ConfigError(f"'{file}' is not an avmae checkpoint (no config/kind metadata)")
    cfg = Config.from_dict(json.loads(meta["config"]))
    return tensors, cfg, meta["kind"], meta


def load_train_state(ckpt_dir: str | Path) -> dict:
    """The training state, loaded weights-only: a file holding anything but tensors and plain
    data (pickled code) is refused in one line."""
    path = Path(ckpt_dir) / STATE
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ConfigError(f"refused training state '{path}': it holds objects other than tensors "
                          f"and plain data ({refusal_reason(err)}); avmae never writes such a file, "
                          "so it was not loaded") from None
    except Exception as err:
        raise ConfigError(f"cannot read training state '{path}': {one_line(err)}") from None


def refusal_reason(err: BaseException) -> str:
    """From torch's multi-line weights-only refusal, the line that says what was refused."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    for line in lines:
        if "GLOBAL" in line or line.startswith("Unsupported"):
            return line.rstrip(".")
    return lines[-1].rstrip(".") if lines else type(err).__name__


def load_checkpoint(ckpt: Path) -> tuple[dict[str, torch.Tensor], Config, str, dict[str, str], dict]:
    """(weights, config, kind, metadata, training state) of one checkpoint folder, every file
    verified against its record: what --resume needs."""
    verify_checkpoint(ckpt, (WEIGHTS, STATE))
    weights, cfg, kind, meta = read_weights(ckpt / WEIGHTS)
    return weights, cfg, kind, meta, load_train_state(ckpt)


def checkpoint_states(run_dir: str | Path) -> list[tuple[Path, str]]:
    """[(checkpoint folder, state)] for every step_* and best_* folder of a run, oldest first;
    state is "verified", "unverified" (written before checksums were recorded), or
    "incomplete: ..." / "damaged: ..." with the reason."""
    root = Path(run_dir) / "checkpoints"
    folders = step_checkpoints(run_dir) + sorted(p for p in root.glob("best_*") if p.is_dir())
    states = []
    for folder in folders:
        try:
            states.append((folder, verify_checkpoint(folder)))
        except ConfigError as err:
            why = str(err)
            states.append((folder, why if why.startswith("incomplete") else f"damaged: {why}"))
    return states
