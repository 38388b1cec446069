"""`avmae import-scenic`: an official Scenic (Flax) checkpoint -> an avmae run (the work:
avmae.interop.scenic). CHECKPOINT may also be a name from `avmae weights` (downloaded into the
cache, or taken from it: avmae.interop.weights)."""

from __future__ import annotations

import argparse

from avmae.interop import (
    download_weights,
    import_scenic,
    is_weights_name,
    lookup_weights,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", metavar="CHECKPOINT",
                        help="an official Scenic AV-MAE / MBT checkpoint (legacy Flax msgpack), or the "
                             "name of one (e.g. scenic/audioset-av; the list: avmae weights), "
                             "downloaded into the cache on first use")
    parser.add_argument("--out", required=True, metavar="RUN", help="the run folder to write")
    parser.add_argument("--preset", choices=["audioset-large", "vggsound-large"],
                        help="the official setup (input lengths, mask ratios, fusion layer, labels); "
                             "default: the one that fits the checkpoint")
    parser.add_argument("--labels", metavar="FILE",
                        help="class names for a classifier, in the head's order: avmae's vocab.json, "
                             "a CSV with a display_name column (AudioSet's class_labels_indices.csv), "
                             "or a text file with one name per line")
    parser.add_argument("--set", dest="overrides", action="append", metavar="KEY=VALUE",
                        help="override a config field of the written run (e.g. data.audio_seconds=8); "
                             "the architecture is read off the checkpoint")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")


def next_commands(run: str, kind: str) -> str:
    """The commands that take the written run, by its kind."""
    from avmae.checkpoint import PRETRAIN_KIND
    if kind == PRETRAIN_KIND:
        return (f"next: avmae embed {run} VIDEO... --out features.npz; avmae visualize {run} CLIP.mp4 "
                f"--out figure.png; avmae finetune --init {run} ...; avmae pretrain --init {run} ...")
    return (f"next: avmae evaluate {run} --data TEST.csv; avmae probe {run} --data TRAIN --val VAL; "
            f"avmae embed {run} VIDEO... --out features.npz")


def run(args: argparse.Namespace) -> int:
    from safetensors import safe_open

    from avmae.checkpoint import WEIGHTS
    checkpoint, preset, source = args.checkpoint, args.preset, None
    if is_weights_name(checkpoint):
        entry = lookup_weights(checkpoint)  # an unknown name: one line listing the names
        checkpoint, preset, source = download_weights(entry.name), preset or entry.preset, entry.name
    ckpt = import_scenic(checkpoint, args.out, preset=preset, labels=args.labels,
                         overrides=args.overrides, overwrite=args.overwrite, source=source)
    with safe_open(str(ckpt / WEIGHTS), framework="pt") as f:
        kind = (f.metadata() or {}).get("kind", "")
    print(next_commands(args.out, kind))
    return 0
