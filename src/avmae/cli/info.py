"""`avmae info`: what a configuration builds, before any data is touched."""

from __future__ import annotations

import argparse
import json

from avmae.cli.arguments import add_config_arguments, add_recipe_argument
from avmae.config import ConfigError, build_config, describe_pairing
from avmae.models import AVMAE, pretrain_flops, token_counts


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", nargs="?", metavar="RUN_OR_CHECKPOINT",
                        help="describe this run (or checkpoint) instead of a preset: its model, "
                             "tokens and checkpoints")
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


def describe_run(path: str) -> dict:
    """What `avmae info RUN` prints: the checkpoint's kind and model (as `describe` for a
    pretraining model; a classifier's modalities, head and input), its tokens and every checkpoint
    of the run with whether it verifies."""
    from pathlib import Path

    from avmae.checkpoint import FINETUNE_KIND
    from avmae.models.loading import class_names, load_model

    p = Path(path)
    if not p.exists():
        raise ConfigError(f"'{path}' does not exist: give a run folder, checkpoint folder or .safetensors")
    model, cfg, kind, meta, file = load_model(path, purpose="RUN_OR_CHECKPOINT")
    total, _ = token_counts(cfg)
    out: dict = {"run": str(p), "kind": kind, "weights": str(file),
                 "step": int(meta["step"]) if str(meta.get("step", "")).isdigit() else meta.get("step")}
    if kind == FINETUNE_KIND:
        labels = class_names(kind, meta, file)
        out["model"] = {"classifier": type(model).__name__, "modality": cfg.finetune.modality,
                        "architecture": cfg.finetune.architecture, "label_column": meta.get("label_column"),
                        "task": meta.get("task"), "num_classes": json.loads(meta["num_classes"]),
                        "first_labels": (labels[:5] if labels and isinstance(labels[0], str) else None),
                        **{k: getattr(cfg.model, k) for k in ("embed_dim", "depth", "num_heads")}}
        out["total_params"] = _count(model.parameters())
    else:
        out.update(describe(cfg))
    out["input"] = {"num_frames": cfg.data.num_frames, "frame_stride": cfg.data.frame_stride,
                    "crop_size": cfg.data.crop_size, "audio_seconds": cfg.data.audio_seconds}
    out["tokens"] = {m: total.get(m, 0) for m in model.modalities}
    if (p / "checkpoints").is_dir():
        from avmae.checkpoint import checkpoint_states
        out["checkpoints"] = {folder.name: state for folder, state in checkpoint_states(p)}
    return out


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
    if args.run is not None:
        if args.preset is not None or args.recipe is not None or args.overrides:
            raise ConfigError("give either RUN_OR_CHECKPOINT or --preset/--recipe/--set, not both")
        print(json.dumps(describe_run(args.run), indent=2))
        return 0
    if args.recipe is not None:
        print(json.dumps(describe_recipe(args.recipe, args.preset, args.overrides), indent=2))
        return 0
    if args.preset is None:
        raise ConfigError("give --preset NAME (see `avmae presets`) or --recipe NAME")
    cfg = build_config(args.preset, args.overrides)
    print(json.dumps(describe(cfg), indent=2))
    return 0
