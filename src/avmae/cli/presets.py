"""`avmae presets`: the named configurations, one line each."""

from __future__ import annotations

import argparse

from avmae.config import PRESET_DOCS, PRESETS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass  # no options


def run(args: argparse.Namespace) -> int:
    width = max(len(n) for n in PRESETS)
    for name in PRESETS:
        print(f"{name:<{width}}  {PRESET_DOCS[name]}")
    return 0
