"""`avmae info` / `presets`, config overrides, and the analytic FLOP count."""

import json

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from avmae.cli import main
from avmae.cli.info import describe
from avmae.config import ConfigError, build_config
from avmae.models import AVMAE, pretrain_flops


def test_base_preset_tokens_and_parameters(capsys):
    assert main(["info", "--preset", "base"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["audio_tokens"], info["video_tokens"]) == (400, 1568)
    # The official rule N - floor(ratio x N) (masking.py): 157, not MAE's floor(N x 0.1) = 156.
    assert (info["visible_audio_tokens"], info["visible_video_tokens"]) == (200, 157)
    for n in info["encoder_params_per_stream"].values():
        assert 84e6 < n < 87e6  # ViT-B: about 86 M per stream
    assert info["total_params"] == info["encoder_params"] + info["decoder_params"]
    assert 300 < info["train_gflops_per_clip"] < 360  # about 320 GFLOP per clip (data issue)


@pytest.mark.slow
def test_large_preset_stream_size():
    info = describe(build_config("large", ["model.encoder=separate"]))
    for n in info["encoder_params_per_stream"].values():
        assert 300e6 < n < 306e6  # ViT-L: about 304 M


def test_separate_separate_is_flagged_as_two_uncoupled_maes():
    info = describe(build_config("tiny", ["model.encoder=separate", "model.decoder=separate"]))
    assert "Table 11" in info["note"]


@pytest.mark.parametrize("argv,needle", [
    (["info", "--preset", "base", "--set", "model.encoder=separate", "--set", "model.objective=inpaint_both"],
     "cross-modal"),
    (["info", "--preset", "nope"], "unknown preset"),
    (["info", "--preset", "base", "--set", "model.depth=abc"], "expects int"),
    (["info", "--preset", "base", "--set", "model.nothing=1"], "unknown config key"),
    (["info", "--preset", "base", "--set", "model.encoder=late"], "not one of"),
    (["info", "--preset", "base", "--set", "model.mask_ratio_video=1.0"], "visible"),
    (["info", "--preset", "base", "--set", "noequals"], "key=value"),
])
def test_bad_configs_exit_2_with_one_line(argv, needle, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and "\n" not in err and "Traceback" not in err


def test_set_is_type_checked():
    cfg = build_config("tiny", ["model.norm_targets=yes", "train.base_lr=1e-3", "model.depth=6"])
    assert cfg.model.norm_targets is True and cfg.train.base_lr == 1e-3 and cfg.model.depth == 6
    with pytest.raises(ConfigError):
        build_config("tiny", ["model.norm_targets=maybe"])


@pytest.mark.parametrize("encoder,decoder,objective", [
    ("early", "shared", "joint"), ("mid", "joint", "joint"), ("separate", "separate", "joint"),
    ("shared", "shared", "joint"), ("mid", "shared", "inpaint_both"),
    ("early", "separate", "inpaint_audio_from_video"), ("early", "joint", "joint_and_inpaint")])
def test_analytic_flops_match_torch_flop_counter(encoder, decoder, objective, monkeypatch):
    # The counter does not count the CPU attention kernel: run attention as explicit matmuls.
    def math_attention(q, k, v):
        return torch.softmax(q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5, dim=-1) @ v
    monkeypatch.setattr("avmae.models.transformer.F.scaled_dot_product_attention", math_attention)
    cfg = build_config("tiny", ["model.depth=3", "model.fusion_layers=1", "model.decoder_depth=2",
                                f"model.encoder={encoder}", f"model.decoder={decoder}",
                                f"model.objective={objective}", "data.num_frames=4", "data.crop_size=64",
                                "data.short_side=64", "data.audio_seconds=1.28", "model.mask_ratio_video=0.75",
                                "model.mask_ratio_audio=0.75"])
    model = AVMAE(cfg.model)
    a = torch.randn(1, 1, cfg.data.audio_frames, 128)
    v = torch.randn(1, 3, 4, 64, 64)
    with FlopCounterMode(display=False) as counter:
        model(a, v)["loss"].backward()
    measured = counter.get_total_flops() / 1e9
    analytic = pretrain_flops(cfg)["train_gflops_per_clip"]
    # both skip norms, softmax and GELU
    assert abs(measured - analytic) / analytic < 1e-6, (measured, analytic)


def test_presets_lists_every_preset(capsys):
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    for name in ("tiny", "small", "base", "large", "tiny-4l-cpu"):
        assert name in out
