"""`avmae evaluate`: one JSON object with the task's metrics, views averaged per clip, unreadable
clips counted, checkpoints found in a run folder, and a pretraining checkpoint refused."""

import json
from pathlib import Path

import pytest
import torch
from conftest import TINY

from avmae.checkpoint import save_checkpoint
from avmae.cli import main
from avmae.config import ConfigError, build_config
from avmae.data import build_dataset
from avmae.evaluation import dataset_config, evaluate_checkpoint, load_finetuned, predict
from avmae.models import AVMAE
from avmae.runtime import Dist
from avmae.training.finetune import finetune

KEYS = {
    "label": {"top1", "top5"},
    "labels": {"mAP", "AUC", "d_prime"},
    "verb,noun": {"verb_top1", "noun_top1", "action_top1", "verb_top5", "noun_top5"},
}
COUNTS = {"clips_evaluated", "clips_skipped", "views", "checkpoint", "checkpoint_choice", "data"}


def absolute_rows(data):
    """test.csv's lines with absolute paths, for manifests written outside the dataset folder."""
    header, *rows = (data / "test.csv").read_text().splitlines()
    return [header] + [f"{data / r.split(',', 1)[0]},{r.split(',', 1)[1]}" for r in rows]


@pytest.fixture(scope="module")
def runs(tiny_synth, tmp_path_factory):
    """One tiny audio-only finetune run (from scratch, two steps) per label column."""
    root = tmp_path_factory.mktemp("ft")
    out = {}
    for column in KEYS:
        out[column] = finetune("scratch", str(tiny_synth / "train.csv"), str(tiny_synth / "test.csv"),
                               str(root / column.replace(",", "_")), modality="audio", preset="tiny-4l-cpu",
                               overrides=TINY + ["train.batch_size=4", "train.steps=2",
                                                 "train.checkpoint_every=1",
                                                 f"finetune.label_column={column}"])
    return out


@pytest.mark.parametrize("column", list(KEYS))
def test_evaluate_prints_one_json_object_with_the_task_metrics(column, runs, tiny_synth, capsys):
    assert main(["evaluate", str(runs[column]), "--data", str(tiny_synth / "test.csv"), "--views", "2"]) == 0
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    assert len(lines) == 1
    result = json.loads(lines[0])
    assert set(result) == KEYS[column] | COUNTS
    assert (result["clips_evaluated"], result["clips_skipped"], result["views"]) == (8, 0, 2)
    # A run folder means its last checkpoint (step 2), not the one validation picked.
    assert result["checkpoint"].endswith(f"step_{2:07d}/model.safetensors")
    assert result["checkpoint_choice"] == "last"
    assert f"evaluated {result['checkpoint']} (last checkpoint)" in captured.err
    for k in KEYS[column]:
        if k != "d_prime":
            assert 0.0 <= result[k] <= 1.0
    if column == "verb,noun":  # an action is right only when both verb and noun are
        assert result["action_top1"] <= min(result["verb_top1"], result["noun_top1"])
    assert "evaluate" in captured.err  # the progress bar is on stderr


def test_best_is_evaluated_only_when_asked_and_records_its_validation_data(runs, tiny_synth, capsys):
    run = runs["label"]
    data = str(tiny_synth / "test.csv")
    assert main(["evaluate", str(run), "--data", data, "--views", "1", "--checkpoint", "best"]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    best = (run / "checkpoints" / "best").resolve()
    assert result["checkpoint_choice"] == "best"
    assert Path(result["checkpoint"]).resolve() == best / "model.safetensors"
    assert "(best checkpoint)" in captured.err
    # finetune records which data chose `best` (here the run's --val), with the metric.
    recorded = json.loads((best / "val_metrics.json").read_text())
    assert recorded["val_data"] == data and recorded["metric"] == "top1"
    last = evaluate_checkpoint(run, data, views=1)
    assert last["checkpoint_choice"] == "last"


def test_views_are_averaged_per_clip(runs, tiny_synth):
    """predict() = the mean over each clip's views of the logits of that view alone."""
    model, cfg, labels, _ = load_finetuned(runs["label"])
    model.eval()
    dataset = build_dataset(tiny_synth / "test.csv", dataset_config(cfg), train=False,
                            label_column="label", vocab=labels["vocab"], num_views=3)
    scores, evaluated = predict(model, dataset, cfg, Dist(), batch_size=5)  # batches cross clips
    assert scores.shape == (8, labels["classes"][0]) and evaluated.all()
    with torch.no_grad():
        for clip in (0, 5):
            views = [model(audio=dataset[clip * 3 + v]["audio"][None]) for v in range(3)]
            torch.testing.assert_close(scores[clip], torch.cat(views).mean(dim=0))
            assert not torch.allclose(views[0], views[2])  # the views really differ


def test_unreadable_clips_are_skipped_and_counted(runs, tiny_synth, tmp_path):
    broken = tmp_path / "zero_bytes.mp4"
    broken.write_bytes(b"")
    rows = absolute_rows(tiny_synth)
    label = rows[1].split(",", 2)[1]
    manifest = tmp_path / "test_with_broken.csv"
    manifest.write_text("\n".join(rows + [f"{broken},{label},,,"]) + "\n")
    result = evaluate_checkpoint(runs["label"], manifest, views=1)
    assert (result["clips_evaluated"], result["clips_skipped"]) == (8, 1)
    clean = evaluate_checkpoint(runs["label"], tiny_synth / "test.csv", views=1)
    assert result["top1"] == clean["top1"]  # the skipped clip counts for nothing


def test_a_run_folder_a_checkpoint_folder_and_a_file_are_accepted(runs, tiny_synth):
    run = runs["label"]
    best = (run / "checkpoints" / "best").resolve()
    step = json.loads((best / "val_metrics.json").read_text())["step"]
    data = tiny_synth / "test.csv"
    a = evaluate_checkpoint(run, data, views=1, which="best")
    b = evaluate_checkpoint(run / "checkpoints" / f"step_{step:07d}", data, views=1)
    c = evaluate_checkpoint(best / "model.safetensors", data, views=1)
    assert a["top1"] == b["top1"] == c["top1"]
    assert a["checkpoint"] != b["checkpoint"]
    # One view at evaluation is what the training loop validated with.
    assert a["top1"] == json.loads((best / "val_metrics.json").read_text())["top1"]


def test_a_pretraining_checkpoint_is_refused_with_one_line(tiny_synth, tmp_path, capsys):
    cfg = build_config("tiny-4l-cpu", TINY)
    save_checkpoint(tmp_path / "pre", 1, AVMAE(cfg.model).state_dict(), cfg, "avmae_pretrain")
    assert main(["evaluate", str(tmp_path / "pre"), "--data", str(tiny_synth / "test.csv")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pretraining checkpoint" in err[0] and "finetune it first" in err[0]


def test_data_without_the_label_column_is_refused(runs, tiny_synth, tmp_path):
    rows = absolute_rows(tiny_synth)
    manifest = tmp_path / "test_paths_only.csv"
    manifest.write_text("path\n" + "\n".join(r.split(",")[0] for r in rows[1:]) + "\n")
    with pytest.raises(ConfigError, match="labels"):
        evaluate_checkpoint(runs["labels"], manifest)
