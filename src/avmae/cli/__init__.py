"""The `avmae` command line (DESIGN: "The command line").

Each subcommand lives in its own module of this package, named in `COMMANDS`, which provides
`add_arguments(parser)` and `run(args) -> int`: the arguments, the printing and the exit status. The
work is the library's (avmae.data, avmae.training, avmae.evaluation, avmae.interop); the library
never imports this package. Any user-caused problem raises `ConfigError` and becomes one line on
stderr and exit status 2; a run that had to stop (`RunError`) one line and status 1; an I/O error
(OSError) one line naming the file and the system's reason, status 2; no traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from avmae.config import ConfigError, RunError

COMMANDS = {
    "synth": ("avmae.cli.synth", "write the synthetic audiovisual dataset (real mp4 files + CSV manifests)"),
    "manifest": ("avmae.cli.manifest", "official annotation files (VGGSound, AudioSet, Epic "
                 "Kitchens) -> train/test manifests and the class vocabulary"),
    "prepare": ("avmae.cli.prepare", "turn a manifest of raw videos into shards for fast loading"),
    "stats": ("avmae.cli.stats", "log-mel mean/std (and video stats) of a dataset, as JSON"),
    "presets": ("avmae.cli.presets", "list the presets"),
    "info": ("avmae.cli.info", "JSON: parameters per part, tokens, visible tokens, GFLOPs (of a "
             "preset, or of a run: its model, input and checkpoints)"),
    "pretrain": ("avmae.cli.pretrain", "pretrain an AV-MAE on a manifest or shards"),
    "finetune": ("avmae.cli.finetune", "finetune AST / ViViT / MBT from an AV-MAE checkpoint"),
    "evaluate": ("avmae.cli.evaluate", "evaluate a finetuned checkpoint; JSON metrics on stdout"),
    "visualize": ("avmae.cli.visualize", "the paper's Figure 5 (reconstructions) for one clip"),
    "embed": ("avmae.cli.embed", "per-clip audio and video embeddings"),
    "probe": ("avmae.cli.probe", "linear and k-NN probes of a frozen encoder; JSON metrics on stdout"),
    "quickstart": ("avmae.cli.quickstart", "the whole method end to end on the embedded default"),
    "reproduce": ("avmae.cli.reproduce", "run one of the paper's ablation tables at a chosen scale"),
    "import-scenic": ("avmae.cli.import_scenic", "an official Scenic (Flax) AV-MAE / MBT checkpoint -> an avmae run"),
    "init-from": ("avmae.cli.init_from", "a public VideoMAE / ImageNet MAE / AudioMAE checkpoint -> the "
                  "encoders of a new pretraining run"),
    "check": ("avmae.cli.check", "list a run's checkpoints and whether each verifies"),
    "weights": ("avmae.cli.weights", "the official pretrained weights by name: what each is, "
                "whether it is cached, and where the cache is"),
}


class _Formatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's default shown (argparse's "(default: X)"), unless its help already says it."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text.lower() or action.default in (None, False, [], argparse.SUPPRESS):
            return text
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2 (argparse's own status for bad usage)
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        sys.exit(2)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; only the chosen command's module is imported (a slow or broken optional module
    never affects the other commands)."""
    from avmae import __version__
    parser = _Parser(prog="avmae", description="Audiovisual Masked Autoencoders")
    parser.add_argument("--version", action="version", version=f"avmae {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, (module_name, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text, formatter_class=_Formatter)
        if name == command:
            module = importlib.import_module(module_name)
            module.add_arguments(p)
            p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(command if command in COMMANDS else None)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_usage(sys.stderr)
        sys.stderr.write("avmae: error: give a COMMAND (the list: avmae --help)\n")
        return 2
    try:
        return int(args._run(args) or 0)
    except ConfigError as err:
        sys.stderr.write(f"avmae {args.command}: error: {err}\n")
        return 2
    except RunError as err:  # Interrupted (a stop request, its checkpoint saved): 128 + signal
        sys.stderr.write(f"avmae {args.command}: stopped: {err}\n")
        return getattr(err, "status", 1)
    except BrokenPipeError:  # `avmae info ... | head`: the reader left; stop quietly, as Unix tools do
        import os
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as err:  # an I/O error no command turned into its own line (checkpoint.writing)
        from avmae.checkpoint import errno_text
        where = f"'{err.filename}': " if err.filename else ""
        sys.stderr.write(f"avmae {args.command}: error: {where}{errno_text(err)}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("avmae: interrupted\n")
        return 130

