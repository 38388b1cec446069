"""Fault injection: what a long run meets (a rerun into the same folder, a disk that fills up
mid-write, a damaged checkpoint, a second process on the same --out, data files that change under
the run) and, in every case, that nothing already saved is lost.

The full disk is simulated by `FullDisk`, which stands in for Python's `open` under one folder:
once the chosen file has received the chosen number of bytes, the write puts down what fits and
raises OSError(ENOSPC), and every later write under that folder fails the same way, as on a
small tmpfs. One test uses a real kernel limit (RLIMIT_FSIZE) instead, in a subprocess.
"""

import builtins
import csv
import errno
import hashlib
import io
import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import TINY
from safetensors.torch import load_file

from avmae.checkpoint import load_checkpoint, verify_checkpoint
from avmae.cli import main
from avmae.config import ConfigError, build_config
from avmae.run_dir import RunLock

STEPS2 = ["train.steps=2", "train.batch_size=4", "train.checkpoint_every=2", "train.keep_checkpoints=3"]
STEPS4 = ["train.steps=4", "train.batch_size=4", "train.checkpoint_every=2", "train.keep_checkpoints=3"]


def sets(items):
    return [a for s in items for a in ("--set", s)]


def pretrain_args(data, out, *extra, flags=()):
    return ["pretrain", "--preset", "tiny-4l-cpu", "--data", str(data), "--out", str(out),
            *flags, *sets(TINY), *sets(extra)]


def resume_args(data, out, *extra):
    return ["pretrain", "--data", str(data), "--out", str(out), "--resume", *sets(extra)]


def saved(run: Path) -> dict[str, str]:
    """sha256 of every file a run has saved (checkpoints, config, figures): what must survive."""
    out = {}
    for p in sorted(run.rglob("*")):
        if p.is_file() and not p.is_symlink() and p.name not in ("metrics.jsonl", ".lock"):
            out[str(p.relative_to(run))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def assert_nothing_lost(before: dict[str, str], run: Path) -> None:
    after = saved(run)
    lost = {k for k in before if after.get(k) != before[k]}
    assert not lost, f"changed or removed: {sorted(lost)}"


PROGRESS = re.compile(r"\d+%\|")  # a tqdm progress bar: "pretrain:  50%|█████     | 2/4 ..."


def stderr_lines(capsys) -> list[str]:
    """stderr's lines, less the progress bar's."""
    return [line for line in capsys.readouterr().err.splitlines()
            if line.strip() and not PROGRESS.search(line)]


def weights(path: Path) -> dict:
    return load_file(str(path / "model.safetensors"))


@pytest.fixture(scope="module")
def two_checkpoints(tiny_synth, tmp_path_factory):
    """A 4-step pretraining run with checkpoints at steps 2 and 4 (copied by each test)."""
    run = tmp_path_factory.mktemp("pre") / "run"
    assert main(pretrain_args(tiny_synth / "train.csv", run, *STEPS4)) == 0
    return run


def copy_run(run: Path, to: Path) -> Path:
    shutil.copytree(run, to, symlinks=True)
    return to


# ---- 1. no silent overwrite ------------------------------------------------------------------

def test_a_rerun_into_an_existing_run_is_refused_until_resume_or_overwrite(tiny_synth, tmp_path, capsys):
    data = tiny_synth / "train.csv"
    run = tmp_path / "run"
    assert main(pretrain_args(data, run, *STEPS2)) == 0
    before = saved(run)
    metrics = (run / "metrics.jsonl").read_text()
    capsys.readouterr()

    # the same command again, with other settings: refused, nothing touched
    assert main(pretrain_args(data, run, *STEPS2, "train.seed=7")) == 2
    err = stderr_lines(capsys)
    assert len(err) == 1 and "--resume" in err[0] and "--overwrite" in err[0] and str(run) in err[0]
    assert_nothing_lost(before, run)
    assert (run / "metrics.jsonl").read_text() == metrics

    # both flags at once: refused
    assert main(pretrain_args(data, run, *STEPS2, flags=["--resume", "--overwrite"])) == 2
    assert len(stderr_lines(capsys)) == 1
    assert_nothing_lost(before, run)

    # --overwrite: a new run replaces the old one (its own seed, a fresh metrics log), and a
    # file of the user's in the folder is kept
    (run / "notes.txt").write_text("mine")
    assert main(pretrain_args(data, run, *STEPS2, "train.seed=7", flags=["--overwrite"])) == 0
    assert json.loads((run / "config.json").read_text())["train"]["seed"] == 7
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()
             if '"loss"' in line]
    assert steps == [1, 2]
    assert (run / "notes.txt").read_text() == "mine"


