"""Shards format 2: the window drawn at read time is the raw path's (same seed, epoch and clip ->
the same source frames), the audio follows the video window, JPEG costs little at the model's
input, and one prepared folder serves pretraining, finetuning and evaluation end to end."""

import json

import numpy as np
import pytest
import torch
from conftest import TINY
from media import frame_index, tone_burst, write_clip

from avmae.cli import main
from avmae.config import DataConfig, build_config
from avmae.data import build_dataset, prepare_shards
from avmae.data.dataset import RawSource, sample_rng
from avmae.data.shards import ShardSource

CFG = DataConfig(num_frames=8, frame_stride=4, short_side=32, crop_size=32, audio_seconds=1.0,
                 mel_bins=32)
BURST = 2.0   # seconds: where the clip's only sound is


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """One 4 s clip whose frames carry their index and whose audio is one 0.1 s tone burst."""
    folder = tmp_path_factory.mktemp("clip")
    write_clip(folder / "a.mp4", seconds=4.0, size=(64, 48), audio_fn=tone_burst(BURST))
    (folder / "a.csv").write_text("path\na.mp4\n")
    return folder / "a.csv"


@pytest.fixture(scope="module", params=[1, 2], ids=["every1", "every2"])
def shards(request, clip, tmp_path_factory):
    out = tmp_path_factory.mktemp(f"every{request.param}")
    prepare_shards(clip, out, CFG, every=request.param, progress=False)
    return out, request.param


def starts_and_steps(frames):
    idx = [frame_index(f) for f in frames]
    return idx[0], np.diff(idx)


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_window_starts_are_the_raw_paths(clip, shards, train):
    """The same draw: every=1 gives the raw path's source frames exactly; every=2 its start
    moved to the nearest kept (even) frame. Training: 40 (epoch) draws; evaluation: 5 views."""
    folder, every = shards
    raw, fast = RawSource(clip, CFG), ShardSource(folder, CFG)
    draws = [(sample_rng(0, epoch, 0, 0), 0, 1) for epoch in range(40)] if train \
        else [(None, v, 5) for v in range(5)]
    raw_starts = []
    for rng, view, views in draws:
        seed = rng.bit_generator.state if rng is not None else None
        a, _ = raw.load(0, rng=rng, view=view, num_views=views)
        if seed is not None:
            rng.bit_generator.state = seed  # the same generator state for the shards path
        b, _ = fast.load(0, rng=rng, view=view, num_views=views)
        (sa, da), (sb, db) = starts_and_steps(a), starts_and_steps(b)
        assert list(db) == [CFG.frame_stride] * 7            # stride in source frames
        if every == 1:
            assert (sa, list(da)) == (sb, list(db))
        else:
            assert sb % 2 == 0 and abs(sb - sa) <= 1, (sa, sb)
        raw_starts.append(sa)
    if train:  # the draws cover the clip: starts from 0 to 100 - 32 frames
        assert min(raw_starts) < 15 and max(raw_starts) > 55


def burst_frame(logmel: torch.Tensor) -> float:
    """Log-mel frame of the burst: the centroid of the frames well above the quietest."""
    energy = logmel.float().mean(dim=1)
    loud = energy > energy.min() + 0.5 * (energy.max() - energy.min())
    return float(torch.nonzero(loud).float().mean())


@pytest.mark.parametrize("source", ["raw", "shards"])
def test_audio_follows_the_video_window(clip, shards, source):
    """The burst at 2 s lies in each audio window where the video window's times put it:
    frame (BURST - (video centre - Wa / 2)) * 100, the video centre read off the frame indices."""
    folder, _ = shards
    src = RawSource(clip, CFG) if source == "raw" else ShardSource(folder, CFG)
    checked = 0
    for v in range(9):
        frames, logmel = src.load(0, rng=None, view=v, num_views=9)
        first = frame_index(frames[0]) / 25.0
        centre = first + CFG.num_frames * CFG.frame_stride / 25.0 / 2
        expected = (BURST - (centre - CFG.audio_seconds / 2)) * 100
        if 10 <= expected <= logmel.shape[0] - 10:
            assert abs(burst_frame(logmel) - expected) <= 2.0, (v, expected)
            checked += 1
    assert checked >= 3


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """dB, for tensors in [-1, 1] (peak-to-peak 2)."""
    return float(10 * torch.log10(4.0 / ((a - b) ** 2).mean()))


def test_jpeg_costs_little_at_the_models_input(tiny_synth, tmp_path):
    """PSNR of the model's video input (evaluation crop, [-1, 1]) from JPEG shards against the
    raw path's, the same window (every=1): > 30 dB at the default quality, and the quality
    setting is what sets it."""
    cfg = build_config("tiny-4l-cpu", TINY)
    raw = build_dataset(tiny_synth / "test.csv", cfg, train=False)
    got = {}
    for quality in (90, 20):
        out = tmp_path / f"q{quality}"
        prepare_shards(tiny_synth / "test.csv", out, cfg.data, every=1, jpeg_quality=quality,
                       progress=False)
        fast = build_dataset(out, cfg, train=False)
        got[quality] = np.mean([psnr(raw[i]["video"], fast[i]["video"]) for i in range(4)])
    assert got[90] > 30 and got[90] > got[20] + 3, got


def sets(items):
    return [a for s in items for a in ("--set", s)]


def test_one_prepare_serves_pretrain_finetune_and_evaluate(tiny_synth, tmp_path, capsys):
    """Prepared once (every 2nd frame); pretrained at 4 frames / stride 4, finetuned at 8 frames
    / stride 2, evaluated with 3 views; a stride the stored frames cannot serve: one line, 2."""
    shards = {s: tmp_path / s for s in ("train", "test")}
    for split, out in shards.items():
        assert main(["prepare", str(tiny_synth / f"{split}.csv"), "--out", str(out),
                     "--preset", "tiny-4l-cpu", "--workers", "1", *sets(TINY)]) == 0
    pre, fine = tmp_path / "pre", tmp_path / "fine"
    common = ["train.batch_size=4", "train.steps=2", "train.checkpoint_every=2", "data.num_workers=0"]
    assert main(["pretrain", "--preset", "tiny-4l-cpu", "--data", str(shards["train"]),
                 "--out", str(pre), *sets(TINY + common + ["data.frame_stride=4"])]) == 0
    assert main(["finetune", "--init", str(pre), "--modality", "av", "--data", str(shards["train"]),
                 "--val", str(shards["test"]), "--out", str(fine),
                 *sets(TINY + common + ["data.num_frames=8", "data.frame_stride=2"])]) == 0
    assert json.loads((fine / "config.json").read_text())["data"]["num_frames"] == 8
    capsys.readouterr()
    assert main(["evaluate", str(fine), "--data", str(shards["test"]), "--views", "3"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["clips_evaluated"] == 8 and result["clips_skipped"] == 0
    code = main(["pretrain", "--preset", "tiny-4l-cpu", "--data", str(shards["train"]),
                 "--out", str(tmp_path / "bad"), *sets(TINY + common + ["data.frame_stride=1"])])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "--keep-every 1" in err and len(err.splitlines()) == 1
