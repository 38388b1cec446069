"""The Python API for library users (DESIGN: keep these two stable).

    model = avmae.load("runs/official")           # a run folder, checkpoint folder or .safetensors
    clip = avmae.load_clip("video.mp4", model.config)
    with torch.no_grad():
        tokens = model.forward_features(**clip)   # {"audio": (1, N_a, D), "video": (1, N_v, D)}

`load` returns the pretraining model (`AVMAE`) or the finetuned classifier, in eval mode on the CPU,
with the run's whole `Config` as `model.config`. `load_clip` decodes one file as evaluation does
(centre crop, the start of the clip, the config's input lengths) into model-ready tensors with a
batch axis; a missing soundtrack or picture is filled as the data pipeline fills it.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from avmae.config import Config, ConfigError


def load(path: str | Path) -> nn.Module:
    from avmae.models import load_model

    model, cfg, _, _, _ = load_model(path)
    model.config = cfg
    return model.eval()


def load_clip(path: str | Path, cfg: Config) -> dict[str, torch.Tensor]:
    """{"audio": (1, 1, T_frames, mel), "video": (1, 3, T, H, W)} for one media file."""
    from avmae.data import (
        MediaError,
        audio_logmel,
        audio_tensor,
        fill_audio,
        fill_video,
        read_clip,
        video_tensor,
    )

    if not Path(path).is_file():
        raise ConfigError(f"no such file: '{path}'")
    try:
        raw = read_clip(path, cfg.data)
    except MediaError as err:
        raise ConfigError(f"cannot read '{path}': {err}") from None
    audio = (audio_tensor(audio_logmel(raw.waveform, cfg.data), cfg.data) if raw.waveform is not None
             else fill_audio(cfg.data))
    video = (video_tensor(raw.frames, cfg.data, train=False, rng=None) if raw.frames is not None
             else fill_video(cfg.data))
    return {"audio": audio[None], "video": video[None]}
