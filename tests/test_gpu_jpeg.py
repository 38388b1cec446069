"""data.jpeg_decode=cuda (avmae.data.gpu_jpeg): the shards' JPEG frames decoded after the batch.

The GPU itself is not needed here: the deferred path takes its decoder as an argument, and with
the CPU's decoder (Pillow) it must give exactly the in-worker path's tensors, for the same seed,
epoch and clip, in training and evaluation, whatever the number of workers and from any resume
point. Without CUDA or torchvision the flag falls back to the CPU path with one warning line,
and the run log records the decision."""

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import torch
from conftest import TINY

from avmae.cli import main
from avmae.config import ConfigError, build_config
from avmae.data import build_dataset, build_loader, build_train_loader, gpu_jpeg, prepare_shards
from avmae.data.gpu_jpeg import finish_batch, gpu_jpeg_available, pillow_decoder

# Every random draw of the video transform in use: the finetuning recipe's scale jitter, colour
# jitter and greyscale (made likely, so both branches of each draw are taken), and the flip.
AUGMENT = ["data.scale_jitter=true", "data.color_augment=0.7", "data.color_drop=0.5"]
VARIANTS = {"pretraining": [], "finetuning": AUGMENT}


@pytest.fixture(scope="module")
def shards(tiny_synth, tmp_path_factory):
    out = tmp_path_factory.mktemp("shards")
    prepare_shards(tiny_synth / "train.csv", out, build_config("tiny-4l-cpu", TINY).data,
                   progress=False)
    return out


@pytest.fixture
def no_cuda(monkeypatch):
    """This machine as one without CUDA, whatever it has (the decision is made afresh)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(gpu_jpeg, "_WARNED", set())
    gpu_jpeg_available.cache_clear()
    yield
    gpu_jpeg_available.cache_clear()


def same_batches(a, b):
    a, b = list(a), list(b)
    assert len(a) == len(b) > 0
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for k in x:
            assert torch.equal(x[k], y[k]) if torch.is_tensor(x[k]) else x[k] == y[k], k


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_decoding_after_the_batch_gives_the_workers_tensors(shards, variant, train):
    """Pillow after the batch == Pillow in the worker: every draw (window, crop, scale, flip,
    colour) made in the worker from (seed, epoch, clip), the pixels transformed later."""
    cfg = build_config("tiny-4l-cpu", TINY + VARIANTS[variant])
    views = 1 if train else 2
    worker = build_dataset(shards, cfg, train=train, num_views=views, decode_after_batch=False)
    after = build_dataset(shards, cfg, train=train, num_views=views, decode_after_batch=True)
    assert after.decode_after_batch and not worker.decode_after_batch
    sample = after[0]
    assert "video" not in sample and sample["video_jpeg"][0].data.dtype == torch.uint8
    for epoch in (0, 1):
        kw = {"train": train, "batch_size": 5, "seed": 3, "epoch": epoch, "num_workers": 0}
        same_batches(build_loader(worker, cfg, **kw),
                     build_loader(after, cfg, jpeg_decoder=pillow_decoder, **kw))


def test_decoding_after_the_batch_keeps_worker_count_and_resume_exact(shards):
    """The run's loader with the deferred path: 2 workers == 0 workers, and a loader started at
    batch 5 (a resume) gives batches 5.. of the uninterrupted one, across an epoch boundary."""
    cfg = build_config("tiny-4l-cpu", TINY + AUGMENT)
    dataset = build_dataset(shards, cfg, train=True, decode_after_batch=True)
    per_epoch = len(dataset) // 4

    def run(start, workers):
        cfg.data.num_workers = workers
        return list(build_train_loader(dataset, cfg, batch_size=4, rank=0, world_size=1, seed=5,
                                       per_epoch=per_epoch, start=start, total=2 * per_epoch,
                                       jpeg_decoder=pillow_decoder))
    whole = run(0, 0)
    same_batches(whole, run(0, 2))
    same_batches(whole[5:], run(5, 0))
    reference = build_dataset(shards, cfg, train=True, decode_after_batch=False)
    cfg.data.num_workers = 0
    same_batches(whole, build_train_loader(reference, cfg, batch_size=4, rank=0, world_size=1,
                                           seed=5, per_epoch=per_epoch, start=0,
                                           total=2 * per_epoch))


def test_a_clip_whose_frames_fail_to_decode_after_the_batch_is_skipped_and_counted(shards):
    """The skip policy holds after the batch too: the clip leaves every per-clip tensor and
    "num_skipped" counts it; the other clips are untouched."""
    cfg = build_config("tiny-4l-cpu", TINY)
    dataset = build_dataset(shards, cfg, train=True, decode_after_batch=True)
    loader = build_loader(dataset, cfg, train=True, batch_size=4, num_workers=0,
                          jpeg_decoder=pillow_decoder)
    batch = next(iter(loader.loader))  # as collated, before the decoding
    windows = batch["video_jpeg"]
    bad = windows[1][0].data.untyped_storage().data_ptr()

    def decoder(files):  # a decoder refusing clip 1's frames
        if any(f.untyped_storage().data_ptr() == bad for f in files):
            raise RuntimeError("nvjpeg: bad huffman code")
        return pillow_decoder(files)
    out = finish_batch(batch, cfg.data, decoder)
    assert out["num_skipped"] == 1 and out["video"].shape[0] == 3 == len(out["index"])
    assert out["audio"].shape[0] == 3 and "video_jpeg" not in out
    whole = next(iter(loader))  # the same batch, every clip decoded
    kept = torch.tensor([0, 2, 3])
    for key in ("video", "audio", "index", "has_video"):
        assert torch.equal(out[key], whole[key][kept]), key


def test_flag_cuda_without_cuda_falls_back_to_the_cpu_path_with_one_warning(shards, no_cuda,
                                                                           capsys):
    cfg = build_config("tiny-4l-cpu", TINY + ["data.jpeg_decode=cuda"])
    train = build_dataset(shards, cfg, train=True)
    build_dataset(shards, cfg, train=False)  # a second dataset: no second warning
    err = capsys.readouterr().err.splitlines()
    line = ("avmae: warning: data.jpeg_decode=cuda: decoding JPEG frames on the CPU instead "
            "(CUDA is not available)")
    assert err == [line]
    assert not train.decode_after_batch
    assert train.jpeg_decode == {"jpeg_decode": "cpu", "jpeg_decode_asked": "cuda",
                                 "jpeg_decode_why": "CUDA is not available"}
    cpu = build_config("tiny-4l-cpu", TINY)
    kw = {"train": True, "batch_size": 5, "seed": 1, "epoch": 0, "num_workers": 0}
    same_batches(build_loader(train, cfg, **kw),
                 build_loader(build_dataset(shards, cpu, train=True), cpu, **kw))


def test_flag_cuda_on_a_cuda_machine_but_a_cpu_run_decodes_on_the_cpu(monkeypatch, capsys):
    """`--device cpu` on a machine with CUDA and torchvision: the run's device decides."""
    from avmae.data import gpu_jpeg
    monkeypatch.setattr(gpu_jpeg, "gpu_jpeg_available", lambda: (True, ""))
    monkeypatch.setattr(gpu_jpeg, "_WARNED", set())
    on_cpu = gpu_jpeg.choose_jpeg_decode("cuda", True, torch.device("cpu"))
    assert on_cpu == {"jpeg_decode": "cpu", "jpeg_decode_asked": "cuda",
                      "jpeg_decode_why": "the run's device is cpu"}
    assert "the run's device is cpu" in capsys.readouterr().err
    assert gpu_jpeg.choose_jpeg_decode("cuda", True, torch.device("cuda", 0))["jpeg_decode"] == "cuda"
    assert gpu_jpeg.choose_jpeg_decode("cuda", True)["jpeg_decode"] == "cuda"   # device not known


