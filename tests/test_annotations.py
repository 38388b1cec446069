"""`avmae manifest`: the official annotation formats of VGGSound, AudioSet and Epic Kitchens-100
(fabricated here in those formats) -> manifests, vocabularies and missing lists, then one tiny
finetune + evaluate per dataset with the metric the paper reports for it."""

import csv
import json

import pytest

from avmae.cli import main
from conftest import TINY
from media import write_clip

# Tiny runs: scratch init at the conftest's tiny sizes, two steps.
RUN = [*TINY, "train.batch_size=2", "train.steps=2", "train.checkpoint_every=2",
       "finetune.views=1", "finetune.mixup_alpha=0", "finetune.mixup_alpha_audio=0"]


def video(path, seconds=1.2):
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_clip(path, seconds=seconds, size=(48, 48), fps=10)


def read_manifest(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def vocab(out):
    return json.loads((out / "vocab.json").read_text())["vocab"]


def finetune_and_evaluate(out, recipe, modality, tmp_path, capsys):
    run = tmp_path / f"run-{recipe}"
    args = ["finetune", "--init", "scratch", "--preset", "tiny-4l-cpu", "--recipe", recipe,
            "--modality", modality, "--data", str(out / "train.csv"), "--val", str(out / "test.csv"),
            "--vocab", str(out / "vocab.json"), "--out", str(run)]
    assert main(args + [a for s in RUN for a in ("--set", s)]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(run), "--data", str(out / "test.csv")]) == 0
    return run, json.loads(capsys.readouterr().out)


