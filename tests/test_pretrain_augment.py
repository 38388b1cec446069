"""Pretraining's video augmentation is Table 14's "none": a random crop at the model's size from
the frame as resized (no scale jitter) plus the official flip (issue #21, item 5); finetuning keeps
the official scale jitter 0.9-1.33."""

import numpy as np
import pytest
import torch

from avmae.config import build_config
from avmae.data import video_tensor
from avmae.recipes import recipe_overrides
from avmae.training import finetune_config


def frames_with_unique_pixels(T=2, H=40, W=56):
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(T, H, W, 3), dtype=np.uint8)


def exact_crops(frames, size):
    """Every size x size window of the frames (and its mirror image), as the [-1, 1] tensor."""
    x = torch.from_numpy(frames).float().div(127.5).sub(1.0).permute(3, 0, 1, 2)  # (3, T, H, W)
    H, W = frames.shape[1:3]
    for top in range(H - size + 1):
        for left in range(W - size + 1):
            window = x[:, :, top: top + size, left: left + size]
            yield window, False
            yield window.flip(-1), True


@pytest.mark.parametrize("pretrain_cfg", [
    lambda: build_config("base", ["data.short_side=40", "data.crop_size=32"]),
    lambda: build_config("tiny-4l-cpu", ["data.short_side=40", "data.crop_size=32"],
                         recipe=recipe_overrides("vggsound", "pretrain")),
    lambda: build_config("vggsound-large", ["data.short_side=40", "data.crop_size=32"]),
])
def test_pretraining_crops_at_the_models_size_and_flips(pretrain_cfg):
    cfg = pretrain_cfg().data
    assert not cfg.scale_jitter and cfg.flip and cfg.color_augment == 0
    frames = frames_with_unique_pixels()
    flips = set()
    for seed in range(6):
        out = video_tensor(frames, cfg, train=True, rng=np.random.default_rng(seed))
        match = [f for w, f in exact_crops(frames, 32) if torch.allclose(out, w, atol=1e-6)]
        assert match, f"seed {seed}: not an unscaled crop_size crop of the frame"
        flips.add(match[0])
    assert flips == {True, False}


def test_finetuning_keeps_the_official_scale_jitter():
    cfg = finetune_config(build_config("base"), "video").data
    assert cfg.scale_jitter and (cfg.scale_jitter_min, cfg.scale_jitter_max) == (0.9, 1.33)
    cfg.short_side, cfg.crop_size, cfg.color_augment, cfg.color_drop = 40, 32, 0.0, 0.0
    frames = frames_with_unique_pixels()
    rescaled = 0
    for seed in range(6):
        out = video_tensor(frames, cfg, train=True, rng=np.random.default_rng(seed))
        rescaled += not any(torch.allclose(out, w, atol=1e-6) for w, _ in exact_crops(frames, 32))
    assert rescaled > 0
