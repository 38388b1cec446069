"""The quickstart end to end, in its reduced --fast form (the default runs ~10 min: see README)."""

import json

import pytest

from avmae.cli import main


@pytest.mark.slow
def test_fast_quickstart_runs_every_stage(tmp_path, capsys):
    out = tmp_path / "qs"
    assert main(["quickstart", "--out", str(out), "--fast"]) == 0
    printed = capsys.readouterr().out
    for command in ("$ avmae synth", "$ avmae prepare", "$ avmae pretrain", "$ avmae finetune",
                    "$ avmae evaluate"):
        assert command in printed
    results = json.loads((out / "results.json").read_text())
    assert set(results) == {"random_init", "avmae"}
    for row in results.values():
        assert set(row) == {"audio", "video", "av"}
        assert all(0.0 <= acc <= 100.0 for acc in row.values())
    assert "| AV-MAE" in printed and "| random init" in printed
    assert list((out / "pretrain" / "figures").glob("reconstruction_*.png"))
    assert (out / "pretrain" / "loss_curve.png").exists()
    assert len(list((out / "finetune").glob("*/loss_curve.png"))) == 6
