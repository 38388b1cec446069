"""`avmae embed`: per-clip audio and video embeddings (the work: avmae.evaluation.embed)."""

from __future__ import annotations

import argparse

from avmae.cli.arguments import add_device_argument, positive_int

from avmae.evaluation.embed import embed


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", metavar="RUN_OR_CHECKPOINT",
                        help="a run folder, checkpoint folder or .safetensors: a pretraining model, or "
                             "a classifier (its streams' pooled features)")
    parser.add_argument("inputs", nargs="+", metavar="DATA",
                        help="a manifest CSV, a shards folder (path or URL), or media files")
    parser.add_argument("--out", required=True, metavar="FEATURES.npz", help="the .npz file to write")
    parser.add_argument("--batch-size", type=positive_int, default=8, help="clips per forward pass")
    parser.add_argument("--workers", type=int, default=None, help="data-loader workers (default: data.num_workers)")
    add_device_argument(parser)


def run(args: argparse.Namespace) -> int:
    result = embed(args.checkpoint, args.inputs, args.out, batch_size=args.batch_size,
                   workers=args.workers, device=args.device)
    dims = ", ".join(f"{m} {result[m].shape}" for m in ("audio", "video") if m in result)
    print(f"wrote {len(result['index'])} clips ({dims}) to {args.out}; "
          f"{len(result['skipped'])} unreadable skipped")
    return 0
