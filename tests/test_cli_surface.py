"""The command line's surface: --version, help for every option with its default shown, one name
per kind of positional argument, `avmae info RUN`, and messages that read as English."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from avmae.cli import COMMANDS, build_parser, main

DATA = Path(__file__).parent / "data" / "scenic"
# One name per kind of positional argument, across commands.
POSITIONALS = {"RUN_OR_CHECKPOINT", "DATA", "MANIFEST", "OUT_DIR", "CLIP", "CHECKPOINT", "DATASET",
               "ANNOTATION", "TABLE", "SOURCE"}


def subparser(command: str) -> argparse.ArgumentParser:
    parser = build_parser(command)
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices[command]


def test_version(capsys):
    import avmae
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0 and capsys.readouterr().out.strip() == f"avmae {avmae.__version__}"


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_option_has_help_and_positionals_share_names(command):
    for action in subparser(command)._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        assert action.help, f"avmae {command} {action.option_strings or action.dest}: no help text"
        if not action.option_strings:
            assert action.metavar in POSITIONALS, f"avmae {command} {action.dest}: metavar {action.metavar}"


@pytest.mark.parametrize("command, shown", [("embed", "(default: 8)"), ("probe", "(default: 16)"),
                                            ("evaluate", "(default: auto)"), ("finetune", "(default: auto)")])
def test_defaults_are_shown_in_help(command, shown):
    assert shown in " ".join(subparser(command).format_help().split())


def test_checkpoint_positionals_are_named_alike():
    for command in ("evaluate", "visualize", "embed", "probe", "check", "info"):
        assert "RUN_OR_CHECKPOINT" in subparser(command).format_usage(), command


def test_info_describes_a_run(tmp_path, capsys):
    pre, clf = tmp_path / "pre", tmp_path / "clf"
    assert main(["import-scenic", str(DATA / "audioset_audio_pretrain.optimizer.msgpack"), "--out", str(pre)]) == 0
    assert main(["import-scenic", str(DATA / "vggsound_mbt.params.msgpack"), "--out", str(clf)]) == 0
    capsys.readouterr()
    assert main(["info", str(pre)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["kind"] == "avmae_pretrain" and list(info["tokens"]) == ["audio"]
    assert info["audio_tokens"] == info["tokens"]["audio"] > 0 and info["video_tokens"] == 0
    assert list(info["checkpoints"].values()) == ["verified"]
    assert main(["info", str(clf)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["kind"] == "avmae_finetune" and info["model"]["num_classes"] == [309]
    assert info["input"]["num_frames"] == 32 and sorted(info["tokens"]) == ["audio", "video"]


def test_info_of_a_run_and_a_preset_at_once_is_refused(tmp_path, capsys):
    assert main(["info", str(tmp_path), "--preset", "tiny-4l-cpu"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_messages_count_and_use_articles():
    from avmae.config import a_or_an, plural
    assert (plural(1, "step"), plural(2, "step"), plural(0, "class", "classes")) == ("1 step", "2 steps", "0 classes")
    assert (a_or_an("avmae_finetune"), a_or_an("pretraining")) == ("an avmae_finetune", "a pretraining")


def test_a_refusal_names_the_kind_with_the_right_article(tmp_path, capsys):
    from media import write_clip
    clf = tmp_path / "clf"
    assert main(["import-scenic", str(DATA / "vggsound_video.params.msgpack"), "--out", str(clf)]) == 0
    clip = write_clip(tmp_path / "c.mp4", seconds=1.0, size=(64, 48))
    assert main(["visualize", str(clf), str(clip), "--out", str(tmp_path / "f.png")]) == 2
    assert "is an avmae_finetune checkpoint" in capsys.readouterr().err
