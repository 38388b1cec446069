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


def device_name(value: str) -> str:
    """argparse type of --device: refuses a device this machine does not have, before any work."""
    from avmae.config import ConfigError
    from avmae.runtime import resolve_device
    try:
        resolve_device(value)
    except ConfigError as err:
        raise argparse.ArgumentTypeError(f"{value}: " + str(err).removeprefix(f"--device {value}: ")) from None
    return value


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", type=device_name,
                        help="auto (cuda if available, else cpu), cpu, cuda or cuda:N")


def positive_int(value: str) -> int:
    """argparse type of a count that must be at least 1 (--batch-size, --clips, --views)."""
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{value}' is not a whole number") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"{n} must be at least 1")
    return n
