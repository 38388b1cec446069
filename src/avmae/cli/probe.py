"""`avmae probe`: linear and k-NN probes of a frozen encoder, as JSON on stdout (the work:
avmae.evaluation.probe)."""

from __future__ import annotations

import argparse
import json

from avmae.cli.arguments import positive_int, add_device_argument, add_config_arguments
from avmae.evaluation.probe import K_NEIGHBOURS, probe


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", metavar="RUN_OR_CHECKPOINT",
                        help="an AV-MAE pretraining run / checkpoint, a finetune run / checkpoint, "
                             "or `scratch` (a random-init AV-MAE encoder; needs --preset)")
    parser.add_argument("--data", required=True,
                        help="labelled training data (manifest, or shards: a path or URL)")
    parser.add_argument("--val", required=True, help="labelled test data (manifest or shards)")
    parser.add_argument("--modality", choices=["audio", "video", "av"], default=None,
                        help="the pooled features to probe (default: every modality of the encoder)")
    parser.add_argument("--label-column", default=None,
                        help="label | labels | verb,noun (default: a finetuned run's own, else the "
                             "config's finetune.label_column, `label`)")
    add_config_arguments(parser, preset_required=False)
    parser.add_argument("--seed", type=int, default=0, help="the random init of `scratch` (default 0)")
    parser.add_argument("--k", type=positive_int, default=K_NEIGHBOURS,
                        help=f"k-NN neighbours (default {K_NEIGHBOURS})")
    parser.add_argument("--batch-size", type=positive_int, default=16, help="clips per forward pass")
    parser.add_argument("--workers", type=int, default=None,
                        help="data-loader workers (default: data.num_workers)")
    add_device_argument(parser)


def run(args: argparse.Namespace) -> int:
    result = probe(args.run, args.data, args.val, modality=args.modality, preset=args.preset,
                   overrides=args.overrides, label_column=args.label_column, seed=args.seed,
                   k=args.k, batch_size=args.batch_size, workers=args.workers, device=args.device)
    print(json.dumps(result))
    return 0
