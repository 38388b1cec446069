"""`avmae presets` and `avmae info`: what a configuration builds, before any data is touched."""

from __future__ import annotations

import argparse
import json

from .config import PRESET_DOCS, PRESETS, build_config, describe_pairing
from .flops import pretrain_flops, token_counts
from .model import AVMAE


def add_config_arguments(parser: argparse.ArgumentParser, preset_required: bool = True) -> None:
    parser.add_argument("--preset", required=preset_required, metavar="NAME",
                        help=f"one of: {', '.join(PRESETS)}")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                        help="override a config field by its dotted name, e.g. model.encoder=separate")


def add_presets_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def run_presets(args: argparse.Namespace) -> int:
    width = max(len(n) for n in PRESETS)
    for name in PRESETS:
        print(f"{name:<{width}}  {PRESET_DOCS[name]}")
    return 0


def add_info_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)


def _count(params) -> int:
    seen, n = set(), 0
    for p in params:
        if id(p) not in seen:
            seen.add(id(p))
            n += p.numel()
    return n


def describe(cfg) -> dict:
    """The JSON object `avmae info` prints."""
    model = AVMAE(cfg.model)
    total, visible = token_counts(cfg)
    info = {
        "model": {k: getattr(cfg.model, k) for k in ("modalities", "encoder", "decoder", "objective",
                                                      "embed_dim", "depth", "num_heads")},
        "encoder_params": _count(model.encoder_parameters()),
        "encoder_params_per_stream": {m: _count(model.stream_parameters(m)) for m in model.modalities},
        "decoder_params": _count(model.decoder_parameters()),
        "total_params": _count(model.parameters()),
        "audio_tokens": total.get("audio", 0),
        "video_tokens": total.get("video", 0),
        "visible_audio_tokens": visible.get("audio", 0),
        "visible_video_tokens": visible.get("video", 0),
        "visible_tokens_rounding": "N - floor(mask_ratio x N), the official release's rule",
        **{k: round(v, 3) for k, v in pretrain_flops(cfg).items()},
    }
    note = describe_pairing(cfg.model)
    if note:
        info["note"] = note
    return info


def run_info(args: argparse.Namespace) -> int:
    cfg = build_config(args.preset, args.overrides)
    print(json.dumps(describe(cfg), indent=2))
    return 0
