"""The Python API (`avmae.load`, `avmae.load_clip`): README's own example, run unchanged on every
official model family (audio-only, video-only, audiovisual; pretraining and classifier) after
`avmae import-scenic` of the committed official test vectors."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

import avmae
from avmae.cli import main

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data" / "scenic"
ALL = ["audioset_pretrain.params", "vggsound_pretrain.params", "audioset_audio_pretrain.optimizer",
       "audioset_mbt.params", "vggsound_mbt.params", "vggsound_audio.params", "vggsound_video.params"]
# What each model takes: modalities, and the number of video frames of its own config (the
# classifiers' finetuning input is 32 frames, the pretraining input 16).
EXPECTED = {"audioset_pretrain.params": (["audio", "video"], 16),
            "vggsound_pretrain.params": (["audio", "video"], 16),
            "audioset_audio_pretrain.optimizer": (["audio"], None),
            "audioset_mbt.params": (["audio", "video"], 32),
            "vggsound_mbt.params": (["audio", "video"], 32),
            "vggsound_audio.params": (["audio"], None),
            "vggsound_video.params": (["video"], 32)}


def readme_python() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("**In Python**"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    from media import write_clip
    return write_clip(tmp_path_factory.mktemp("clip") / "clip.mp4", seconds=1.0, size=(64, 48))


@pytest.mark.parametrize("name", ALL)
def test_readme_python_example_runs_on_every_official_family(name, clip, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["import-scenic", str(DATA / f"{name}.msgpack"), "--out", str(run)]) == 0
    code = readme_python()
    assert '"runs/official-audioset"' in code and '"my_videos/clip.mp4"' in code
    code = code.replace('"runs/official-audioset"', repr(str(run))).replace(
        '"my_videos/clip.mp4"', repr(str(clip)))
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    modalities, frames = EXPECTED[name]
    assert sorted(scope["clip"]) == modalities          # exactly what the model takes, no more
    if frames is not None:
        assert scope["clip"]["video"].shape[2] == frames
    assert sorted(scope["tokens"]) == modalities
    model = scope["model"]
    if "pretrain" in name:
        assert not hasattr(model, "labels")
    else:
        assert isinstance(model.labels, list) and len(model.labels) == model.head.out_features
        assert scope["logits"].shape == (1, len(model.labels))


def test_load_clip_accepts_a_config_and_uses_its_modalities(clip, tmp_path):
    run = tmp_path / "run"
    assert main(["import-scenic", str(DATA / "audioset_audio_pretrain.optimizer.msgpack"),
                 "--out", str(run)]) == 0
    model = avmae.load(run)
    x = avmae.load_clip(clip, model.config)             # the config alone still works
    assert list(x) == ["audio"]
    with torch.no_grad():
        assert model.forward_features(**x)["audio"].shape[0] == 1


def test_load_clip_errors_are_standard_python_types(clip, tmp_path):
    run = tmp_path / "run"
    assert main(["import-scenic", str(DATA / "vggsound_video.params.msgpack"), "--out", str(run)]) == 0
    model = avmae.load(run)
    with pytest.raises(FileNotFoundError):
        avmae.load_clip(tmp_path / "missing.mp4", model)
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video" * 100)
    with pytest.raises(ValueError):
        avmae.load_clip(bad, model)
    with pytest.raises(TypeError):
        avmae.load_clip(clip, torch.nn.Linear(2, 2))
