"""The pretraining loop: exact resume, SIGTERM, torchrun DDP, errors, figures and embeddings."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from conftest import TINY, run_cli
from safetensors.torch import load_file

from avmae.cli import main
from avmae.config import RunError, build_config


def pretrain_args(data, out, *extra):
    return ["pretrain", "--preset", "tiny-4l-cpu", "--data", str(data), "--out", str(out),
            *[a for s in TINY for a in ("--set", s)], *[a for s in extra for a in ("--set", s)]]


def final_weights(run):
    return load_file(str(run / "checkpoints" / "last" / "model.safetensors"))


def assert_same(a, b, exact=True):
    assert a.keys() == b.keys()
    for k in a:
        if exact:
            assert torch.equal(a[k], b[k]), k
        else:
            torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)


@pytest.mark.slow
def test_sigkill_then_resume_equals_an_uninterrupted_run(tiny_synth, tmp_path):
    data = tiny_synth / "train.csv"
    budget = ["train.steps=9", "train.batch_size=4", "train.checkpoint_every=2", "train.keep_checkpoints=5"]
    full = run_cli(pretrain_args(data, tmp_path / "full", *budget))
    assert full.returncode == 0, full.stderr

    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "avmae.cli", *pretrain_args(data, tmp_path / "cut", *budget)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    marker = tmp_path / "cut" / "checkpoints" / "step_0000004" / "COMPLETE"
    deadline = time.time() + 240
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)  # no chance to save anything
    proc.wait()
    assert marker.exists()
    assert not (tmp_path / "cut" / "checkpoints" / "step_0000009").exists()

    resumed = run_cli(["pretrain", "--data", str(data), "--out", str(tmp_path / "cut"), "--resume"])
    assert resumed.returncode == 0, resumed.stderr
    assert_same(final_weights(tmp_path / "full"), final_weights(tmp_path / "cut"))


def test_mid_epoch_resume_equals_an_uninterrupted_run(tiny_synth, tmp_path):
    """Fast, in-process twin of the SIGKILL test, cut in the middle of an epoch: the resumed run
    must continue with the epoch's NEXT batch (not its first) and with the saved AdamW moments."""
    import json
    import shutil

    from avmae.training.pretrain import pretrain
    data = str(tiny_synth / "train.csv")
    cfg = build_config("tiny-4l-cpu", TINY + ["train.steps=3", "train.batch_size=4", "train.checkpoint_every=2",
                                              "train.keep_checkpoints=5", "train.figure_clips=0"])
    full = pretrain(cfg, data, str(tmp_path / "full"))
    epochs = {r["step"]: r["epoch"] for r in map(json.loads, (full / "metrics.jsonl").read_text().splitlines())
              if "step" in r}
    assert epochs[2] == epochs[3] == 0  # the cut at step 2 is inside epoch 0, not on its boundary
    cut = tmp_path / "cut"
    shutil.copytree(full, cut, symlinks=True)
    shutil.rmtree(cut / "checkpoints" / "step_0000003")  # `last` now dangles: step 2 is the newest
    pretrain(None, data, str(cut), resume=True)
    last = "checkpoints/step_0000003"
    assert_same(load_file(str(full / last / "model.safetensors")), load_file(str(cut / last / "model.safetensors")))
    sa = torch.load(full / last / "train_state.pt", weights_only=True)["optimizer"]["state"]
    sb = torch.load(cut / last / "train_state.pt", weights_only=True)["optimizer"]["state"]
    for i in sa:  # AdamW moments and step counts
        for k in sa[i]:
            assert torch.equal(sa[i][k], sb[i][k]), (i, k)


