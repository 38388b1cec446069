"""Arguments that several commands share: the config (--preset, --set), the recipe (--recipe) and
the run folder (--resume, --overwrite)."""

from __future__ import annotations

import argparse

from avmae.config import PRESETS
from avmae.recipes import RECIPES


def add_config_arguments(parser: argparse.ArgumentParser, preset_required: bool = True) -> None:
    parser.add_argument("--preset", required=preset_required, metavar="NAME",
                        help=f"one of: {', '.join(PRESETS)}")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                        help="override a config field by its dotted name, e.g. model.encoder=separate")


def add_recipe_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--recipe", choices=list(RECIPES), metavar="NAME",
                        help="the paper's training recipe for a dataset (one of: "
                             f"{', '.join(RECIPES)}), applied after the preset and before --set; "
                             "`avmae info --recipe NAME` shows it")


def add_run_dir_arguments(parser) -> None:
    """--resume and --overwrite, for every command that writes a run folder."""
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --out from its newest checkpoint that verifies")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the run already in --out (its checkpoints, metrics, figures)")