def test_finetune_into_an_existing_run_is_refused_until_resume_or_overwrite(two_checkpoints, tiny_synth,
                                                                           tmp_path, capsys):
    ft = tmp_path / "ft"
    argv = ["finetune", "--init", str(two_checkpoints), "--modality", "audio",
            "--data", str(tiny_synth / "train.csv"), "--val", str(tiny_synth / "test.csv"),
            "--out", str(ft), *sets(["train.steps=1", "train.batch_size=4", "data.num_workers=0"])]
    assert main(argv) == 0
    before = saved(ft)
    capsys.readouterr()
    assert main(argv) == 2
    err = stderr_lines(capsys)
    assert len(err) == 1 and "--resume" in err[0] and "--overwrite" in err[0]
    assert_nothing_lost(before, ft)
    assert main([*argv, "--overwrite"]) == 0


def test_reproduce_and_quickstart_use_the_same_guard(tmp_path):
    from avmae.cli import quickstart, reproduce
    out = tmp_path / "rep"
    out.mkdir()
    (out / "table_13.json").write_text("{}")
    with pytest.raises(ConfigError, match="--resume.*--overwrite"):
        reproduce.reproduce(13, data=str(tmp_path), out=out)
    assert (out / "table_13.json").read_text() == "{}"
    (tmp_path / "qs" / "runs").mkdir(parents=True)
    with pytest.raises(ConfigError, match="--overwrite"):
        quickstart.quickstart(tmp_path / "qs", quickstart.FAST)
    assert (tmp_path / "qs" / "runs").is_dir()


def test_reproduce_continues_an_interrupted_run_instead_of_writing_over_it(two_checkpoints, tmp_path):
    from avmae.cli.reproduce import continue_flag
    assert continue_flag(tmp_path / "not_started") == []
    (tmp_path / "stopped_early").mkdir()
    (tmp_path / "stopped_early" / "config.json").write_text("{}")
    assert continue_flag(tmp_path / "stopped_early") == ["--overwrite"]  # nothing to continue from
    assert continue_flag(two_checkpoints) == ["--resume"]


# ---- 2. a full disk mid-write ------------------------------------------------------------------

class FullDisk:
    """Python's `open` under `root`, on a disk that fills up once file `name` has `after` bytes."""

    def __init__(self, monkeypatch, root: Path, name: str, after: int):
        self.root, self.name, self.after = str(root), name, after
        self.full = False
        real = builtins.open

        def fake_open(file, mode="r", *args, **kwargs):
            f = real(file, mode, *args, **kwargs)
            path = os.fspath(file) if isinstance(file, (str, os.PathLike)) else ""
            if path.startswith(self.root) and any(c in mode for c in "wax+"):
                return Filling(f, self, Path(path).name)
            return f
        monkeypatch.setattr(builtins, "open", fake_open)
        monkeypatch.setattr(io, "open", fake_open)


class Filling:
    """A file on a FullDisk (what a writer needs of a file object, nothing that bypasses it)."""

    def __init__(self, f, disk: FullDisk, name: str):
        self.f, self.disk, self.name, self.written = f, disk, name, 0

    def write(self, data):
        data = bytes(data) if not isinstance(data, str) else data
        room = len(data)
        if self.disk.full:
            room = 0
        elif self.name == self.disk.name and self.written + len(data) > self.disk.after:
            room = max(0, self.disk.after - self.written)
            self.disk.full = True
        if room < len(data):
            self.f.write(data[:room])
            self.f.flush()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.written += room
        return self.f.write(data)

    def fileno(self):  # PIL would write through the descriptor, past the full disk
        raise io.UnsupportedOperation("fileno")

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