def test_pretraining_masks_are_drawn_anew_every_step_per_clip_and_per_modality():
    """The masking noise is keyed by (seed, step, clip, modality) (training/loop.py): a clip gets fresh
    masks at every step (MAE, Sec. 3.1), the same ones in any batch (DDP, resume), and its audio
    and video masks are drawn independently."""
    from avmae.models import AVMAE
    from avmae.training import masking_noise
    model = AVMAE(build_config("tiny-4l-cpu", TINY).model)
    x = {"audio": torch.zeros(3, 1, 64, 128), "video": torch.zeros(3, 3, 4, 32, 32)}
    clips = torch.tensor([7, 3, 9])
    base = masking_noise(model, x, clips, seed=0, step=5)
    again = masking_noise(model, {m: v[1:] for m, v in x.items()}, clips[1:], seed=0, step=5)
    later = masking_noise(model, x, clips, seed=0, step=6)
    other_seed = masking_noise(model, x, clips, seed=1, step=5)
    n = min(base["audio"].shape[1], base["video"].shape[1])
    for m in ("audio", "video"):
        assert torch.equal(base[m][1:], again[m])                       # the clip, not the batch
        for b in range(3):
            assert not torch.equal(base[m][b], later[m][b])             # a new mask every step
            assert not torch.equal(base[m][b], other_seed[m][b])
            assert not torch.equal(base[m][b], base[m][(b + 1) % 3])    # clips differ
    for b in range(3):   # audio and video noise are not one stream cut in two
        assert not torch.allclose(base["audio"][b, :n], base["video"][b, :n])


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_exits_with_143(tiny_synth, tmp_path):
    """A stop request saves a checkpoint, says how to continue, and exits 128 + SIGTERM: a
    script chaining `pretrain && finetune` must not go on with an unfinished run."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "avmae.cli",
                             *pretrain_args(tiny_synth / "train.csv", run, "train.steps=500",
                                            "train.batch_size=4", "train.checkpoint_every=1000")],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    metrics = run / "metrics.jsonl"
    deadline = time.time() + 120
    while (not metrics.exists() or len(metrics.read_text().splitlines()) < 3) and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "SIGTERM at step" in err and "--resume" in err and "Traceback" not in err
    saved = sorted((run / "checkpoints").glob("step_*"))
    assert len(saved) == 1 and 1 <= int(saved[0].name[5:]) < 500
    state = torch.load(saved[0] / "train_state.pt", weights_only=True)  # no pickled code
    assert state["step"] == int(saved[0].name[5:])


@pytest.mark.slow
def test_torchrun_two_processes_match_one_process_with_the_same_global_batch(tiny_synth, tmp_path):
    data = tiny_synth / "train.csv"
    steps = ["train.steps=3", "train.checkpoint_every=100"]
    single = run_cli(pretrain_args(data, tmp_path / "one", "train.batch_size=4", *steps))
    assert single.returncode == 0, single.stderr
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                          "--master_port", "29533", "-m", "avmae.cli",
                          *pretrain_args(data, tmp_path / "two", "train.batch_size=2", *steps)],
                         env=env, capture_output=True, text=True, timeout=300)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert "2 x cpu" in ddp.stdout
    assert_same(final_weights(tmp_path / "one"), final_weights(tmp_path / "two"), exact=False)


@pytest.mark.slow
def test_gradient_accumulation_matches_the_full_batch(tiny_synth, tmp_path):
    data = tiny_synth / "train.csv"
    a = run_cli(pretrain_args(data, tmp_path / "a", "train.batch_size=4", "train.steps=2"))
    b = run_cli(pretrain_args(data, tmp_path / "b", "train.batch_size=2", "train.accum_steps=2",
                              "train.steps=2"))
    assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
    assert_same(final_weights(tmp_path / "a"), final_weights(tmp_path / "b"), exact=False)


def test_a_short_run_writes_everything_a_user_looks_at(tiny_synth, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(pretrain_args(tiny_synth / "train.csv", run, "train.steps=4", "train.batch_size=4",
                              "train.checkpoint_every=2")) == 0
    assert (run / "config.json").exists() and (run / "loss_curve.png").exists()
    assert (run / "checkpoints" / "last" / "model.safetensors").exists()
    assert sorted(p.name for p in (run / "figures").glob("*.png")) == [
        "reconstruction_step0000002.png", "reconstruction_step0000004.png"]
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert any('"loss_audio"' in line and '"loss_video"' in line and '"clips_per_s"' in line for line in lines)
    assert any('"epoch_end"' in line for line in lines) or len(lines) >= 4

    fig = tmp_path / "fig.png"
    clip = next((tiny_synth / "clips").glob("*.mp4"))
    assert main(["visualize", str(run), str(clip), "--out", str(fig)]) == 0
    assert fig.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    out = tmp_path / "emb.npz"
    assert main(["embed", str(run), str(tiny_synth / "test.csv"), "--out", str(out)]) == 0
    emb = np.load(out)
    n_test = len((tiny_synth / "test.csv").read_text().splitlines()) - 1
    assert emb["audio"].shape == (n_test, 32) and emb["video"].shape == (n_test, 32)
    assert len(set(emb["path"])) == n_test


def test_non_finite_loss_stops_naming_the_step(tiny_synth, tmp_path, monkeypatch):
    from avmae.training import pretrain as pt
    real = pt.AVMAE.forward
    calls = {"n": 0}

    def forward(self, *a, **k):
        out = real(self, *a, **k)
        calls["n"] += self.training  # the reconstruction figures run in eval mode
        if calls["n"] == 3 and self.training:
            out["loss"] = out["loss"] * float("nan")
        return out
    monkeypatch.setattr(pt.AVMAE, "forward", forward)
    cfg = build_config("tiny-4l-cpu", TINY + ["train.steps=5", "train.batch_size=4", "train.checkpoint_every=1"])
    with pytest.raises(RunError, match="step 3.*last good checkpoint.*step_0000002"):
        pt.pretrain(cfg, str(tiny_synth / "train.csv"), str(tmp_path / "run"))


@pytest.mark.parametrize("case", ["missing_data", "resume_nothing", "resume_corrupt", "no_preset"])
def test_bad_arguments_exit_2_with_one_line(case, tiny_synth, tmp_path, capsys):
    run = tmp_path / "run"
    data = str(tiny_synth / "train.csv")
    if case == "missing_data":
        argv = pretrain_args(tmp_path / "nope.csv", run)
    elif case == "resume_nothing":
        argv = ["pretrain", "--data", data, "--out", str(run), "--resume"]
    elif case == "resume_corrupt":
        ckpt = run / "checkpoints" / "step_0000002"
        ckpt.mkdir(parents=True)
        (ckpt / "model.safetensors").write_bytes(b"garbage")
        (ckpt / "COMPLETE").write_text("ok")
        argv = ["pretrain", "--data", data, "--out", str(run), "--resume"]
    else:
        argv = ["pretrain", "--data", data, "--out", str(run)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "error" in err[0]


def test_broken_media_never_stops_a_run_and_is_counted(tiny_synth, tmp_path):
    """Zero-byte and garbage files among good clips, and a batch where every clip is broken."""
    import csv
    rows = list(csv.DictReader(open(tiny_synth / "train.csv")))[:4]
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "garbage.mp4").write_bytes(os.urandom(5000))
    manifest = tmp_path / "mixed.csv"
    with open(manifest, "w") as f:
        f.write("path\n")
        for r in rows:
            f.write(f"{tiny_synth / r['path']}\n")
        for _ in range(4):
            f.write("empty.mp4\ngarbage.mp4\n")
    run = tmp_path / "run"
    # batch 4 over 12 clips: with data.shuffle off, the last batches hold only broken files
    assert main(pretrain_args(manifest, run, "train.steps=3", "train.batch_size=4",
                              "data.shuffle=false")) == 0
    import json
    ends = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()
            if "epoch_end" in line]
    assert ends and ends[0]["skipped"] == 8 and ends[0]["clips"] == 4
    assert all(np.isfinite(v) for v in final_weights(run)["decoder.pred.audio.weight"].flatten().tolist()[:10])
