"""`avmae manifest`: official annotation files -> train/test manifests and the class vocabulary
(the work: avmae.data.annotations)."""

from __future__ import annotations

import argparse
from pathlib import Path

from avmae.data import DATASETS, SPLITS, write_manifests


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", choices=DATASETS, metavar="DATASET",
                        help=f"which official annotations: one of {', '.join(DATASETS)}")
    parser.add_argument("annotations", nargs="+", metavar="ANNOTATION",
                        help="the official annotation files (see the description)")
    parser.add_argument("--videos", required=True, metavar="DIR",
                        help="the folder holding the downloaded videos (searched at any depth)")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="where train.csv, test.csv, vocab.json and missing.txt go")
    parser.add_argument("--pattern", default=None,
                        help="how your files are named, under --videos, e.g. '{ytid}_{start_ms}_"
                             "{end_ms}' or 'clips/{ytid}.mkv'; fields {ytid} {start} {end} "
                             "{start_ms} {end_ms} {video_id} {participant_id}")
    parser.description = ("write train/test manifests and the class vocabulary from the official "
                          "annotation files of VGGSound (vggsound.csv), AudioSet (*_segments.csv + "
                          "class_labels_indices.csv) or Epic Kitchens-100 (EPIC_100_train.csv, "
                          "EPIC_100_validation.csv [+ EPIC_100_verb_classes.csv, "
                          "EPIC_100_noun_classes.csv]); missing videos are listed in missing.txt")


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    counts = write_manifests(args.dataset, [Path(p) for p in args.annotations], Path(args.videos),
                             out, args.pattern)
    for split in SPLITS:
        c = counts[split]
        if c["clips"]:
            share = 100.0 * c["missing"] / c["clips"]
            print(f"{split}: {c['found']} of {c['clips']} clips found, {c['missing']} missing "
                  f"({share:.1f} %)" + (f" -> {out / (split + '.csv')}" if c["found"] else ""))
    if counts["whole_as_segments"]:
        print(f"{counts['whole_as_segments']} files named by the YouTube id alone are shorter than "
              "their segments' ends: taken as the segments themselves (no start/end)")
    if any(counts[s]["missing"] for s in SPLITS):
        print(f"missing clips are listed in {out / 'missing.txt'}")
    print(f"vocabulary: {out / 'vocab.json'} (pass it to `avmae finetune --vocab`)")
    return 0
