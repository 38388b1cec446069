"""`avmae reproduce`: a table's grid at a tiny scale (2 steps), impossible rows, resuming."""

import json

import pytest

from avmae.cli import reproduce
from avmae.cli import main
from avmae.config import ConfigError

from conftest import TINY

# The tiny model of the other end-to-end tests, 2 layers deep: of Table 13's S = 1..4 joint
# layers only S = 1 leaves a separate layer. The row's S must not be overridden by --set.
SETS = [s for s in TINY if not s.startswith("model.fusion_layers")]
FT = ["train.batch_size=4"]          # one labelled clip per class: 8 clips


def test_table_13_runs_possible_rows_marks_impossible_ones_and_resumes(tiny_synth, tmp_path, capsys):
    out = tmp_path / "rep"
    results = reproduce.reproduce(13, data=str(tiny_synth), out=out, pretrain_steps=2,
                                  finetune_steps=2, overrides=SETS, labelled_per_class=1,
                                  finetune_overrides=FT, seed=5)
    assert set(results) == {"S = 1", "S = 2", "S = 3", "S = 4"}
    assert 0.0 <= results["S = 1"]["av"] <= 100.0
    assert all(results[f"S = {s}"]["av"] is None for s in (2, 3, 4))
    saved = json.loads((out / "table_13.json").read_text())
    assert saved["measured"] == results and saved["paper"]["S = 2"] == {"av": 63.5}
    assert set(saved["impossible"]) == {"S = 2", "S = 3", "S = 4"}
    assert "fusion_layers" in saved["impossible"]["S = 4"]
    text = (out / "table_13.md").read_text()
    assert f"| S = 1 | {results['S = 1']['av']:.1f} / 63.4 |" in text
    assert "| S = 4 | impossible / 63.1 |" in text
    assert f"`avmae reproduce 13 --data {tiny_synth} --seed 5 --preset tiny-4l-cpu" in text
    assert "--labelled-per-class 1" in text and "--finetune-set train.batch_size=4`" in text
    printed = capsys.readouterr().out
    assert "$ avmae prepare" in printed and "$ avmae pretrain" in printed and "$ avmae finetune" in printed
    # the row's pretraining really used S = 1 and the cell was finetuned for audiovisual (MBT)
    cfg = json.loads((out / "runs" / "s_1" / "pretrain" / "config.json").read_text())
    assert cfg["model"]["fusion_layers"] == 1 and cfg["model"]["encoder"] == "mid"
    ft = json.loads((out / "runs" / "s_1" / "av" / "config.json").read_text())
    assert ft["finetune"]["modality"] == "av" and ft["train"]["steps"] == 2
    assert cfg["train"]["seed"] == ft["train"]["seed"] == 5     # --seed seeds every run
    # pretraining read every training clip, finetuning one labelled clip per class
    pretrained_on = json.loads((out / "shards" / "train" / "meta.json").read_text())
    finetuned_on = json.loads((out / "shards" / "labelled" / "meta.json").read_text())
    train_rows = (tiny_synth / "train.csv").read_text().splitlines()[1:]
    labels = {row.split(",")[1] for row in train_rows}
    assert pretrained_on["clips"] == len(train_rows) and finetuned_on["clips"] == len(labels)
    assert f"--data {out / 'shards' / 'labelled'}" in printed

    # a second run reuses every measured cell instead of training again
    stamp = (out / "runs" / "s_1" / "av" / "test_metrics.json").stat().st_mtime_ns
    with pytest.raises(ConfigError, match="--resume.*--overwrite"):  # never written over silently
        reproduce.reproduce(13, data=str(tiny_synth), out=out, pretrain_steps=2, finetune_steps=2,
                            overrides=SETS, labelled_per_class=1, finetune_overrides=FT, seed=5)
    again = reproduce.reproduce(13, data=str(tiny_synth), out=out, pretrain_steps=2,
                                finetune_steps=2, overrides=SETS, labelled_per_class=1,
                                finetune_overrides=FT, resume=True, seed=5)
    assert again == results
    assert (out / "runs" / "s_1" / "av" / "test_metrics.json").stat().st_mtime_ns == stamp
    assert "$ avmae pretrain" not in capsys.readouterr().out
    # ... but never at another scale
    with pytest.raises(ConfigError, match="another --out"):
        reproduce.reproduce(13, data=str(tiny_synth), out=out, pretrain_steps=2, finetune_steps=2,
                            overrides=SETS, labelled_per_class=2, finetune_overrides=FT, resume=True)


def test_every_table_row_has_a_paper_number_for_each_column():
    for number, table in reproduce.TABLES.items():
        assert table.rows, number
        for row in table.rows:
            assert set(row.paper) == set(table.columns), (number, row.label)
    assert len(reproduce.TABLES[8].rows) == 12           # 3 video x 4 audio ratios
    assert reproduce.TABLES[8].rows[6].paper == {"av": 63.5}  # video 0.9, audio 0.7: the best


def test_inpainting_needs_a_cross_modal_encoder():
    why = reproduce.impossible("tiny-4l-cpu", ["model.encoder=separate", "model.objective=inpaint_both"])
    assert why is not None and "early or mid" in why
    assert reproduce.impossible("tiny-4l-cpu", ["model.encoder=early", "model.objective=inpaint_both"]) is None


@pytest.mark.parametrize("argv", [["reproduce", "7"], ["reproduce", "3", "--set", "model.nope=1"],
                                  ["reproduce", "3", "--pretrain-steps", "0"]])
def test_bad_arguments_exit_2(argv, tmp_path, capsys):
    try:
        code = main([*argv, "--out", str(tmp_path / "r"), "--data", str(tmp_path)])
    except SystemExit as exc:   # refused while the arguments are parsed (--pretrain-steps 0)
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_data_folder_without_manifests_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="train.csv"):
        reproduce.find_data(str(tmp_path), tmp_path / "out", "tiny-4l-cpu", [], 16, 12)
