"""`avmae pretrain` (the loop: avmae.training.pretrain)."""

from __future__ import annotations

import argparse

from avmae.checkpoint import PRETRAIN_KIND, load_weights
from avmae.cli.arguments import add_device_argument, add_config_arguments, add_recipe_argument, add_run_dir_arguments
from avmae.config import ConfigError, build_config
from avmae.recipes import recipe_overrides
from avmae.training.pretrain import pretrain


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, preset_required=False)
    add_recipe_argument(parser)
    parser.add_argument("--data", required=True,
                        help="a CSV manifest, or a shards folder (a path or a URL: s3://, gs://, "
                             "https://)")
    parser.add_argument("--out", required=True, help="the run folder")
    add_run_dir_arguments(parser)
    parser.add_argument("--init", metavar="CKPT_OR_RUN",
                        help="start from the weights of an AV-MAE pretraining checkpoint (e.g. an "
                             "`avmae import-scenic` run) on your data: its config, a fresh optimiser")
    add_device_argument(parser)
    parser.add_argument("--knn-data", metavar="LABELLED",
                        help="with --knn-val: at each checkpoint, log the k-NN top-1 of the frozen "
                             "features (labelled clips of LABELLED as the bank, scored on --knn-val; "
                             "`avmae probe`'s k-NN) to metrics.jsonl and the console")
    parser.add_argument("--knn-val", metavar="VAL", help="labelled clips the k-NN monitor scores")


def run(args: argparse.Namespace) -> int:
    init = None
    if (args.knn_data is None) != (args.knn_val is None):
        raise ConfigError("--knn-data and --knn-val go together: the labelled bank and the clips it scores")
    if args.resume:
        if args.init:
            raise ConfigError("--init starts a new run and --resume continues one: give one of them")
        if args.recipe is not None:
            raise ConfigError("--resume continues a run with its own config: drop --recipe "
                              "(change single fields with --set)")
        cfg = None  # taken from the checkpoint; --set still applies on top
    elif args.init:
        if args.preset is not None:
            raise ConfigError("--init takes the model and input from the checkpoint; drop --preset "
                              "(--set still applies)")
        init, cfg, kind, _ = load_weights(args.init)
        if kind != PRETRAIN_KIND:
            raise ConfigError(f"--init '{args.init}' is a finetuned classifier, not an AV-MAE "
                              "pretraining checkpoint")
        cfg = build_config(None, args.overrides, base=cfg, recipe=recipe_overrides(args.recipe, "pretrain"))
    else:
        if args.preset is None:
            raise ConfigError("--preset is required (see `avmae presets`), unless --resume or --init")
        cfg = build_config(args.preset, args.overrides,
                           recipe=recipe_overrides(args.recipe, "pretrain"))
    knn = (args.knn_data, args.knn_val) if args.knn_data is not None else None
    pretrain(cfg, args.data, args.out, resume=args.resume, overwrite=args.overwrite,
             device=args.device, overrides=args.overrides, init=init, knn=knn)
    return 0
