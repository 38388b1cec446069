"""`avmae weights`: the official pretrained weights by name, what each is, and whether it is cached.

    $ avmae weights
    cache: /home/me/.cache/avmae (set AVMAE_HOME to move it)
    NAME                                  CACHED      WHAT
    scenic/audioset-av                    converted   AudioSet-2M AV-MAE, audio + video: pretraining model
    scenic/audioset-av-finetuned-av       not cached  AudioSet-2M AV-MAE finetuned audiovisual (MBT): ...
    ...

A name goes wherever a run does: `avmae.load(NAME)`, `avmae import-scenic NAME --out RUN`, and
`torch.hub.load(REPO, HUB_NAME)` (hubconf.py). The table is avmae.interop.weights.OFFICIAL_WEIGHTS;
`--json` prints it whole (URL, preset, label source, torch.hub name, cache state).
"""

from __future__ import annotations

import argparse
import json

from avmae.interop import OFFICIAL_WEIGHTS, cache_status, weights_cache


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true",
                        help="print the table as JSON: name, torch.hub name, URL, preset, what, "
                             "label source, cache state")


def run(args: argparse.Namespace) -> int:
    rows = [(w, cache_status(w.name)) for w in OFFICIAL_WEIGHTS.values()]
    if args.json:
        print(json.dumps({"cache": str(weights_cache()), "weights": [
            {"name": w.name, "hub_name": w.hub_name, "url": w.url, "preset": w.preset, "what": w.what,
             "labels": w.labels or None, "cached": status} for w, status in rows]}, indent=1))
        return 0
    print(f"cache: {weights_cache()} (set AVMAE_HOME to move it)")
    width = max(len(w.name) for w, _ in rows) + 2
    state = max(len(s) for _, s in rows) + 2
    print(f"{'NAME':<{width}}{'CACHED':<{state}}WHAT")
    for w, status in rows:
        print(f"{w.name:<{width}}{status:<{state}}{w.what}")
    print('use: avmae.load("NAME") or avmae import-scenic NAME --out RUN (the first use downloads and '
          'converts into the cache); torch.hub names drop "scenic/" and read "-" as "_" '
          '(scenic/vggsound-av -> vggsound_av)')
    return 0
