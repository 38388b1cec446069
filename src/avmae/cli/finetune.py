"""`avmae finetune` (the loop: avmae.training.finetune)."""

from __future__ import annotations

import argparse

from avmae.cli.arguments import add_device_argument, add_config_arguments, add_recipe_argument, add_run_dir_arguments
from avmae.training.finetune import finetune


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--init", metavar="CKPT_OR_RUN",
                        help="an AV-MAE pretraining run folder or checkpoint (its config gives the "
                             "model sizes and input sizes), or `scratch` (random init; needs --preset); "
                             "not needed with --resume")
    parser.add_argument("--modality", choices=["audio", "video", "av"],
                        help="audio: AST; video: ViViT; av: MBT (Sec. 4.1)")
    add_config_arguments(parser, preset_required=False)
    add_recipe_argument(parser)
    parser.add_argument("--vocab", metavar="VOCAB_JSON",
                        help="the class vocabulary to use (e.g. the vocab.json `avmae manifest` writes, "
                             "which keeps the official class order); default: the sorted labels of --data")
    parser.add_argument("--data", required=True,
                        help="training data: a CSV manifest or shards folder (path or URL)")
    parser.add_argument("--val", required=True,
                        help="validation data (its labels must occur in --data, or in --vocab)")
    parser.add_argument("--out", required=True, help="the run folder")
    add_run_dir_arguments(parser)
    add_device_argument(parser)
    parser.epilog = (
        "Without --recipe finetuning is Table 16 exactly (as --recipe vggsound, but the label column): "
        "SGD, momentum 0.9, train.base_lr=0.8 at train.lr_batch=64 (scaled linearly to your global "
        "batch), train.global_batch=64 (shared by the processes in micro-batches of at most "
        "train.batch_size=8, accumulation filling the rest; never the checkpoint's batch), "
        "warm-up 2.5 epochs, 50 epochs, clipping 1.0, weight decay 0, layer decay 0.75, mixup 0.5 "
        "(audio-only too), stochastic depth 0.3, label smoothing 0.3, SpecAugment 1 x 48 frequency / "
        "4 x 48 time masks, no time shift, and the official video augmentation (scale jitter "
        "0.9-1.33, colour 0.8 / drop 0.1, flips); then --recipe (Tables 17-18 also change lr, batch, "
        "audio-only mixup, time shift and SpecAugment), then --set (train.batch_size=B alone makes "
        "the global batch B x accum x processes). The paper's pretraining input (16 frames at "
        "stride 4) becomes 32 frames at stride 2; other inputs are kept. "
        "Labels: --set finetune.label_column=label | labels | verb,noun. "
        "Validation (--val: not the test split; `avmae manifest` writes val.csv) uses one centre "
        "view per clip and picks checkpoints/best; `avmae evaluate RUN --data TEST` evaluates the "
        "last checkpoint (--checkpoint best for that one), averaging finetune.views (4) views.")


def run(args: argparse.Namespace) -> int:
    finetune(args.init, args.data, args.val, args.out, modality=args.modality, preset=args.preset,
             overrides=args.overrides, resume=args.resume, overwrite=args.overwrite,
             device=args.device, recipe=args.recipe, vocab=args.vocab)
    return 0
