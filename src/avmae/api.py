"""The Python API for library users (DESIGN: keep these two stable).

    model = avmae.load("runs/official")           # a run folder, checkpoint folder or .safetensors
    model = avmae.load("scenic/audioset-av")      # official weights by name (`avmae weights`)
    clip = avmae.load_clip("video.mp4", model)    # exactly the inputs this model takes
    with torch.no_grad():
        tokens = model.forward_features(**clip)   # {"audio": (1, N_a, D), "video": (1, N_v, D)}

`load` returns the pretraining model (`AVMAE`) or the finetuned classifier, in eval mode on the CPU,
with the run's whole `Config` as `model.config` and, for a classifier, its class names as
`model.labels` (index = class id). A name from `avmae weights` is downloaded and converted into the
cache on first use (avmae.interop.weights) and read from there afterwards, with no network; an
existing file or folder of that name takes precedence. `load_clip` decodes one file as evaluation
does (centre crop, the start of the clip, the input lengths of the model's own config: a
classifier's finetuning input, e.g. 32 frames) into model-ready tensors with a batch axis, one per
modality the model takes and no other; a missing soundtrack or picture is filled as the data
pipeline fills it.

Errors are Python's standard types: a missing file FileNotFoundError, a file that cannot be decoded
ValueError; a bad checkpoint or config avmae's ConfigError.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from avmae.config import Config


def load(path: str | Path) -> nn.Module:
    from avmae.interop import is_weights_name, pretrained_run
    from avmae.models import load_model
    from avmae.models.loading import class_names

    if is_weights_name(path):
        path = pretrained_run(str(path))

    model, cfg, kind, meta, file = load_model(path)
    model.config = cfg
    labels = class_names(kind, meta, file)
    if labels is not None:
        model.labels = labels
    return model.eval()


def model_inputs(model_or_cfg: nn.Module | Config) -> tuple[Config, list[str]]:
    """(config, modalities) of what `load_clip` is given: a model `load` returned (its
    `.config`, and `.modalities`: a classifier's finetuning modalities), or a Config (the
    pretraining model it describes)."""
    from avmae.models.avmae import model_modalities

    if isinstance(model_or_cfg, Config):
        return model_or_cfg, model_modalities(model_or_cfg.model)
    cfg = getattr(model_or_cfg, "config", None)
    modalities = getattr(model_or_cfg, "modalities", None)
    if not isinstance(cfg, Config) or modalities is None:
        raise TypeError(f"load_clip needs a model returned by avmae.load (it carries .config) or its "
                        f"Config, not {type(model_or_cfg).__name__}")
    return cfg, list(modalities)


def load_clip(path: str | Path, model: nn.Module | Config) -> dict[str, torch.Tensor]:
    """{"audio": (1, 1, T_frames, mel), "video": (1, 3, T, H, W)} for one media file, with exactly
    the modalities `model` takes (a model from `avmae.load`, or a Config)."""
    from avmae.data import (
        MediaError,
        audio_logmel,
        audio_tensor,
        fill_audio,
        fill_video,
        read_clip,
        video_tensor,
    )

    cfg, modalities = model_inputs(model)
    if not Path(path).is_file():
        raise FileNotFoundError(f"no such file: '{path}'")
    try:
        raw = read_clip(path, cfg.data)
    except MediaError as err:
        raise ValueError(f"cannot read '{path}': {err}") from None
    out = {}
    if "audio" in modalities:
        out["audio"] = (audio_tensor(audio_logmel(raw.waveform, cfg.data), cfg.data)
                        if raw.waveform is not None else fill_audio(cfg.data))[None]
    if "video" in modalities:
        out["video"] = (video_tensor(raw.frames, cfg.data, train=False, rng=None)
                        if raw.frames is not None else fill_video(cfg.data))[None]
    return out