def test_flag_cuda_without_torchvision_falls_back(monkeypatch, no_cuda, capsys):
    """CUDA present but torchvision not importable: the CPU path, and the line says how to fix it."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setitem(sys.modules, "torchvision", None)  # import torchvision -> ImportError
    ok, why = gpu_jpeg_available()
    assert not ok and "torchvision is not importable" in why and "avmae[gpu-jpeg]" in why
    assert gpu_jpeg.choose_jpeg_decode("cuda", shards=True)["jpeg_decode"] == "cpu"
    assert len(capsys.readouterr().err.splitlines()) == 1


def test_flag_cuda_on_raw_videos_falls_back_and_only_shards_defer(tiny_synth, no_cuda, capsys):
    cfg = build_config("tiny-4l-cpu", TINY + ["data.jpeg_decode=cuda"])
    raw = build_dataset(tiny_synth / "train.csv", cfg, train=True)
    assert not raw.decode_after_batch and "not shards format 2" in raw.jpeg_decode["jpeg_decode_why"]
    assert "not shards format 2" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="only shards"):
        build_dataset(tiny_synth / "train.csv", cfg, train=True, decode_after_batch=True)


def test_the_run_log_records_where_frames_are_decoded(shards, no_cuda, tmp_path, capsys):
    run = tmp_path / "run"
    sets = [a for s in TINY + ["data.jpeg_decode=cuda", "train.steps=1", "train.batch_size=4",
                               "train.figure_clips=0"] for a in ("--set", s)]
    assert main(["pretrain", "--preset", "tiny-4l-cpu", "--data", str(shards), "--out", str(run),
                 *sets]) == 0
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert {"jpeg_decode": "cpu", "jpeg_decode_asked": "cuda",
            "jpeg_decode_why": "CUDA is not available"} in records
    assert capsys.readouterr().err.count("data.jpeg_decode=cuda") == 1


def test_the_gpu_decoder_is_an_optional_extra_not_a_dependency():
    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    project = project["project"]
    assert any(d.startswith("torchvision") for d in project["optional-dependencies"]["gpu-jpeg"])
    assert not any(d.startswith("torchvision") for d in project["dependencies"])
    # torchvision is imported only where the GPU path is asked for, never with the package
    code = "import sys, avmae.data, avmae.training; print('torchvision' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.stdout.strip() == "False", proc.stderr
