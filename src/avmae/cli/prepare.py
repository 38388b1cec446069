"""`avmae prepare`: a manifest of raw videos -> shards (the work: avmae.data.prepare)."""

from __future__ import annotations

import argparse
import os

from avmae.cli.arguments import positive_int
from avmae.config import build_config
from avmae.data import prepare_shards


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("manifest", metavar="MANIFEST", help="CSV manifest (path column relative to its folder)")
    parser.add_argument("--out", required=True, help="shards folder to write")
    parser.add_argument("--clips-per-shard", type=positive_int, default=256,
                        help="clips per tar file (default 256: about 1 GB at 16x256p)")
    parser.add_argument("--workers", type=positive_int, default=os.cpu_count() or 1,
                        help="decoding processes (default: all cores)")
    parser.add_argument("--views", type=positive_int, default=1,
                        help="temporal windows per clip: 1 = centre; V = V evenly spaced windows "
                             "(evaluation with --views V; training picks one at random)")
    parser.add_argument("--preset", default=None, help="preset whose data settings to use")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field (data.* fields shape the shards)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace shards already in --out")


def run(args: argparse.Namespace) -> int:
    cfg = build_config(args.preset, args.set)
    meta = prepare_shards(args.manifest, args.out, cfg.data, clips_per_shard=args.clips_per_shard,
                          workers=args.workers, views=args.views, overwrite=args.overwrite)
    print(summary_line(meta, args.out))
    return 0


def summary_line(meta: dict, out) -> str:
    filled = meta["filled"]
    return (f"prepared {meta['clips']} clips in {len(meta['shards'])} shards at {out}: "
            f"{meta['skipped']} skipped, {filled['audio']} without audio, "
            f"{filled['video']} without video")
