"""`avmae prepare`: a manifest of raw videos -> shards (the work: avmae.data.prepare)."""

from __future__ import annotations

import argparse
import os

from avmae.cli.arguments import positive_int
from avmae.config import build_config
from avmae.data import DEFAULT_EVERY, DEFAULT_JPEG_QUALITY, prepare_shards


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("manifest", metavar="MANIFEST", help="CSV manifest (path column relative to its folder)")
    parser.add_argument("--out", required=True,
                        help="shards folder to write: a path, or a URL (s3://, gs://, file://; "
                             "pip install 'avmae[s3]' or 'avmae[gcs]')")
    parser.add_argument("--clips-per-shard", type=positive_int, default=256,
                        help="clips per tar file (default 256: about 0.6 GB of 10 s clips at 256p)")
    parser.add_argument("--workers", type=positive_int, default=os.cpu_count() or 1,
                        help="decoding processes (default: all cores)")
    parser.add_argument("--keep-every", type=positive_int, default=DEFAULT_EVERY,
                        help="keep every Nth source frame (default 2: serves frame strides 2 and "
                             "4, i.e. pretraining 16x4 and finetuning 32x2; 1 for any stride)")
    parser.add_argument("--jpeg-quality", type=positive_int, default=DEFAULT_JPEG_QUALITY,
                        help="JPEG quality of the stored frames, 1-100 (default 90; "
                             "BENCHMARKS.md: bytes and PSNR)")
    parser.add_argument("--preset", default=None, help="preset whose data settings to use")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field (data.* fields shape the shards)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace shards already in --out")
    parser.add_argument("--resume", action="store_true",
                        help="carry on an interrupted prepare: its finished shards are kept")


def run(args: argparse.Namespace) -> int:
    cfg = build_config(args.preset, args.set)
    meta = prepare_shards(args.manifest, args.out, cfg.data, clips_per_shard=args.clips_per_shard,
                          workers=args.workers, every=args.keep_every,
                          jpeg_quality=args.jpeg_quality, overwrite=args.overwrite,
                          resume=args.resume)
    print(summary_line(meta, args.out))
    return 0


def summary_line(meta: dict, out) -> str:
    filled = meta["filled"]
    return (f"prepared {meta['clips']} clips in {len(meta['shards'])} shards at {out}: "
            f"{meta['skipped']} skipped, {filled['audio']} without audio, "
            f"{filled['video']} without video")