@pytest.mark.parametrize("target,after,shown", [
    ("model.safetensors", 5000, "step_0000004/model.safetensors"),
    ("train_state.pt", 5000, "step_0000004/train_state.pt"),
    ("reconstruction_step0000004.png", 100, "reconstruction_step0000004.png"),
    ("metrics.jsonl", 10, "metrics.jsonl"),
])
def test_a_disk_full_mid_write_stops_in_one_line_and_keeps_the_previous_checkpoint(
        target, after, shown, two_checkpoints, tiny_synth, tmp_path, monkeypatch, capsys):
    """A run at step 2 resumed towards step 4 on a disk that fills up: exit 2, one line naming
    the file and ENOSPC; step 2 and `last` intact; once space is back, --resume finishes and
    gives the same weights as the run that never met the fault."""
    data = tiny_synth / "train.csv"
    run = copy_run(two_checkpoints, tmp_path / "run")
    shutil.rmtree(run / "checkpoints" / "step_0000004")
    (run / "checkpoints" / "last").unlink()
    (run / "checkpoints" / "last").symlink_to("step_0000002")
    (run / "figures" / "reconstruction_step0000004.png").unlink()
    before = saved(run)
    capsys.readouterr()

    with monkeypatch.context() as m:
        FullDisk(m, tmp_path, target, after)
        code = main(resume_args(data, run))
    err = stderr_lines(capsys)
    assert code == 2 and len(err) == 1, err
    assert shown in err[0] and "No space left on device (ENOSPC)" in err[0], err[0]
    ckpts = run / "checkpoints"
    if target == "reconstruction_step0000004.png":  # the checkpoint before the figure was saved
        assert "step_0000004 is intact" in err[0]
        assert os.readlink(ckpts / "last") == "step_0000004"
    else:
        assert "step_0000002 is intact" in err[0]
        assert os.readlink(ckpts / "last") == "step_0000002"
        assert not (ckpts / "step_0000004").exists()
    assert not list(ckpts.glob(".tmp_*"))  # the partial files were removed
    for line in (run / "metrics.jsonl").read_text().splitlines():  # no torn record left behind
        json.loads(line)
    assert_nothing_lost(before, run)
    assert verify_checkpoint(ckpts / "step_0000002") == "verified"
    load_checkpoint(ckpts / "step_0000002")

    assert main(resume_args(data, run)) == 0
    for k, v in weights(two_checkpoints / "checkpoints" / "step_0000004").items():
        assert torch.equal(v, weights(ckpts / "step_0000004")[k]), k


def test_a_real_file_size_limit_mid_checkpoint(two_checkpoints, tiny_synth, tmp_path):
    """The kernel, not a stand-in, refuses the write (RLIMIT_FSIZE: EFBIG) in a subprocess."""
    run = copy_run(two_checkpoints, tmp_path / "run")
    shutil.rmtree(run / "checkpoints" / "step_0000004")
    before = saved(run)
    limit = (run / "checkpoints" / "step_0000002" / "model.safetensors").stat().st_size // 2

    def limit_file_size():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "avmae.cli", *resume_args(tiny_synth / "train.csv", run)],
                          env=env, capture_output=True, text=True, preexec_fn=limit_file_size, timeout=300)
    err = [line for line in proc.stderr.splitlines()
           if line.strip() and not PROGRESS.search(line)]
    assert proc.returncode == 2 and len(err) == 1, proc.stderr[-2000:]
    assert "step_0000004/model.safetensors" in err[0] and "File too large (EFBIG)" in err[0]
    assert_nothing_lost(before, run)
    assert verify_checkpoint(run / "checkpoints" / "step_0000002") == "verified"


