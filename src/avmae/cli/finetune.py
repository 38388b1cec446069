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
    parser.add_argument("--data", required=True, help="training data: a CSV manifest or shards folder")
    parser.add_argument("--val", required=True,
                        help="validation data (its labels must occur in --data, or in --vocab)")
    parser.add_argument("--out", required=True, help="the run folder")
    add_run_dir_arguments(parser)
    add_device_argument(parser)
    parser.epilog = (
        "Finetuning defaults (Table 16) replace the checkpoint's pretraining recipe: train.optimizer=sgd, "
        "train.base_lr=0.8 at train.lr_batch=64 (scaled linearly to your global batch), "
        "train.warmup_epochs=2.5, train.epochs=50, train.clip_grad=1.0, train.weight_decay=0, "
        "data.flip=true, finetune.mixup_alpha=0.5 (finetune.mixup_alpha_audio=1.25 for audio "
        "only); then --recipe (a dataset's Tables 16-18 and official augmentation), then --set. "
        "The paper's pretraining input (16 frames at stride 4) becomes 32 frames at stride 2; "
        "other input sizes, train.batch_size, train.accum_steps and train.seed are kept from the "
        "checkpoint (the paper's global batch: 64, or 128 on AudioSet). "
        "Labels: --set finetune.label_column=label | labels | verb,noun. "
        "Validation during training uses one centre view per clip; `avmae evaluate RUN --data VAL` "
        "averages finetune.views (4) views.")


def run(args: argparse.Namespace) -> int:
    finetune(args.init, args.data, args.val, args.out, modality=args.modality, preset=args.preset,
             overrides=args.overrides, resume=args.resume, overwrite=args.overwrite,
             device=args.device, recipe=args.recipe, vocab=args.vocab)
    return 0
