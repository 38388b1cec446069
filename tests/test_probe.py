"""`avmae probe`: the linear and k-NN heads learn what the features hold, features stay aligned with
their clips' labels end to end, every kind of RUN is accepted, and bad input is one line, exit 2."""

import json

import pytest
import torch
from conftest import TINY

from avmae.checkpoint import save_checkpoint
from avmae.cli import main
from avmae.config import build_config
from avmae.evaluation import knn_scores, linear_scores, mean_average_precision, top_k_accuracy
from avmae.evaluation.probe import probe
from avmae.models import AVMAE
from avmae.training.finetune import finetune


def clusters(n_per_class: int, classes: int, dim: int, spread: float, seed: int):
    """Gaussian clusters: class c around a random centre; features (N, dim), labels (N,)."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dim, generator=g) * 3
    labels = torch.arange(classes).repeat_interleave(n_per_class)
    return centres[labels] + spread * torch.randn(len(labels), dim, generator=g), labels


@pytest.mark.parametrize("scorer", [linear_scores, knn_scores])
def test_heads_learn_separable_classes_and_stay_at_chance_on_noise(scorer):
    train_x, train_y = clusters(12, 8, 32, spread=1.0, seed=0)
    val_x, val_y = clusters(12, 8, 32, spread=1.0, seed=0)  # same centres, same draw: sanity
    val_x = val_x + 0.5 * torch.randn(val_x.shape, generator=torch.Generator().manual_seed(1))
    scores = scorer(train_x, [("single", train_y)], [8], val_x)
    assert scores.shape == (96, 8)
    assert top_k_accuracy(scores, val_y) > 0.9
    # Features that say nothing of the labels: about chance (1/8), far from the above.
    noise = torch.randn(96, 32, generator=torch.Generator().manual_seed(2))
    noise_val = torch.randn(96, 32, generator=torch.Generator().manual_seed(3))
    assert top_k_accuracy(scorer(noise, [("single", train_y)], [8], noise_val), val_y) < 0.35


def test_multi_label_heads_rank_the_present_classes_first():
    x, y = clusters(10, 6, 16, spread=0.5, seed=4)
    targets = torch.nn.functional.one_hot(y, 6).float()
    targets[:, 5] = (y < 3).float()  # a second label shared by classes 0-2
    for scorer in (linear_scores, knn_scores):
        scores = scorer(x, [("multi", targets)], [6], x + 0.1)
        assert mean_average_precision(scores, targets) > 0.9


def test_knn_votes_are_weighted_by_similarity():
    """Two far neighbours of class 0 lose to one very close neighbour of class 1 (exp(sim/T))."""
    train = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.05, 1.0], [-1.0, -1.0]])
    labels = torch.tensor([1, 0, 0, 2])
    query = torch.tensor([[1.0, 0.02]])
    # centred on the training mean (0.0125, 0.25): the query sits next to clip 0
    scores = knn_scores(train, [("single", labels)], [3], query, k=3)
    assert scores.argmax().item() == 1
    unweighted = knn_scores(train, [("single", labels)], [3], query, k=3, temperature=1e6)
    torch.testing.assert_close(unweighted, torch.tensor([[2 / 3, 1 / 3, 0.0]]), atol=1e-4, rtol=0)


@pytest.fixture(scope="module")
def pre(tmp_path_factory):
    """A tiny AV-MAE pretraining checkpoint (weights seeded 0; the probe never trains it)."""
    cfg = build_config("tiny-4l-cpu", TINY)
    torch.manual_seed(0)
    run = tmp_path_factory.mktemp("probe") / "pre"
    save_checkpoint(run, 1, AVMAE(cfg.model).state_dict(), cfg, "avmae_pretrain")
    return run


def test_probe_prints_one_json_line_and_features_stay_with_their_labels(pre, tiny_synth, tmp_path,
                                                                        capsys):
    """Probing training clips themselves, in another order and with an unreadable clip among them,
    with k=1: each clip's nearest neighbour is itself, so k-NN is right on every readable clip,
    and the linear head fits 16 clips in 64 dimensions. A probe that paired a feature with another
    clip's label, or counted the unreadable clip, would not."""
    header, *rows = (tiny_synth / "train.csv").read_text().splitlines()
    broken = tmp_path / "zero_bytes.mp4"
    broken.write_bytes(b"")
    order = [7, 0, 12, 3, 15, 9, 1, 10, 5, 14]
    shuffled = [f"{tiny_synth / rows[i].split(',', 1)[0]},{rows[i].split(',', 1)[1]}" for i in order]
    shuffled.insert(4, f"{broken},{rows[0].split(',', 1)[1]}")
    val = tmp_path / "val.csv"
    val.write_text("\n".join([header] + shuffled) + "\n")
    assert main(["probe", str(pre), "--data", str(tiny_synth / "train.csv"), "--val", str(val),
                 "--k", "1", "--batch-size", "4"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    result = json.loads(lines[0])
    assert result["knn"]["top1"] == 1.0 and result["linear"]["top1"] == 1.0
    assert (result["modality"], result["encoder"], result["features"]) == ("av", "avmae_pretrain", 64)
    assert result["train_clips"] == 16
    assert (result["knn"]["clips_evaluated"], result["knn"]["clips_skipped"]) == (10, 1)
    assert set(result["linear"]) == {"top1", "top5", "clips_evaluated", "clips_skipped"}


def test_scratch_is_the_seeded_random_encoder_and_one_modality_pools_its_own_tokens(pre, tiny_synth):
    data, val = str(tiny_synth / "train.csv"), str(tiny_synth / "test.csv")
    a = probe(str(pre), data, val)
    b = probe("scratch", data, val, preset="tiny-4l-cpu", overrides=TINY, seed=0)
    assert (a["linear"], a["knn"]) == (b["linear"], b["knn"]) and b["encoder"] == "scratch"
    audio = probe(str(pre), data, val, modality="audio")
    assert audio["features"] == 32 and audio["modality"] == "audio"
    assert audio["linear"]["clips_evaluated"] == 8


def test_a_finetuned_classifier_is_probed_through_its_streams(tiny_synth, tmp_path):
    run = finetune("scratch", str(tiny_synth / "train.csv"), str(tiny_synth / "test.csv"),
                   str(tmp_path / "ft"), modality="av", preset="tiny-4l-cpu",
                   overrides=TINY + ["train.batch_size=4", "train.steps=1", "train.checkpoint_every=1"])
    result = probe(str(run), str(tiny_synth / "train.csv"), str(tiny_synth / "train.csv"), k=1)
    assert result["encoder"] == "avmae_finetune" and result["features"] == 64
    assert result["knn"]["top1"] == 1.0
    video = probe(str(run), str(tiny_synth / "train.csv"), str(tiny_synth / "test.csv"), modality="video")
    assert video["features"] == 32


def paths_only(tiny_synth, tmp_path):
    header, *rows = (tiny_synth / "test.csv").read_text().splitlines()
    manifest = tmp_path / "no_labels.csv"
    manifest.write_text("path\n" + "\n".join(str(tiny_synth / r.split(",")[0]) for r in rows) + "\n")
    return manifest


@pytest.mark.parametrize("case", ["empty_folder", "not_avmae", "no_labels", "no_preset", "no_video"])
def test_bad_input_exits_2_with_one_line(case, pre, tiny_synth, tmp_path, capsys):
    data, val = str(tiny_synth / "train.csv"), str(tiny_synth / "test.csv")
    run, extra, expect = str(pre), [], ""
    if case == "empty_folder":          # a folder with no checkpoint: no encoder
        (tmp_path / "empty").mkdir()
        run, expect = str(tmp_path / "empty"), "no checkpoint"
    elif case == "not_avmae":           # a file that is not an avmae checkpoint
        (tmp_path / "notes.safetensors").write_text("not weights\n")
        run, expect = str(tmp_path / "notes.safetensors"), "cannot read checkpoint"
    elif case == "no_labels":           # a manifest without the label column
        val, expect = str(paths_only(tiny_synth, tmp_path)), "no 'label' column"
    elif case == "no_preset":
        run, expect = "scratch", "needs --preset"
    elif case == "no_video":            # an audio-only encoder has no video to probe
        cfg = build_config("tiny-4l-cpu", TINY + ["model.modalities=audio"])
        save_checkpoint(tmp_path / "audio_pre", 1, AVMAE(cfg.model).state_dict(), cfg, "avmae_pretrain")
        run, extra, expect = str(tmp_path / "audio_pre"), ["--modality", "video"], "has no video"
    assert main(["probe", run, "--data", data, "--val", val, *extra]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("avmae probe: error:") and expect in err[0], err
    assert captured.out == ""


def _pretrain_argv(tiny_synth, out, *extra):
    sets = [a for s in TINY + ["train.steps=2", "train.checkpoint_every=1", "train.batch_size=4",
                               "train.figure_clips=0"] for a in ("--set", s)]
    return ["pretrain", "--preset", "tiny-4l-cpu", "--data", str(tiny_synth / "train.csv"),
            "--out", str(out), *sets, *extra]


def test_pretraining_logs_the_knn_monitor_at_each_checkpoint_as_probe_scores_it(tiny_synth, tmp_path,
                                                                                capsys):
    """The monitor's number at the last checkpoint is `avmae probe`'s k-NN of that checkpoint: the
    same features of the same clips, read from the model in training (put back in eval mode) and
    from the saved weights."""
    data, val = str(tiny_synth / "train.csv"), str(tiny_synth / "test.csv")
    out = tmp_path / "pre"
    assert main(_pretrain_argv(tiny_synth, out, "--knn-data", data, "--knn-val", val)) == 0
    assert "k-NN monitor on" in capsys.readouterr().out
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    knn = {r["step"]: r for r in records if "knn_top1" in r}
    assert sorted(knn) == [1, 2]
    test_clips = len((tiny_synth / "test.csv").read_text().splitlines()) - 1
    assert knn[2]["knn_clips_evaluated"] == test_clips > 0
    assert knn[2]["knn_top1"] == probe(str(out), data, val)["knn"]["top1"]


@pytest.mark.parametrize("case", ["alone", "no_labels"])
def test_a_bad_knn_monitor_is_refused_before_training(case, tiny_synth, tmp_path, capsys):
    data = str(tiny_synth / "train.csv")
    extra = ["--knn-data", data] if case == "alone" else \
        ["--knn-data", data, "--knn-val", str(paths_only(tiny_synth, tmp_path))]
    assert main(_pretrain_argv(tiny_synth, tmp_path / "pre", *extra)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and ("go together" if case == "alone" else "no 'label' column") in err[0], err
    assert not list((tmp_path / "pre").glob("checkpoints/step_*"))