def test_a_folder_in_the_way_of_a_figure_is_one_line(two_checkpoints, tiny_synth, tmp_path, capsys):
    run = copy_run(two_checkpoints, tmp_path / "run")
    shutil.rmtree(run / "checkpoints" / "step_0000004")
    figure = run / "figures" / "reconstruction_step0000004.png"
    figure.unlink()
    figure.mkdir()
    before = saved(run)
    capsys.readouterr()
    assert main(resume_args(tiny_synth / "train.csv", run)) == 2
    err = stderr_lines(capsys)
    assert len(err) == 1 and str(figure) in err[0] and "(EISDIR)" in err[0], err
    assert_nothing_lost(before, run)
    assert verify_checkpoint(run / "checkpoints" / "step_0000004") == "verified"


# ---- 3. damaged checkpoints -------------------------------------------------------------------

def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def plant_pickle(path: Path) -> None:
    class Payload:
        def __reduce__(self):
            return (os.system, ("echo planted",))
    torch.save({"step": 4, "optimizer": Payload()}, path)


def as_legacy(run: Path) -> None:
    """Markers as avmae wrote them before checksums: 'ok'."""
    for marker in (run / "checkpoints").glob("*/COMPLETE"):
        marker.write_text("ok\n")


DAMAGE = {
    "truncated_weights": lambda c: truncate(c / "model.safetensors"),
    "flipped_byte_in_state": lambda c: flip_a_byte(c / "train_state.pt"),
    "planted_pickle": lambda c: plant_pickle(c / "train_state.pt"),
    "no_marker": lambda c: (c / "COMPLETE").unlink(),
    "missing_state": lambda c: (c / "train_state.pt").unlink(),
}


@pytest.mark.parametrize("damage", [*DAMAGE, "legacy_truncated_weights"])
def test_resume_skips_a_damaged_newest_checkpoint_with_one_warning(damage, two_checkpoints, tiny_synth,
                                                                   tmp_path, capsys):
    run = copy_run(two_checkpoints, tmp_path / "run")
    newest = run / "checkpoints" / "step_0000004"
    if damage.startswith("legacy"):
        as_legacy(run)
        truncate(newest / "model.safetensors")
    else:
        DAMAGE[damage](newest)
    keep = {k: v for k, v in saved(run).items() if "step_0000002" in k}
    capsys.readouterr()
    assert main(resume_args(tiny_synth / "train.csv", run)) == 0
    err = stderr_lines(capsys)
    assert len(err) == 1 and "warning" in err[0] and "step_0000004" in err[0] \
        and "using step_0000002" in err[0], err
    # continued from step 2: the redone steps 3-4 give back exactly what was damaged
    for k, v in weights(two_checkpoints / "checkpoints" / "step_0000004").items():
        assert torch.equal(v, weights(newest)[k]), k
    assert verify_checkpoint(newest) == "verified"
    assert_nothing_lost(keep, run)


def test_init_skips_a_damaged_newest_checkpoint(two_checkpoints, tiny_synth, tmp_path, capsys):
    run = copy_run(two_checkpoints, tmp_path / "pre")
    truncate(run / "checkpoints" / "step_0000004" / "model.safetensors")
    capsys.readouterr()
    assert main(["finetune", "--init", str(run), "--modality", "audio",
                 "--data", str(tiny_synth / "train.csv"), "--val", str(tiny_synth / "test.csv"),
                 "--out", str(tmp_path / "ft"),
                 *sets(["train.steps=1", "train.batch_size=4", "data.num_workers=0"])]) == 0
    err = stderr_lines(capsys)
    assert len(err) == 1 and "--init" in err[0] and "step_0000004" in err[0] \
        and "using step_0000002" in err[0], err


def test_when_no_checkpoint_verifies_resume_and_init_exit_2_naming_them(two_checkpoints, tiny_synth,
                                                                        tmp_path, capsys):
    run = copy_run(two_checkpoints, tmp_path / "run")
    truncate(run / "checkpoints" / "step_0000004" / "model.safetensors")
    flip_a_byte(run / "checkpoints" / "step_0000002" / "model.safetensors")
    before = saved(run)
    capsys.readouterr()
    assert main(resume_args(tiny_synth / "train.csv", run)) == 2
    err = stderr_lines(capsys)
    assert len(err) == 1 and "step_0000004" in err[0] and "step_0000002" in err[0] \
        and "verifies" in err[0], err
    assert main(["finetune", "--init", str(run), "--modality", "audio",
                 "--data", str(tiny_synth / "train.csv"), "--val", str(tiny_synth / "test.csv"),
                 "--out", str(tmp_path / "ft")]) == 2
    err = stderr_lines(capsys)
    assert len(err) == 1 and "step_0000004" in err[0] and "step_0000002" in err[0], err
    assert main(["check", str(run)]) == 2
    assert_nothing_lost(before, run)  # the damaged files are left for the user to look at


