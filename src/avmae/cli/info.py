"""`avmae info`: what a configuration builds, before any data is touched."""

from __future__ import annotations

import argparse
import json

from avmae.cli.arguments import add_config_arguments, add_recipe_argument
from avmae.config import build_config, describe_pairing
from avmae.models import AVMAE, pretrain_flops, token_counts


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, preset_required=False)
    add_recipe_argument(parser)


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


def describe_recipe(name: str, preset: str | None, overrides: list[str]) -> dict:
    """What `--recipe name` resolves to at each stage, on `preset` (default: the library defaults,
    ViT-B at the paper's input) with `overrides`: every field the recipe sets, the batch, the input
    and the peak learning rate at that global batch (one process)."""
    from avmae.recipes import RECIPES, STAGES, recipe_overrides
    from avmae.training import fit_global_batch, finetune_config, scaled_lr
    out = {"recipe": name, "doc": RECIPES[name]["doc"], "preset": preset}
    for stage in STAGES:
        if RECIPES[name][stage] is None:
            out[stage] = None
            continue
        if stage == "pretrain":
            cfg = build_config(preset, overrides, recipe=recipe_overrides(name, stage))
        else:  # as `finetune --init scratch --preset P`; a checkpoint's config takes the preset's place
            cfg = finetune_config(build_config(preset), None, overrides, name)
        fit_global_batch(cfg.train, 1)
        keys = [*recipe_overrides(name, stage), "train.batch_size", "train.accum_steps",
                "train.global_batch", "data.num_frames", "data.frame_stride", "data.audio_seconds"]
        keys = list(dict.fromkeys(keys))
        resolved = {k: getattr(getattr(cfg, k.split(".")[0]), k.split(".")[1]) for k in keys}
        if stage == "finetune":
            resolved["finetune.modality"] = cfg.finetune.modality
            table = RECIPES[name]["audio_seconds"]
            resolved["table_audio_seconds"] = table  # the paper's; data.audio_seconds is the preset's
            if cfg.data.audio_seconds != table:
                resolved["note"] = (f"the paper finetunes on {table:g} s of audio; this preset gives "
                                    f"{cfg.data.audio_seconds:g} s: --set data.audio_seconds={table:g}")
        batch = cfg.train.batch_size * cfg.train.accum_steps
        resolved["peak_lr"] = {"global_batch": batch, "lr": scaled_lr(cfg.train.base_lr, batch,
                                                                     cfg.train.lr_batch),
                               "rule": "train.base_lr x global batch / train.lr_batch (Sec. B.1); "
                                       "global batch = train.global_batch if set (shared by the "
                                       "processes, accumulation filling what train.batch_size per "
                                       "process cannot), else train.batch_size x "
                                       "train.accum_steps x processes; shown for one process"}
        out[stage] = resolved
    return out


def run(args: argparse.Namespace) -> int:
    from avmae.config import ConfigError
    if args.recipe is not None:
        print(json.dumps(describe_recipe(args.recipe, args.preset, args.overrides), indent=2))
        return 0
    if args.preset is None:
        raise ConfigError("give --preset NAME (see `avmae presets`) or --recipe NAME")
    cfg = build_config(args.preset, args.overrides)
    print(json.dumps(describe(cfg), indent=2))
    return 0