# ---- VGGSound ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def vggsound(tmp_path_factory):
    root = tmp_path_factory.mktemp("vggsound")
    videos = root / "videos"
    # The official vggsound.csv: no header, youtube_id,start_seconds,label,split.
    rows = [("-Ab_cD3fG4h", 10, "dog barking", "train"),          # {ytid}_{start:06d}.mp4
            ("zz9", 0, "engine accelerating, revving, vroom", "train"),  # {ytid}.mp4 (whole video)
            ("tr3", 20, "dog barking", "train"),
            ("tr4", 30, "engine accelerating, revving, vroom", "train"),
            ("gone1", 40, "dog barking", "train"),                 # no file: missing
            ("te1", 5, "dog barking", "test"),
            ("te2", 7, "cat purring", "test"),                     # a class only the test split has
            ("gone2", 9, "cat purring", "test")]
    with open(root / "vggsound.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    video(videos / "-Ab_cD3fG4h_000010.mp4")
    video(videos / "sub" / "zz9.mp4", seconds=12.0)        # a whole video holds its 10 s segment
    video(videos / "tr3_000020.MP4")
    video(videos / "tr4_000030.mp4")
    video(videos / "te1_000005.mp4")
    video(videos / "te2_000007.mp4")
    return root


def test_vggsound_manifests_vocabulary_and_missing(vggsound, tmp_path, capsys):
    out = tmp_path / "m"
    assert main(["manifest", "vggsound", str(vggsound / "vggsound.csv"), "--videos",
                 str(vggsound / "videos"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "train: 4 of 5 clips found, 1 missing" in printed and "test: 2 of 3 clips found" in printed
    train, test = read_manifest(out / "train.csv"), read_manifest(out / "test.csv")
    assert [r["id"] for r in train] == ["-Ab_cD3fG4h_10", "zz9_0", "tr3_20", "tr4_30"]
    assert (out / train[0]["path"]).resolve() == (vggsound / "videos" / "-Ab_cD3fG4h_000010.mp4").resolve()
    assert not train[0]["path"].startswith("/")                   # relative to the manifest
    assert all((out / r["path"]).exists() for r in train + test)
    assert train[1]["label"] == "engine accelerating, revving, vroom"
    assert (train[0]["start"], train[0]["end"]) == ("", "")        # a clip file is the segment
    assert (train[1]["start"], train[1]["end"]) == ("0", "10")      # a whole video: 10 s from start
    assert vocab(out) == {"label": ["cat purring", "dog barking", "engine accelerating, revving, vroom"]}
    missing = (out / "missing.txt").read_text().splitlines()
    assert [m.split("\t")[:2] for m in missing] == [["train", "gone1"], ["test", "gone2"]]


def test_vggsound_finetune_and_evaluate_report_top1(vggsound, tmp_path, capsys):
    out = tmp_path / "m"
    assert main(["manifest", "vggsound", str(vggsound / "vggsound.csv"), "--videos",
                 str(vggsound / "videos"), "--out", str(out)]) == 0
    run, metrics = finetune_and_evaluate(out, "vggsound", "av", tmp_path, capsys)
    assert 0.0 <= metrics["top1"] <= 1.0 and metrics["clips_evaluated"] == 2
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["train"]["base_lr"] == 0.8 and cfg["train"]["lr_batch"] == 64
    # --vocab keeps the full vocabulary, including the class only the test split has.
    assert json.loads((run / "vocab.json").read_text())["vocab"] == vocab(out)


# ---- AudioSet ----------------------------------------------------------------------------------

CLASSES = [("/m/09x0r", "Speech"), ("/m/05zppz", "Male speech, man speaking"),
           ("/m/0ytgt", "Child speech, kid speaking"), ("/m/068hy", "Animal")]


def segments(path, rows, header="# YTID, start_seconds, end_seconds, positive_labels"):
    lines = ["# Segments csv created Sun Mar  5 10:54:31 2017",
             "# num_ytids=22160, num_segs=22160, num_unique_labels=527, num_positive_labels=52882",
             header]
    lines += [f'{ytid}, {s:.3f}, {e:.3f}, "{mids}"' for ytid, s, e, mids in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def audioset(tmp_path_factory):
    root = tmp_path_factory.mktemp("audioset")
    videos = root / "videos"
    with open(root / "class_labels_indices.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["index", "mid", "display_name"])
        writer.writerows([(i, mid, name) for i, (mid, name) in enumerate(CLASSES)])
    segments(root / "balanced_train_segments.csv", [
        ("--PJHxphWEs", 30, 40, "/m/09x0r,/m/05zppz"),   # {ytid}_{start_ms}_{end_ms}
        ("abcdefghijk", 0.2, 1.0, "/m/068hy"),           # Y{ytid}.mp4: the whole (1.2 s) video
        ("tr3", 10, 20, "/m/0ytgt,/m/09x0r"),            # {ytid}_{start}_{end}
        ("tr4", 20, 30, "/m/068hy"),
        ("deleted1", 0, 10, "/m/068hy"),
        ("deleted2", 0, 10, "/m/09x0r")])
    segments(root / "eval_segments.csv", [("ev1", 5, 15, "/m/09x0r,/m/068hy"),
                                          ("ev2", 0, 10, "/m/068hy"), ("deleted3", 1, 11, "/m/068hy")])
    video(videos / "--PJHxphWEs_30000_40000.mp4")
    video(videos / "Yabcdefghijk.mp4")
    video(videos / "tr3_10_20.mp4")
    video(videos / "tr4_20000_30000.mp4")
    video(videos / "ev1_000005.mp4")
    video(videos / "ev2_0_10.mp4")
    return root


def audioset_args(root, out):
    return ["manifest", "audioset", str(root / "balanced_train_segments.csv"),
            str(root / "eval_segments.csv"), str(root / "class_labels_indices.csv"),
            "--videos", str(root / "videos"), "--out", str(out)]


def test_audioset_manifests_keep_the_official_class_order(audioset, tmp_path, capsys):
    out = tmp_path / "m"
    assert main(audioset_args(audioset, out)) == 0
    assert "train: 4 of 6 clips found, 2 missing (33.3 %)" in capsys.readouterr().out
    train, test = read_manifest(out / "train.csv"), read_manifest(out / "test.csv")
    assert train[0]["labels"] == "Speech;Male speech, man speaking"
    assert train[1]["path"].endswith("Yabcdefghijk.mp4")               # the whole video:
    assert (train[1]["start"], train[1]["end"]) == ("0.2", "1")        # its segment
    assert (train[0]["start"], train[0]["end"]) == ("", "")
    assert [r["labels"] for r in test] == ["Speech;Animal", "Animal"]
    assert vocab(out) == {"labels": [name for _, name in CLASSES]}   # index order, not sorted
    assert len((out / "missing.txt").read_text().splitlines()) == 3


def test_audioset_finetune_and_evaluate_report_map(audioset, tmp_path, capsys):
    out = tmp_path / "m"
    assert main(audioset_args(audioset, out)) == 0
    run, metrics = finetune_and_evaluate(out, "audioset", "audio", tmp_path, capsys)
    assert 0.0 < metrics["mAP"] <= 1.0 and metrics["clips_evaluated"] == 2
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["finetune"]["label_column"] == "labels" and cfg["train"]["lr_batch"] == 128


# ---- Epic Kitchens-100 ---------------------------------------------------------------------------

EPIC_HEADER = ["narration_id", "participant_id", "video_id", "narration_timestamp", "start_timestamp",
               "stop_timestamp", "start_frame", "stop_frame", "narration", "verb", "verb_class",
               "noun", "noun_class", "all_nouns", "all_noun_classes"]


def epic_rows(path, rows):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(EPIC_HEADER)
        for nid, vid, start, stop, verb, noun in rows:
            writer.writerow([nid, vid.split("_")[0], vid, "00:00:00.00", start, stop, 1, 50,
                             "take plate", "take", verb, "plate", noun, "['plate']", f"[{noun}]"])
    return path


@pytest.fixture(scope="module")
def epic(tmp_path_factory):
    root = tmp_path_factory.mktemp("epic")
    epic_rows(root / "EPIC_100_train.csv", [
        ("P01_01_0", "P01_01", "00:00:00.10", "00:00:01.00", 0, 2),
        ("P01_01_1", "P01_01", "00:00:00.50", "00:00:01.15", 1, 0),
        ("P02_03_0", "P02_03", "00:00:00.00", "00:00:00.90", 2, 1),
        ("P02_03_1", "P02_03", "00:00:00.20", "00:00:01.10", 0, 3),
        ("P09_09_0", "P09_09", "00:00:00.00", "00:00:01.00", 1, 1)])      # video not downloaded
    epic_rows(root / "EPIC_100_validation.csv", [
        ("P01_01_9", "P01_01", "00:00:00.05", "00:00:00.95", 1, 2),
        ("P02_03_9", "P02_03", "00:00:00.30", "00:00:01.05", 2, 3)])
    for kind, keys in (("verb", ["take", "put", "open"]), ("noun", ["tap", "plate", "cup", "pan"])):
        with open(root / f"EPIC_100_{kind}_classes.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["id", "key", "instances", "category"])
            writer.writerows([(i, k, "['x']", "c") for i, k in enumerate(keys)])
    video(root / "videos" / "P01" / "videos" / "P01_01.MP4")
    video(root / "videos" / "P02_03.mp4")
    return root


def epic_args(root, out, names=True):
    files = ["EPIC_100_train.csv", "EPIC_100_validation.csv"]
    files += ["EPIC_100_verb_classes.csv", "EPIC_100_noun_classes.csv"] if names else []
    return ["manifest", "epic-kitchens", *[str(root / f) for f in files],
            "--videos", str(root / "videos"), "--out", str(out)]


def test_epic_kitchens_rows_are_segments_of_long_videos(epic, tmp_path, capsys):
    out = tmp_path / "m"
    assert main(epic_args(epic, out)) == 0
    assert "train: 4 of 5 clips found, 1 missing" in capsys.readouterr().out
    train = read_manifest(out / "train.csv")
    assert [(r["id"], r["verb"], r["noun"], r["start"], r["end"]) for r in train[:2]] == [
        ("P01_01_0", "take", "cup", "0.1", "1"), ("P01_01_1", "put", "tap", "0.5", "1.15")]
    assert train[0]["path"].endswith("P01/videos/P01_01.MP4") and train[2]["path"].endswith("P02_03.mp4")
    assert vocab(out) == {"verb": ["take", "put", "open"], "noun": ["tap", "plate", "cup", "pan"]}
    # Without the class files the indices are the names, in index order.
    bare = tmp_path / "bare"
    assert main(epic_args(epic, bare, names=False)) == 0
    assert vocab(bare) == {"verb": ["0", "1", "2"], "noun": ["0", "1", "2", "3"]}
    assert read_manifest(bare / "train.csv")[0]["noun"] == "2"


def test_epic_kitchens_finetune_and_evaluate_report_verb_noun_action(epic, tmp_path, capsys):
    out = tmp_path / "m"
    assert main(epic_args(epic, out)) == 0
    run, metrics = finetune_and_evaluate(out, "epic-kitchens", "video", tmp_path, capsys)
    assert {"verb_top1", "noun_top1", "action_top1"} <= set(metrics)
    assert metrics["clips_evaluated"] == 2
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["finetune"]["label_column"] == "verb,noun" and cfg["train"]["base_lr"] == 1.2


# ---- naming schemes and bad input -----------------------------------------------------------------

def test_files_named_by_id_that_are_too_short_are_taken_as_the_segments(tmp_path, capsys):
    """PANNs' AudioSet downloader saves just the 10 s segment as Y{ytid}.mp4: such files end before
    their segment does, so they are the segments, not whole videos."""
    with open(tmp_path / "class_labels_indices.csv", "w", newline="") as f:
        csv.writer(f).writerows([("index", "mid", "display_name"), (0, "/m/a", "A")])
    segments(tmp_path / "eval_segments.csv", [(f"id{i}", 30, 40, "/m/a") for i in range(3)])
    for i in range(3):
        video(tmp_path / "v" / f"Yid{i}.mp4")
    out = tmp_path / "m"
    assert main(["manifest", "audioset", str(tmp_path / "eval_segments.csv"),
                 str(tmp_path / "class_labels_indices.csv"), "--videos", str(tmp_path / "v"),
                 "--out", str(out)]) == 0
    assert "3 files named by the YouTube id alone" in capsys.readouterr().out
    assert [(r["start"], r["end"]) for r in read_manifest(out / "test.csv")] == [("", "")] * 3


def test_pattern_names_the_files(tmp_path, capsys):
    (tmp_path / "vggsound.csv").write_text("aa,12,dog,train\nbb,3,cat,test\n")
    video(tmp_path / "v" / "nested" / "aa-12.mp4")
    video(tmp_path / "v" / "nested" / "bb-3.mp4")
    out = tmp_path / "m"
    assert main(["manifest", "vggsound", str(tmp_path / "vggsound.csv"), "--videos", str(tmp_path / "v"),
                 "--out", str(out), "--pattern", "nested/{ytid}-{start}"]) == 0
    row = read_manifest(out / "train.csv")[0]
    assert row["path"].endswith("nested/aa-12.mp4") and row["start"] == ""   # a clip: it has {start}
    # Nothing found at all: a wrong --videos or naming, exit 2 naming what to do.
    code = main(["manifest", "vggsound", str(tmp_path / "vggsound.csv"), "--videos", str(tmp_path / "v"),
                 "--out", str(tmp_path / "m2")])
    assert code == 2 and "--pattern" in capsys.readouterr().err


@pytest.mark.parametrize("case,expected", [
    ("vggsound_header", "vggsound.csv line 1"),
    ("audioset_header", "balanced_train_segments.csv line 3"),
    ("audioset_unknown_label", "balanced_train_segments.csv line 5: label id '/m/nope'"),
    ("epic_timestamp", "EPIC_100_train.csv line 3: start_timestamp '0:1.5'"),
    ("epic_unknown_class", "EPIC_100_train.csv line 2: noun_class 9"),
    ("epic_header", "EPIC_100_validation.csv line 1"),
])
def test_bad_annotations_exit_2_with_one_line_naming_file_and_line(case, expected, tmp_path, capsys):
    videos = tmp_path / "videos"
    videos.mkdir()
    if case == "vggsound_header":
        (tmp_path / "vggsound.csv").write_text("youtube_id,start_seconds,label,split\naa,1,dog,train\n")
        argv = ["vggsound", str(tmp_path / "vggsound.csv")]
    elif case.startswith("audioset"):
        with open(tmp_path / "class_labels_indices.csv", "w", newline="") as f:
            csv.writer(f).writerows([("index", "mid", "display_name"), (0, "/m/a", "A")])
        header = "# YTID, start, end" if case == "audioset_header" else \
            "# YTID, start_seconds, end_seconds, positive_labels"
        segments(tmp_path / "balanced_train_segments.csv",
                 [("aa", 0, 10, "/m/a"), ("bb", 0, 10, "/m/a,/m/nope")], header)
        argv = ["audioset", str(tmp_path / "balanced_train_segments.csv"),
                str(tmp_path / "class_labels_indices.csv")]
    else:
        start = "0:1.5" if case == "epic_timestamp" else "00:00:00.00"
        noun = 9 if case == "epic_unknown_class" else 0
        epic_rows(tmp_path / "EPIC_100_train.csv", [("a", "P01_01", "00:00:00.00", "00:00:01.00", 0, noun),
                                                     ("b", "P01_01", start, "00:00:02.00", 0, 0)])
        (tmp_path / "EPIC_100_validation.csv").write_text("narration_id,video_id\nx,P01_01\n"
                                                          if case == "epic_header" else
                                                          ",".join(EPIC_HEADER) + "\n")
        with open(tmp_path / "EPIC_100_noun_classes.csv", "w", newline="") as f:
            csv.writer(f).writerows([("id", "key"), (0, "tap")])
        argv = ["epic-kitchens", str(tmp_path / "EPIC_100_train.csv"),
                str(tmp_path / "EPIC_100_validation.csv"), str(tmp_path / "EPIC_100_noun_classes.csv")]
    code = main(["manifest", *argv, "--videos", str(videos), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert expected in err