def test_check_lists_every_checkpoint_with_its_state(two_checkpoints, tmp_path, capsys):
    run = copy_run(two_checkpoints, tmp_path / "run")
    assert main(["check", str(run)]) == 0
    out = capsys.readouterr().out
    assert "not locked" in out and "would use step_0000004" in out
    assert [line.split()[1] for line in out.splitlines() if line.startswith("step_")] == ["verified"] * 2
    copy_run(run / "checkpoints" / "step_0000002", run / "checkpoints" / "step_0000001")
    as_legacy(run)
    (run / "checkpoints" / "step_0000002" / "COMPLETE").unlink()
    (run / "checkpoints" / "step_0000003").mkdir()
    (run / "checkpoints" / "step_0000003" / "COMPLETE").write_text(
        (two_checkpoints / "checkpoints" / "step_0000004" / "COMPLETE").read_text())
    truncate(run / "checkpoints" / "step_0000004" / "model.safetensors")
    assert main(["check", str(run)]) == 0
    states = {line.split()[0]: line.split(None, 1)[1] for line in capsys.readouterr().out.splitlines()
              if line.startswith("step_")}
    assert states["step_0000001"].startswith("unverified")
    assert states["step_0000002"].startswith("incomplete")
    assert states["step_0000003"].startswith("damaged: model.safetensors is missing")
    assert states["step_0000004"].startswith("damaged: model.safetensors is unreadable")


def test_a_refused_training_state_is_one_line(two_checkpoints, tiny_synth, tmp_path, capsys):
    """A pickle payload in train_state.pt of a checkpoint nothing vouches for (an old marker, or a
    record forged to match): refused in one line, not torch's page of advice, and never run."""
    run = copy_run(two_checkpoints, tmp_path / "run")
    shutil.rmtree(run / "checkpoints" / "step_0000002")
    as_legacy(run)
    plant_pickle(run / "checkpoints" / "step_0000004" / "train_state.pt")
    capsys.readouterr()
    assert main(resume_args(tiny_synth / "train.csv", run)) == 2
    captured = capsys.readouterr()
    err = [line for line in captured.err.splitlines()
           if line.strip() and not PROGRESS.search(line)]
    assert len(err) == 1 and "refused training state" in err[0] and "GLOBAL" in err[0], err
    assert "planted" not in captured.out + captured.err


# ---- 4. concurrent writers --------------------------------------------------------------------

HOLD = """
import sys, time
from avmae.run_dir import RunLock
RunLock(sys.argv[1]).acquire()
print("locked", flush=True)
time.sleep(120)
"""


def test_a_second_process_on_the_same_out_is_refused_and_a_dead_ones_lock_does_not_block(
        two_checkpoints, tiny_synth, tmp_path, capsys):
    run = copy_run(two_checkpoints, tmp_path / "run")
    before = saved(run)
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        capsys.readouterr()
        assert main(resume_args(tiny_synth / "train.csv", run, "train.steps=6")) == 2
        err = stderr_lines(capsys)
        assert len(err) == 1 and f"pid {holder.pid}" in err[0] and "another process" in err[0], err
        assert main(["check", str(run)]) == 0
        assert f"being written by pid {holder.pid}" in capsys.readouterr().out
    finally:
        holder.send_signal(signal.SIGKILL)  # dies holding the lock: no chance to clean up
        holder.wait()
    assert_nothing_lost(before, run)
    assert json.loads((run / ".lock").read_text())["pid"] == holder.pid  # its record is left
    assert main(resume_args(tiny_synth / "train.csv", run, "train.steps=6")) == 0
    assert verify_checkpoint(run / "checkpoints" / "step_0000006") == "verified"


