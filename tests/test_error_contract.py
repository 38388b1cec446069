"""What the error contract promises beyond "one line, exit 2" (tests/test_bad_inputs.py): what the
line says, that nothing is reported that did not happen, and the warnings a user needs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import avmae
from avmae.cli import main

DATA = Path(__file__).parent / "data" / "scenic"
FLAX = DATA / "vggsound_pretrain.params.msgpack"


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("contract")
    out = {}
    for key, name in (("pre", "vggsound_pretrain.params"), ("audio_only", "audioset_audio_pretrain.optimizer"),
                      ("clf", "vggsound_mbt.params")):
        out[key] = root / key
        assert main(["import-scenic", str(DATA / f"{name}.msgpack"), "--out", str(out[key])]) == 0
    return out


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    from media import write_clip
    return write_clip(tmp_path_factory.mktemp("clip") / "clip.mp4", seconds=1.0, size=(64, 48))


def one_error(capsys) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(err) == 1, err
    return err[0]


@pytest.mark.parametrize("argv", [["embed", str(FLAX), "{clip}", "--out", "{tmp}/f.npz"],
                                  ["visualize", str(FLAX), "{clip}", "--out", "{tmp}/f.png"]],
                         ids=["embed", "visualize"])
def test_a_raw_flax_file_says_to_import_it_first(argv, clip, tmp_path, capsys):
    assert main([a.format(clip=clip, tmp=tmp_path) for a in argv]) == 2
    line = one_error(capsys)
    assert "Flax checkpoint" in line and "avmae import-scenic" in line and "header too large" not in line


def test_avmae_load_of_a_flax_file_says_to_import_it_first():
    with pytest.raises(Exception, match="import-scenic"):
        avmae.load(FLAX)


def test_embed_out_that_is_not_npz_is_refused_and_nothing_written(runs, clip, tmp_path, capsys):
    assert main(["embed", str(runs["pre"]), str(clip), "--out", str(tmp_path / "y.png")]) == 2
    assert ".npz" in one_error(capsys)
    assert list(tmp_path.iterdir()) == []


def test_embed_writes_where_it_says(runs, clip, tmp_path, capsys):
    out = tmp_path / "features.npz"
    assert main(["embed", str(runs["pre"]), str(clip), "--out", str(out)]) == 0
    assert str(out) in capsys.readouterr().out and [p.name for p in tmp_path.iterdir()] == ["features.npz"]


def test_embed_with_no_readable_clip_fails_and_writes_nothing(runs, tmp_path, capsys):
    from media import write_garbage
    bad = write_garbage(tmp_path / "bad.mp4")
    assert main(["embed", str(runs["pre"]), str(bad), "--out", str(tmp_path / "f.npz")]) == 2
    assert "could not be read" in one_error(capsys)
    assert not (tmp_path / "f.npz").exists()


def test_embed_takes_a_classifier_its_streams_pooled(runs, clip, tmp_path):
    import numpy as np
    out = tmp_path / "f.npz"
    assert main(["embed", str(runs["clf"]), str(clip), "--out", str(out)]) == 0
    feats = np.load(out)
    model = avmae.load(runs["clf"])
    with torch.no_grad():
        tokens = model.forward_features(**avmae.load_clip(clip, model))
    for m in ("audio", "video"):
        assert np.allclose(feats[m][0], tokens[m].mean(1)[0].numpy(), atol=1e-5)


def test_synth_refuses_to_replace_a_dataset(tmp_path, capsys):
    (tmp_path / "train.csv").write_text("path,label\nkeep.mp4,x\n")
    assert main(["synth", str(tmp_path)]) == 2
    assert "--overwrite" in one_error(capsys)
    assert (tmp_path / "train.csv").read_text() == "path,label\nkeep.mp4,x\n"


@pytest.mark.parametrize("device", ["cuda", "tpu"])
def test_an_unavailable_device_is_one_line(device, runs, clip, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    with pytest.raises(SystemExit) as exc:   # refused while the arguments are parsed
        main(["embed", str(runs["pre"]), str(clip), "--out", str(tmp_path / "f.npz"), "--device", device])
    assert exc.value.code == 2
    line = one_error(capsys)
    assert "--device" in line and ("cpu" in line)


def test_import_with_an_architecture_override_says_which_and_why(tmp_path, capsys):
    assert main(["import-scenic", str(FLAX), "--out", str(tmp_path / "r"), "--set", "model.depth=12"]) == 2
    line = one_error(capsys)
    assert "model.depth" in line and "read off the checkpoint" in line and "Error(s)" not in line


def test_import_hands_off_only_the_commands_that_fit(tmp_path, capsys):
    assert main(["import-scenic", str(FLAX), "--out", str(tmp_path / "p")]) == 0
    pretraining = capsys.readouterr().out.splitlines()[-1]
    assert "embed" in pretraining and "visualize" in pretraining and "evaluate" not in pretraining
    assert main(["import-scenic", str(DATA / "vggsound_audio.params.msgpack"), "--out", str(tmp_path / "c")]) == 0
    classifier = capsys.readouterr().out.splitlines()[-1]
    assert "evaluate" in classifier and "visualize" not in classifier and "finetune --init" not in classifier


def _init_report(run: Path, modality: str):
    from avmae.checkpoint import load_weights
    from avmae.config import build_config
    from avmae.models import build_classifier, init_classifier_from_avmae
    weights, cfg, kind, _ = load_weights(run)
    ft = build_config(None, [f"finetune.modality={modality}", "finetune.fusion_layer=3"], base=cfg)
    return init_classifier_from_avmae(build_classifier(ft, 5), weights, cfg, kind)


@pytest.mark.parametrize("key", ["pre", "audio_only"])
def test_finetuning_an_imported_run_explains_what_it_dropped(key, runs):
    report = _init_report(runs[key], "audio")
    assert not report.unexpected
    line = report.summary()
    assert "UNEXPECTED" not in line and "as the official init does" in line
    assert "encoder.streams" not in line       # grouped by reason, not listed tensor by tensor


def test_finetuning_video_from_an_audio_only_run_warns_the_video_stream_is_new(runs):
    report = _init_report(runs["audio_only"], "video")
    assert len(report.warnings) == 1 and "video" in report.warnings[0] and "audio only" in report.warnings[0]
    assert not report.unexpected
    assert _init_report(runs["audio_only"], "audio").warnings == []


def test_finetune_prints_the_new_stream_warning(runs, tiny_synth, tmp_path, capsys):
    """End to end: one warning line from `avmae finetune` itself."""
    argv = ["finetune", "--init", str(runs["audio_only"]), "--modality", "video",
            "--data", str(tiny_synth / "train.csv"), "--val", str(tiny_synth / "test.csv"),
            "--out", str(tmp_path / "ft"), "--device", "cpu",
            "--set", "data.num_frames=4", "--set", "data.frame_stride=1", "--set", "data.short_side=36",
            "--set", "data.crop_size=32", "--set", "data.audio_seconds=0.64", "--set", "data.num_workers=0",
            "--set", "train.steps=1", "--set", "train.batch_size=2", "--set", "finetune.views=1",
            "--set", "train.figure_clips=0"]
    assert main(argv) == 0
    warnings = [l for l in capsys.readouterr().err.splitlines() if "warning" in l and "video stream" in l]
    assert len(warnings) == 1
    # The run's class names travel with the classifier (model.labels, index = class id).
    vocab = json.loads((tmp_path / "ft" / "vocab.json").read_text())["vocab"]
    assert len(vocab) == 1 and avmae.load(tmp_path / "ft").labels == next(iter(vocab.values()))
