"""`avmae evaluate`: a finetuned checkpoint's metrics, as JSON on stdout (the work:
avmae.evaluation.evaluate)."""

from __future__ import annotations

import argparse
import json
import sys

from avmae.cli.arguments import add_device_argument, positive_int
from avmae.evaluation import evaluate_checkpoint


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", metavar="RUN_OR_CHECKPOINT",
                        help="a finetune run folder (its last checkpoint; see --checkpoint), a "
                             "checkpoint folder or a model.safetensors file")
    parser.add_argument("--checkpoint", dest="which", choices=["last", "best"], default="last",
                        help="for a run folder: its last checkpoint (default) or `best`, the one "
                             "with the best score on finetune's --val; evaluate `best` only on "
                             "data other than what picked it")
    parser.add_argument("--data", required=True, help="a CSV manifest or a shards folder (path or URL) "
                        "with the label column the model was finetuned on")
    parser.add_argument("--views", type=positive_int, default=None, metavar="N",
                        help="temporal views per clip, logits averaged (default: the checkpoint's "
                             "finetune.views, 4 as in the paper's B.2)")
    parser.add_argument("--batch-size", type=positive_int, default=None,
                        help="clips per forward pass (default: the checkpoint's train.batch_size)")
    parser.add_argument("--workers", type=int, default=None,
                        help="data loading processes (default: the checkpoint's data.num_workers)")
    add_device_argument(parser)


def run(args: argparse.Namespace) -> int:
    result = evaluate_checkpoint(args.checkpoint, args.data, views=args.views, device=args.device,
                                 batch_size=args.batch_size, num_workers=args.workers, progress=True,
                                 which=args.which)
    if result is not None:  # rank 0 only under torchrun
        print(f"evaluated {result['checkpoint']} ({result['checkpoint_choice']} checkpoint) on "
              f"{result['data']}", file=sys.stderr)
        print(json.dumps(result))
    return 0