def test_a_failed_command_leaves_no_folder_behind(tiny_synth, tmp_path):
    run = tmp_path / "new"
    (tmp_path / "nothing.csv").write_text("path\nmissing.mp4\n")  # refused after the folder is claimed
    assert main(pretrain_args(tmp_path / "nothing.csv", run)) == 2
    assert not run.exists()
    assert main(resume_args(tiny_synth / "train.csv", run)) == 2
    assert not run.exists()


def test_without_flock_a_live_pid_blocks_and_a_dead_one_does_not(tmp_path, monkeypatch):
    import fcntl

    def no_flock(fd, op):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))
    monkeypatch.setattr(fcntl, "flock", no_flock)
    dead = subprocess.Popen(["true"])
    dead.wait()
    lock = RunLock(tmp_path)
    for pid, blocks in ((os.getppid(), True), (dead.pid, False)):
        (tmp_path / ".lock").write_text(json.dumps({"pid": pid, "host": socket.gethostname()}))
        if blocks:
            with pytest.raises(ConfigError, match=f"pid {pid}"):
                lock.acquire()
        else:
            lock.acquire()
            assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()
            lock.release()


# ---- 5. data files that change or vanish during the run ---------------------------------------

def clips_in_copy(tiny_synth: Path, folder: Path, n: int) -> Path:
    """The first n training clips copied into `folder`, with their manifest (so they can be
    deleted and damaged without touching the shared dataset)."""
    folder.mkdir()
    rows = list(csv.DictReader(open(tiny_synth / "train.csv")))[:n]
    with open(folder / "train.csv", "w") as f:
        f.write("path,label\n")
        for i, row in enumerate(rows):
            shutil.copy(tiny_synth / row["path"], folder / f"clip{i}.mp4")
            f.write(f"clip{i}.mp4,{row['label']}\n")
    return folder / "train.csv"


def during_the_run(monkeypatch, at_step: int, change) -> None:
    """Call change() once, right after optimiser step `at_step` (between two epochs' batches)."""
    from avmae.training import loop as pt  # the loop both stages share (training.loop.train_loop)
    real = pt.log_step

    def log_step(log, d, train, budget, step, *args):
        real(log, d, train, budget, step, *args)
        if step == at_step:
            change()
    monkeypatch.setattr(pt, "log_step", log_step)


def epoch_ends(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()
            if "epoch_end" in line]


def test_raw_files_deleted_or_truncated_mid_run_are_skipped_and_counted(tiny_synth, tmp_path, monkeypatch):
    manifest = clips_in_copy(tiny_synth, tmp_path / "data", 8)
    folder = manifest.parent

    def change():
        (folder / "clip0.mp4").unlink()
        (folder / "clip1.mp4").write_bytes(b"")
        (folder / "clip2.mp4").write_bytes(os.urandom(3000))
        with open(folder / "clip3.mp4", "r+b") as f:
            f.truncate(400)
    during_the_run(monkeypatch, 2, change)
    run = tmp_path / "run"
    # 8 clips, batch 4: 2 steps per epoch; the files change after epoch 0
    assert main(pretrain_args(manifest, run, "train.steps=6", "train.batch_size=4",
                              "train.checkpoint_every=2", "train.keep_checkpoints=3")) == 0
    ends = epoch_ends(run)
    assert [e["epoch_end"] for e in ends] == [0, 1, 2]
    assert ends[0]["skipped"] == 0 and ends[0]["clips"] == 8
    for e in ends[1:]:
        assert e["skipped"] >= 3 and e["clips"] + e["skipped"] == 8, e
    for step in (2, 4, 6):
        assert verify_checkpoint(run / "checkpoints" / f"step_{step:07d}") == "verified"


