"""`avmae stats`: log-mel mean/std (and video stats) of a dataset, as JSON (the work:
avmae.data.stats)."""

from __future__ import annotations

import argparse
import json

from avmae.config import build_config
from avmae.data import dataset_stats


def add_arguments(parser) -> None:
    parser.add_argument("data", metavar="DATA", help="manifest CSV (path column relative to it) or shards folder")
    parser.add_argument("--preset", default=None, help="preset whose DataConfig to use")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="config override, e.g. data.window=hanning")
    parser.add_argument("--max-clips", type=int, default=0, metavar="N",
                        help="use N clips spread evenly over the manifest (0 = all)")


def run(args: argparse.Namespace) -> int:
    cfg = build_config(args.preset, args.overrides).data
    print(json.dumps(dataset_stats(args.data, cfg, args.max_clips)))
    return 0
