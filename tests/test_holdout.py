"""Checkpoints are never chosen on the test split (issue #21, item 1): `avmae manifest` carves a
stratified, deterministic val.csv out of the training annotations; README's dataset sequences
validate on it; `avmae evaluate RUN` evaluates the last checkpoint unless told `--checkpoint best`."""

import csv
import re
import shlex
from collections import Counter
from pathlib import Path


from avmae.cli import main

README = Path(__file__).resolve().parents[1] / "README.md"


def read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")  # clip-named files are never opened by `avmae manifest`


def vggsound_annotations(root, per_class):
    """vggsound.csv with per_class[c] training clips of class c and 3 test clips per class."""
    rows = []
    for c, n in enumerate(per_class):
        for i in range(n):
            rows.append((f"tr{c}x{i}", i * 10, f"class {c}", "train"))
        for i in range(3):
            rows.append((f"te{c}x{i}", i * 10, f"class {c}", "test"))
    with open(root / "vggsound.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    for ytid, start, _, _ in rows:
        touch(root / "videos" / f"{ytid}_{start:06d}.mp4")
    return rows


def manifest(root, out, *extra):
    return main(["manifest", "vggsound", str(root / "vggsound.csv"), "--videos", str(root / "videos"),
                 "--out", str(out), *extra])


def test_val_is_a_stratified_deterministic_hold_out_of_train_never_of_test(tmp_path, capsys):
    per_class = [100, 60, 40, 20, 1]
    vggsound_annotations(tmp_path, per_class)
    assert manifest(tmp_path, tmp_path / "a") == 0
    assert "val: 11 of the training clips held out" in capsys.readouterr().out
    train, val, test = (read(tmp_path / "a" / f"{s}.csv") for s in ("train", "val", "test"))
    ids = {s: {r["id"] for r in rows} for s, rows in (("train", train), ("val", val), ("test", test))}
    assert not ids["val"] & ids["train"] and not ids["val"] & ids["test"]
    assert all(i.startswith("tr") for i in ids["val"])                 # only training clips
    assert len(ids["train"]) + len(ids["val"]) == sum(per_class)       # nothing lost
    assert len(ids["test"]) == 3 * len(per_class)                      # test untouched
    # Stratified: each class gives its 5 % share (+-1), a lone clip stays in train.
    held = Counter(r["label"] for r in val)
    for c, n in enumerate(per_class):
        assert abs(held[f"class {c}"] - 0.05 * n) <= 1, (c, held)
    assert held["class 4"] == 0 and held["class 0"] == 5
    # Deterministic: the same annotations give the same hold-out (and file) again.
    assert manifest(tmp_path, tmp_path / "b") == 0
    assert (tmp_path / "a" / "val.csv").read_bytes() == (tmp_path / "b" / "val.csv").read_bytes()
    # --val-fraction sets the share.
    assert manifest(tmp_path, tmp_path / "c", "--val-fraction", "0.2") == 0
    assert len(read(tmp_path / "c" / "val.csv")) == 44


def test_audioset_hold_out_is_stratified_by_each_clips_rarest_label(tmp_path):
    from avmae.data import hold_out
    from avmae.data.annotations import Row
    # 40 clips of "Speech" alone, 20 of "Speech;Bird" (Bird is the rarer label): a clip's stratum
    # is its rarest label, so the hold-out takes Bird clips in Bird's share.
    rows = [Row("train", f"s{i}", 0, 10, {"labels": "Speech"}, "") for i in range(40)]
    rows += [Row("train", f"b{i}", 0, 10, {"labels": "Speech;Bird"}, "") for i in range(20)]
    chosen = hold_out(rows, "audioset", 0.1)
    assert sorted(Counter(rows[i].id[0] for i in chosen).items()) == [("b", 2), ("s", 4)]
    assert chosen == hold_out(list(rows), "audioset", 0.1)


# ---- README: no sequence validates on the test split ----------------------------------------

def commands(block):
    """The shell commands of a code block, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", block)
    out = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            out.append(shlex.split(line))
    return out


def option(argv, name):
    return argv[argv.index(name) + 1] if name in argv else None


def test_readme_sequences_never_validate_on_the_test_split():
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S)
    finetunes = 0
    for block in blocks:
        cmds = commands(block)
        evaluated = [option(c, "--data") for c in cmds if "evaluate" in c]
        for argv in cmds:
            if "finetune" not in argv or "--val" not in argv:
                continue
            val = option(argv, "--val")
            finetunes += 1
            assert "test" not in Path(val).name, f"README finetunes with --val {val} (a test split)"
            assert val not in evaluated, f"README validates and evaluates on the same data {val}"
    assert finetunes >= 3  # the VGGSound, AudioSet and Epic-Kitchens sequences at least
    text = README.read_text()
    for name in ("vgg", "as", "epic"):  # each dataset's hold-out is prepared and validated on
        assert f"data/{name}/val.csv" in text and f"--val shards/{name}-val" in text