def test_shards_rewritten_or_truncated_mid_run_are_skipped_and_counted(tiny_synth, tmp_path, monkeypatch):
    from avmae.data import prepare_shards
    manifest = clips_in_copy(tiny_synth, tmp_path / "data", 8)
    shards = tmp_path / "shards"
    prepare_shards(manifest, shards, build_config("tiny-4l-cpu", TINY).data, clips_per_shard=4,
                   progress=False)
    tars = sorted(shards.glob("*.tar"))
    assert len(tars) == 2

    def change():
        with open(tars[0], "r+b") as f:  # rewritten in place: every byte 0xFF (float16 NaN)
            f.write(b"\xff" * tars[0].stat().st_size)
        with open(tars[1], "r+b") as f:
            f.truncate(tars[1].stat().st_size // 3)
    during_the_run(monkeypatch, 2, change)
    run = tmp_path / "run"
    assert main(pretrain_args(shards, run, "train.steps=6", "train.batch_size=4",
                              "train.checkpoint_every=2", "train.keep_checkpoints=3")) == 0
    ends = epoch_ends(run)
    assert ends[0]["skipped"] == 0 and ends[0]["clips"] == 8
    for e in ends[1:]:
        assert e["skipped"] >= 6 and e["clips"] + e["skipped"] == 8, e
    for step in (2, 4, 6):
        assert verify_checkpoint(run / "checkpoints" / f"step_{step:07d}") == "verified"


def test_a_metrics_line_torn_by_a_kill_does_not_swallow_the_next_record(two_checkpoints, tiny_synth, tmp_path):
    run = copy_run(two_checkpoints, tmp_path / "run")
    shutil.rmtree(run / "checkpoints" / "step_0000004")
    log = run / "metrics.jsonl"
    kept = [line for line in log.read_text().splitlines() if json.loads(line).get("step", 0) <= 2
            and "epoch_end" not in line]
    log.write_text("\n".join(kept) + "\n" + '{"step": 3, "lo')  # killed mid-write
    assert main(resume_args(tiny_synth / "train.csv", run)) == 0
    from avmae.run_dir import read_metrics
    steps = [r["step"] for r in read_metrics(run) if "loss" in r]
    assert steps == [1, 2, 3, 4]


def test_evaluate_skips_a_damaged_best_for_the_newest_checkpoint(two_checkpoints, tiny_synth, tmp_path, capsys):
    ft = tmp_path / "ft"
    assert main(["finetune", "--init", str(two_checkpoints), "--modality", "audio",
                 "--data", str(tiny_synth / "train.csv"), "--val", str(tiny_synth / "test.csv"),
                 "--out", str(ft), *sets(["train.steps=2", "train.batch_size=4",
                                          "train.checkpoint_every=1", "data.num_workers=0"])]) == 0
    best = (ft / "checkpoints" / "best").resolve()
    data = (best / "model.safetensors").read_bytes()
    (best / "model.safetensors").unlink()  # a hard link of a step's weights: damage only this one
    (best / "model.safetensors").write_bytes(data[: len(data) // 2])
    capsys.readouterr()
    assert main(["evaluate", str(ft), "--data", str(tiny_synth / "test.csv"), "--views", "1",
                 "--checkpoint", "best"]) == 0
    captured = capsys.readouterr()
    err = [line for line in captured.err.splitlines()
           if line.strip() and not PROGRESS.search(line) and not line.startswith("evaluated ")]
    assert len(err) == 1 and "warning" in err[0] and best.name in err[0], err
    assert "top1" in json.loads(captured.out.strip().splitlines()[-1])


def test_visualize_and_embed_outputs_that_cannot_be_written_are_one_line(two_checkpoints, tiny_synth,
                                                                         tmp_path, capsys):
    clip = next((tiny_synth / "clips").glob("*.mp4"))
    (tmp_path / "taken.png").mkdir()
    (tmp_path / "file").write_text("")
    for argv, shown in ((["visualize", str(two_checkpoints), str(clip), "--out", str(tmp_path / "taken.png")],
                         "(EISDIR)"),
                        (["embed", str(two_checkpoints), str(clip), "--out", str(tmp_path / "file" / "f.npz")],
                         "(EEXIST)")):
        capsys.readouterr()
        assert main(argv) == 2
        err = stderr_lines(capsys)
        assert len(err) == 1 and shown in err[0] and str(tmp_path) in err[0], err
