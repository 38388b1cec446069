"""`avmae quickstart` end to end in its reduced --fast form (the default takes ~10 minutes on two
cores: see README). The fast run is too short to learn anything, so only the pipeline is checked:
every stage ran the ordinary command, results.json has the schema, figures and curves exist."""

import json
import re
from pathlib import Path

import pytest

from avmae.cli import quickstart
from avmae.cli import main


@pytest.mark.slow
def test_fast_quickstart_runs_every_stage_and_writes_results(tmp_path, capsys):
    out = tmp_path / "qs"
    assert main(["quickstart", "--out", str(out), "--fast"]) == 0
    printed = capsys.readouterr().out
    # every stage, in order, each announced by the command a user would type
    positions = [printed.index(f"$ avmae {c}") for c in
                 ("synth", "prepare", "pretrain", "probe", "finetune", "evaluate", "visualize")]
    assert positions == sorted(positions)
    K = quickstart.FAST.finetune_seeds
    assert len(re.findall(r"^\$ avmae finetune ", printed, re.M)) == 6 * K
    assert len(re.findall(r"^\$ avmae evaluate ", printed, re.M)) == 6 * K
    assert "--init scratch --preset tiny-4l-cpu" in printed
    assert all(f"=== [{i}/7]" in printed for i in range(1, 8))
    assert f"$ avmae probe {out / 'runs' / 'avmae'} --data {out / 'shards' / 'labelled'}" in printed
    assert "$ avmae probe scratch --preset tiny-4l-cpu --seed 0" in printed

    results = json.loads((out / "results.json").read_text())
    assert list(results) == ["random_init", "avmae", "spread", "runs", "probe"]
    probes = results.pop("probe")
    spread, runs_top1 = results.pop("spread"), results.pop("runs")
    for init in ("random_init", "avmae"):           # each cell: the mean and sd of its K runs
        for m in ("audio", "video", "av"):
            values = runs_top1[init][m]
            assert len(values) == K
            assert results[init][m] == pytest.approx(sum(values) / K, abs=0.01)
            mean = sum(values) / K
            sd = (sum((v - mean) ** 2 for v in values) / (K - 1)) ** 0.5
            assert spread[init][m] == pytest.approx(sd, abs=0.01)
    assert list(probes) == ["random_init", "avmae"]
    for row in probes.values():
        assert list(row) == ["linear", "knn"]
        assert all(isinstance(v, float) and 0.0 <= v <= 100.0 for v in row.values())
    for row in results.values():
        assert list(row) == ["audio", "video", "av"]
        assert all(isinstance(v, float) and 0.0 <= v <= 100.0 for v in row.values())
    # the printed table holds the same numbers
    r, a = results["random_init"], results["avmae"]
    sr, sa = spread["random_init"], spread["avmae"]
    assert (f"| Random init | {r['audio']:.1f} +- {sr['audio']:.1f} | {r['video']:.1f} +- "
            f"{sr['video']:.1f} | {r['av']:.1f} +- {sr['av']:.1f} |") in printed
    p = probes["avmae"]
    assert (f"| AV-MAE | {a['audio']:.1f} +- {sa['audio']:.1f} | {a['video']:.1f} +- {sa['video']:.1f} | "
            f"{a['av']:.1f} +- {sa['av']:.1f} | {p['linear']:.1f} | {p['knn']:.1f} |") in printed

    runs = out / "runs"
    assert list((runs / "avmae" / "figures").glob("reconstruction_step*.png"))
    assert (out / "figures" / "reconstruction_test_clip.png").stat().st_size > 0
    assert (runs / "avmae" / "loss_curve.png").exists()
    assert len(list(runs.glob("*_*/loss_curve.png"))) == 6 * K
    shown = re.findall(r"^  (\S+\.png)$", printed, re.M)          # every picture path printed
    assert len(shown) >= 8 and all(Path(p).exists() for p in shown)

    # the finetuned models really are what their names say
    for init in ("random_init", "avmae"):
        for m in ("audio", "video", "av"):
            seeds = set()
            for k in range(K):
                cfg = json.loads((runs / f"{init}_{m}_s{k}" / "config.json").read_text())
                assert cfg["finetune"]["modality"] == m
                assert cfg["train"]["steps"] == quickstart.FAST.finetune_steps
                seeds.add(cfg["train"]["seed"])
            assert len(seeds) == K                       # K different finetuning draws
    # pretraining saw every training clip, finetuning only the labelled subset
    assert f"--data {out / 'shards' / 'labelled'}" in printed
    assert re.search(rf"avmae pretrain .*--data {out / 'shards' / 'train'} ", printed)
    meta = {s: json.loads((out / "shards" / s / "meta.json").read_text())
            for s in ("train", "labelled", "val", "test")}
    assert meta["labelled"]["clips"] == 8 * quickstart.FAST.labelled_per_class < meta["train"]["clips"]
    assert meta["val"]["clips"] == 8 * quickstart.FAST.val_per_class
    # finetuning validates on its own split: training clips, none of them labelled for finetuning
    labelled = (out / "data" / "labelled.csv").read_text().splitlines()[1:]
    val = (out / "data" / "val.csv").read_text().splitlines()[1:]
    train = (out / "data" / "train.csv").read_text().splitlines()[1:]
    assert not set(labelled) & set(val) and set(val) <= set(train)
    finetunes = re.findall(r"^\$ avmae finetune .*$", printed, re.M)
    assert all(f"--val {out / 'shards' / 'val'} " in line for line in finetunes)
    assert meta["test"]["clips"] == quickstart.FAST.test_clips
    assert meta["train"]["clips"] == quickstart.FAST.clips - quickstart.FAST.test_clips
    log = (runs / "avmae_av_s0" / "metrics.jsonl").read_text()
    assert str(runs / "avmae") in printed and "val_top1" in log

    # a second run into the same folder is refused unless asked to overwrite
    assert main(["quickstart", "--out", str(out), "--fast"]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_table_and_verdict_report_the_two_claims():
    results = {"random_init": {"audio": 40.0, "video": 35.0, "av": 60.0},
               "avmae": {"audio": 45.0, "video": 50.0, "av": 48.0}}
    text = quickstart.table(results, quickstart.Plan(), test_clips=96)
    assert "| Random init | 40.0 | 35.0 | 60.0 |" in text and "96 clips" in text
    verdict = quickstart.verdict(results)
    assert "Random init: audiovisual 60.0 > max(audio 40.0, video 35.0)" in verdict
    assert "AV-MAE: audiovisual 48.0 is NOT above max(audio 45.0, video 50.0)" in verdict
    assert "-12.0 points" in verdict
    assert "Frozen" not in text  # the probe columns appear only with probe results


def test_the_probe_columns_sit_beside_each_row():
    results = {"random_init": {"audio": 40.0, "video": 35.0, "av": 60.0},
               "avmae": {"audio": 45.0, "video": 50.0, "av": 48.0},
               "probe": {"random_init": {"linear": 30.0, "knn": 25.0},
                         "avmae": {"linear": 52.5, "knn": 41.0}}}
    text = quickstart.table(results, quickstart.Plan(), test_clips=96)
    assert ("| Pretraining | Audio only | Video only | Audiovisual | Frozen AV, linear | "
            "Frozen AV, k-NN |") in text
    assert "| Random init | 40.0 | 35.0 | 60.0 | 30.0 | 25.0 |" in text
    assert "| AV-MAE | 45.0 | 50.0 | 48.0 | 52.5 | 41.0 |" in text
    assert "frozen audiovisual features: linear +22.5, k-NN +16.0 points" in quickstart.verdict(results)


def test_labelled_subset_keeps_the_first_clips_of_each_class(tmp_path):
    (tmp_path / "data").mkdir()
    rows = [("a.mp4", "x"), ("b.mp4", "y"), ("c.mp4", "x"), ("d.mp4", "x"), ("e.mp4", "y"), ("f.mp4", "z")]
    (tmp_path / "data" / "train.csv").write_text(
        "path,label,verb\n" + "".join(f"clips/{p},{lab},v\n" for p, lab in rows))
    kept = quickstart.labelled_subset(tmp_path / "data" / "train.csv", tmp_path / "data" / "l.csv", 2)
    assert kept == 5
    assert (tmp_path / "data" / "l.csv").read_text().splitlines() == [
        "path,label,verb", "clips/a.mp4,x,v", "clips/b.mp4,y,v", "clips/c.mp4,x,v", "clips/e.mp4,y,v",
        "clips/f.mp4,z,v"]
    # skip: the next clips of each class after the first `skip` (the quickstart's val.csv)
    assert quickstart.labelled_subset(tmp_path / "data" / "train.csv", tmp_path / "data" / "v.csv",
                                      1, skip=2) == 1
    assert (tmp_path / "data" / "v.csv").read_text().splitlines() == ["path,label,verb",
                                                                      "clips/d.mp4,x,v"]
    # written elsewhere, the paths still name the same files
    quickstart.labelled_subset(tmp_path / "data" / "train.csv", tmp_path / "l.csv", 1)
    assert (tmp_path / "l.csv").read_text().splitlines()[1] == \
        f"{(tmp_path / 'data' / 'clips' / 'a.mp4').resolve()},x,v"


def test_a_test_split_as_large_as_the_dataset_is_refused_in_one_line(tmp_path, capsys):
    assert main(["quickstart", "--out", str(tmp_path / "qs"), "--clips", "400"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--test-clips 400" in err
    assert not (tmp_path / "qs" / "data").exists()


def test_the_default_split_is_304_training_and_400_test_clips():
    from avmae.cli.synth import split_plan
    plan = quickstart.Plan()
    _, is_test = split_plan(plan.clips, 0, plan.test_fraction)
    assert (int(is_test.sum()), int((~is_test).sum())) == (400, 304)


def test_each_cell_is_the_mean_of_its_finetunings_and_margins_are_in_spreads():
    top1 = {"random_init": {"audio": [30.0, 34.0, 26.0], "video": [20.0, 20.0, 20.0],
                            "av": [40.0, 44.0, 36.0]},
            "avmae": {"audio": [33.0, 33.0, 33.0], "video": [25.0, 27.0, 23.0],
                      "av": [50.0, 47.0, 53.0]}}
    results = quickstart.summarise(top1)
    assert results["random_init"] == {"audio": 30.0, "video": 20.0, "av": 40.0}
    assert results["spread"]["random_init"] == {"audio": 4.0, "video": 0.0, "av": 4.0}  # sample sd
    assert results["spread"]["avmae"]["av"] == 3.0 and results["runs"] is top1
    # (50 - 40) / sqrt((3^2 + 4^2) / 2)
    assert quickstart.margin(results, ("avmae", "av"), ("random_init", "av")) == \
        pytest.approx(10 / (12.5 ** 0.5))
    verdict = quickstart.verdict(results)
    assert "Random init: audiovisual 40.0 > max(audio 30.0, video 20.0) (+2.5 spreads)" in verdict
    assert "+10.0 points (+2.8 spreads)" in verdict
    # one finetuning per cell: no spread, no margin
    one = quickstart.summarise({i: {m: [v[0]] for m, v in r.items()} for i, r in top1.items()})
    assert one["spread"]["avmae"]["av"] == 0.0
    assert quickstart.margin(one, ("avmae", "av"), ("random_init", "av")) is None
    text = quickstart.table(results, quickstart.Plan(), test_clips=400)
    assert "| Random init | 30.0 +- 4.0 | 20.0 +- 0.0 | 40.0 +- 4.0 |" in text
