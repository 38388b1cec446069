"""`avmae import-scenic`: an official Scenic (Flax) checkpoint -> an avmae run (the work:
avmae.interop.scenic)."""

from __future__ import annotations

import argparse

from avmae.interop import import_scenic


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="an official Scenic AV-MAE / MBT checkpoint (legacy Flax msgpack)")
    parser.add_argument("--out", required=True, help="the run folder to write")
    parser.add_argument("--preset", choices=["audioset-large", "vggsound-large"],
                        help="the official setup (input lengths, mask ratios, fusion layer, labels); "
                             "default: the one that fits the checkpoint")
    parser.add_argument("--labels", help="class names for a classifier: one per line, or a CSV with a "
                                         "display_name column (AudioSet's class_labels_indices.csv)")
    parser.add_argument("--set", dest="overrides", action="append", metavar="KEY=VALUE",
                        help="override a config field of the written run (e.g. data.audio_seconds=8)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")


def run(args: argparse.Namespace) -> int:
    import_scenic(args.checkpoint, args.out, preset=args.preset, labels=args.labels,
                  overrides=args.overrides, overwrite=args.overwrite)
    print(f"the run '{args.out}' works with: avmae embed, avmae visualize (pretraining), avmae finetune "
          f"--init / avmae pretrain --init (pretraining), avmae evaluate (classifier)")
    return 0
