"""Class names travel with an imported classifier: `import-scenic --labels` accepts avmae's
vocab.json, AudioSet's class_labels_indices.csv and a text file of names; `avmae.load(run).labels`
is the list (index = class id); importing a classifier without names warns how to add them."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

import avmae
from avmae.cli import main

DATA = Path(__file__).parent / "data" / "scenic"
NAMES = [f"sound {i:03d}" for i in range(309)][::-1]   # not sorted: order must be kept


def _vocab_json(path: Path) -> Path:
    path.write_text(json.dumps({"vocab": {"label": NAMES}}))
    return path


def _indices_csv(path: Path) -> Path:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["index", "mid", "display_name"])
        rows = [(i, f"/m/{i:05d}", n) for i, n in enumerate(NAMES)]
        for r in rows[1:] + rows[:1]:     # out of order: the index column orders them
            w.writerow(r)
    return path


def _text(path: Path) -> Path:
    path.write_text("\n".join(NAMES) + "\n")
    return path


@pytest.mark.parametrize("make", [_vocab_json, _indices_csv, _text], ids=["vocab.json", "csv", "txt"])
def test_labels_files_name_the_classes_in_head_order(make, tmp_path, capsys):
    labels = make(tmp_path / {"_vocab_json": "vocab.json", "_indices_csv": "class_labels_indices.csv",
                              "_text": "names.txt"}[make.__name__])
    run = tmp_path / "run"
    assert main(["import-scenic", str(DATA / "vggsound_mbt.params.msgpack"), "--out", str(run),
                 "--labels", str(labels)]) == 0
    assert "warning" not in capsys.readouterr().err
    assert avmae.load(run).labels == NAMES


def test_a_classifier_without_labels_warns_once_how_to_add_them(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["import-scenic", str(DATA / "vggsound_video.params.msgpack"), "--out", str(run)]) == 0
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "warning" in err[0] and "--labels" in err[0]
    assert avmae.load(run).labels[:2] == ["class_000", "class_001"]


def test_a_pretraining_import_does_not_warn(tmp_path, capsys):
    assert main(["import-scenic", str(DATA / "vggsound_pretrain.params.msgpack"), "--out",
                 str(tmp_path / "run")]) == 0
    assert "warning" not in capsys.readouterr().err
