"""`avmae init-from {videomae,mae,audiomae} CHECKPOINT --out RUN`: a public unimodal MAE into the
encoders of a new pretraining run (the work: avmae.interop.unimodal)."""

from __future__ import annotations

import argparse

from avmae.interop import SOURCES, init_from


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", choices=SOURCES, metavar="SOURCE",
                        help="videomae: the video encoder; mae (ImageNet MAE): both encoders, the "
                             "kernel inflated; audiomae: the audio encoder")
    parser.add_argument("checkpoint", metavar="CHECKPOINT",
                        help="the original repository's .pth, a .safetensors file, or a transformers "
                             "folder (config.json + model.safetensors / pytorch_model.bin)")
    parser.add_argument("--out", required=True, metavar="RUN", help="the run folder to write")
    parser.add_argument("--preset", default="base",
                        help="input sizes, decoder and training settings (see `avmae presets`); the "
                             "encoder's sizes are read off the checkpoint")
    parser.add_argument("--pixel-norm", choices=["imagenet", "none"], default="imagenet",
                        help="the pixel normalisation the video source was trained with, folded into "
                             "the video patch kernel so that avmae's RGB in [-1, 1] fits it")
    parser.add_argument("--set", dest="overrides", action="append", metavar="KEY=VALUE",
                        help="override a config field of the written run (e.g. model.num_heads=12 "
                             "where the file does not say)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")


def run(args: argparse.Namespace) -> int:
    init_from(args.source, args.checkpoint, args.out, preset=args.preset, overrides=args.overrides,
              pixel_norm=args.pixel_norm, overwrite=args.overwrite)
    print(f"next: avmae pretrain --init {args.out} --data DATA --out NEW_RUN")
    return 0
