"""`avmae manifest`: official annotation files -> train/test manifests and the class vocabulary
(the work: avmae.data.annotations)."""

from __future__ import annotations

import argparse
from pathlib import Path

from avmae.data import DATASETS, SPLITS, VAL_FRACTION, write_manifests


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", choices=DATASETS, metavar="DATASET",
                        help=f"which official annotations: one of {', '.join(DATASETS)}")
    parser.add_argument("annotations", nargs="+", metavar="ANNOTATION",
                        help="the official annotation files (see the description)")
    parser.add_argument("--videos", required=True, metavar="DIR",
                        help="the folder holding the downloaded videos (searched at any depth)")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="where train.csv, val.csv, test.csv, vocab.json and missing.txt go")
    parser.add_argument("--pattern", default=None,
                        help="how your files are named, under --videos, e.g. '{ytid}_{start_ms}_"
                             "{end_ms}' or 'clips/{ytid}.mkv'; fields {ytid} {start} {end} "
                             "{start_ms} {end_ms} {video_id} {participant_id}")
    parser.add_argument("--val-fraction", type=float, default=VAL_FRACTION, metavar="F",
                        help="share of the training clips held out as val.csv, stratified by class "
                             f"and chosen deterministically (default {VAL_FRACTION}); finetune "
                             "validates (and picks `best`) on it, never on test.csv")
    parser.description = ("write train/test manifests and the class vocabulary from the official "
                          "annotation files of VGGSound (vggsound.csv), AudioSet (*_segments.csv + "
                          "class_labels_indices.csv) or Epic Kitchens-100 (EPIC_100_train.csv, "
                          "EPIC_100_validation.csv [+ EPIC_100_verb_classes.csv, "
                          "EPIC_100_noun_classes.csv]); missing videos are listed in missing.txt")


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    counts = write_manifests(args.dataset, [Path(p) for p in args.annotations], Path(args.videos),
                             out, args.pattern, args.val_fraction)
    for split in SPLITS:
        c = counts[split]
        if c["clips"]:
            share = 100.0 * c["missing"] / c["clips"]
            print(f"{split}: {c['found']} of {c['clips']} clips found, {c['missing']} missing "
                  f"({share:.1f} %)" + (f" -> {out / (split + '.csv')}" if c["found"] else ""))
    if counts["val"]:
        print(f"val: {counts['val']} of the training clips held out (stratified, "
              f"{100 * args.val_fraction:g} %) -> {out / 'val.csv'}; train.csv excludes them: "
              "pass it to `avmae finetune --val`")
    elif counts["train"]["found"]:
        print(f"val: none held out ({counts['train']['found']} training clips give no clip at "
              f"{100 * args.val_fraction:g} %; raise --val-fraction): no val.csv")
    if counts["whole_as_segments"]:
        print(f"{counts['whole_as_segments']} files named by the YouTube id alone are shorter than "
              "their segments' ends: taken as the segments themselves (no start/end)")
    if any(counts[s]["missing"] for s in SPLITS):
        print(f"missing clips are listed in {out / 'missing.txt'}")
    print(f"vocabulary: {out / 'vocab.json'} (pass it to `avmae finetune --vocab`)")
    return 0
