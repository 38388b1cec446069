"""`avmae visualize`: the paper's Figure 5 (reconstructions) for one clip (the figure:
avmae.evaluation.figures)."""

from __future__ import annotations

import argparse
from pathlib import Path

from avmae.api import load_clip
from avmae.checkpoint import PRETRAIN_KIND, writing
from avmae.config import ConfigError
from avmae.evaluation import reconstruction_figure
from avmae.models import load_model


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", metavar="RUN_OR_CHECKPOINT", help="a pretraining run folder, checkpoint folder or .safetensors")
    parser.add_argument("clip", metavar="CLIP", help="a video file with sound")
    parser.add_argument("--out", required=True, metavar="FIGURE.png", help="the PNG to write")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random masks")


def run(args: argparse.Namespace) -> int:
    model, cfg, _, _, _ = load_model(args.checkpoint, expect=PRETRAIN_KIND,
                                     refusal="'{path}' is {a_kind} checkpoint; visualize needs a "
                                             "pretraining checkpoint (it has the decoder)")
    model.config = cfg
    try:
        batch = load_clip(args.clip, model)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    with writing(args.out):
        path = reconstruction_figure(model, batch, Path(args.out), seed=args.seed,
                                     title=Path(args.clip).name)
    print(path)
    return 0
