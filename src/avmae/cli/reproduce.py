"""`avmae reproduce TABLE`: run the grid of one of the paper's ablation tables at a chosen scale.

    avmae reproduce 3 [--data DIR] [--out OUT] [--seed S] [--preset tiny-4l-cpu]
                      [--pretrain-steps N] [--finetune-steps N] [--labelled-per-class N]
                      [--set key=value ...] [--finetune-set key=value ...]

For every row of the table an AV-MAE is pretrained with the row's settings (`avmae pretrain`), then
finetuned the way the table reports (`avmae finetune`: audio-only AST, video-only ViViT and/or
audiovisual MBT columns) and evaluated on the test split (`avmae evaluate`, the last checkpoint, one
centre view). OUT/table_N.md holds the measured numbers beside the paper's; OUT/table_N.json the
numbers. Each command is printed before it runs. An OUT that already holds table N is only
written with --resume (cells already measured are reused, an interrupted pretraining or
finetuning continues from its checkpoint, so a stopped run continues where it stopped) or
--overwrite (the table's results and runs are removed; the prepared data is kept).

    table  varies                                       finetuning columns   paper setting
    1      encoder x decoder (Sec. 3.2-3.3)             audio, video, av     joint objective
    2      objective (Sec. 3.4)                         audio, video, av     early fusion, shared decoder
    3      AudioMAE / VideoMAE / AV-MAE                 audio, video, av     (a unimodal MAE initialises
                                                                             both MBT streams)
    8      video x audio mask ratios                    av                   separate enc., shared dec.
    9      audio mask ratio, audio-only pretraining     audio                separate enc., shared dec.
    10     video mask ratio, video-only pretraining     video                separate enc., shared dec.
    13     S, joint layers of mid-fusion                av                   shared decoder

Data: `--data DIR` holding the manifests DIR/train.csv and DIR/test.csv (`avmae quickstart`'s
DIR/data, or your own), prepared into OUT/shards; without --data the quickstart's synthetic dataset
(304 training and 400 test clips) is generated into OUT/data. --seed seeds that dataset and every
pretraining and finetuning run (train.seed), as the quickstart's --seed does: the AV-MAE row of
table 3 is then the quickstart's AV-MAE row of the same seed. As in the quickstart, pretraining
uses every training clip without its label and finetuning the labels of the first
--labelled-per-class clips of each class (0: all of them).

Rows the paper lists but the chosen model cannot have (for example S = 4 joint layers in a 4-layer
encoder, which leaves no separate layer) are marked impossible and skipped, with the reason.

Small numbers are expected: the paper's are ViT-B after 400 epochs on VGGSound; at the default
scale (the 4-layer CPU preset, minutes of CPU) the grid shows how the code runs each ablation, not
the paper's accuracy. The finetuning recipe is the quickstart's small-scale one (`--finetune-set`
adds to it).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from avmae.cli.arguments import positive_int
from avmae.checkpoint import step_checkpoints, step_name, writing
from avmae.config import ConfigError, PRESETS, build_config
from avmae.cli.quickstart import (FINETUNE_RECIPE, PRETRAIN_RECIPE, Plan, avmae, evaluate_last, labelled_subset,
                         set_args, synth_args)
from avmae.data import shards_current
from avmae.run_dir import claim_run_dir

COLUMN_TITLES = {"audio": "Audio-only", "video": "Video-only", "av": "Audiovisual"}


@dataclass
class Row:
    label: str
    sets: list[str]                      # pretraining overrides of this row
    paper: dict[str, float]              # column -> the paper's number


@dataclass
class Table:
    caption: str
    columns: list[str]
    rows: list[Row]
    sets: list[str] = field(default_factory=list)   # pretraining overrides shared by every row


@dataclass
class Scale:
    """How a table is run: model size, steps, labels, extra overrides, the data."""
    preset: str
    pretrain_steps: int
    finetune_steps: int
    labelled_per_class: int
    overrides: list[str]
    finetune_overrides: list[str]
    data: str | None
    seed: int = 0

    def command(self, number: int) -> str:
        return (f"avmae reproduce {number}" + (f" --data {self.data}" if self.data else "")
                + f" --seed {self.seed}"
                + f" --preset {self.preset} --pretrain-steps {self.pretrain_steps} --finetune-steps "
                f"{self.finetune_steps} --labelled-per-class {self.labelled_per_class}"
                + "".join(f" --set {s}" for s in self.overrides)
                + "".join(f" --finetune-set {s}" for s in self.finetune_overrides))


def _row(label: str, sets: list[str], columns: list[str], numbers: list[float]) -> Row:
    return Row(label, sets, dict(zip(columns, numbers)))


AVC = ["audio", "video", "av"]
TABLES: dict[int, Table] = {
    1: Table("Table 1. Pretraining architectures (joint reconstruction objective)", AVC, [
        _row("Early fusion / Shared", ["model.encoder=early", "model.decoder=shared"], AVC, [55.5, 46.5, 62.2]),
        _row("Early fusion / Separate", ["model.encoder=early", "model.decoder=separate"], AVC, [55.7, 43.6, 61.1]),
        _row("Separate / Shared", ["model.encoder=separate", "model.decoder=shared"], AVC, [55.4, 48.9, 63.0]),
        _row("Shared / Separate", ["model.encoder=shared", "model.decoder=separate"], AVC, [55.4, 45.9, 61.3]),
        _row("Mid-fusion / Shared", ["model.encoder=mid", "model.decoder=shared"], AVC, [55.8, 48.5, 63.5]),
        _row("Mid-fusion / Early (joint)", ["model.encoder=mid", "model.decoder=joint"], AVC, [55.5, 48.5, 63.3]),
    ], sets=["model.objective=joint"]),
    2: Table("Table 2. Pretraining objectives (early fusion encoder, shared decoder)", AVC, [
        _row("Joint reconstruction", ["model.objective=joint"], AVC, [55.5, 46.5, 62.2]),
        _row("Inpainting (video from audio)", ["model.objective=inpaint_video_from_audio"], AVC, [51.5, 39.9, 58.4]),
        _row("Inpainting (audio from video)", ["model.objective=inpaint_audio_from_video"], AVC, [52.5, 38.1, 58.2]),
        _row("Inpainting (both modalities)", ["model.objective=inpaint_both"], AVC, [54.1, 38.6, 58.4]),
    ], sets=["model.encoder=early", "model.decoder=shared"]),
    3: Table("Table 3. Single-modality and audiovisual pretraining", AVC, [
        _row("AudioMAE", ["model.modalities=audio"], AVC, [55.7, 42.1, 58.3]),
        _row("VideoMAE", ["model.modalities=video"], AVC, [52.8, 49.3, 62.1]),
        _row("Audiovisual MAE", ["model.modalities=audio_video"], AVC, [55.8, 48.5, 63.5]),
    ]),
    8: Table("Table 8. Mask ratios, audiovisual pretraining (separate encoders, shared decoder); "
             "audiovisual finetuning", ["av"], [
        _row(f"video {v} / audio {a}", [f"model.mask_ratio_video={v}", f"model.mask_ratio_audio={a}"],
             ["av"], [acc])
        for v, accs in ((0.7, (62.4, 63.4, 62.2, 61.6)), (0.9, (63.3, 63.0, 63.5, 62.3)),
                        (0.95, (63.0, 63.0, 63.0, 62.8)))
        for a, acc in zip((0.3, 0.5, 0.7, 0.8), accs)
    ], sets=["model.encoder=separate", "model.decoder=shared"]),
    9: Table("Table 9. Audio mask ratio, audio-only pretraining and finetuning", ["audio"], [
        _row(f"audio {a}", [f"model.mask_ratio_audio={a}"], ["audio"], [acc])
        for a, acc in ((0.3, 55.1), (0.5, 55.7), (0.7, 55.5), (0.8, 55.3))
    ], sets=["model.modalities=audio", "model.encoder=separate", "model.decoder=shared"]),
    10: Table("Table 10. Video mask ratio, video-only pretraining and finetuning", ["video"], [
        _row(f"video {v}", [f"model.mask_ratio_video={v}"], ["video"], [acc])
        for v, acc in ((0.7, 49.1), (0.9, 49.3), (0.95, 49.5))
    ], sets=["model.modalities=video", "model.encoder=separate", "model.decoder=shared"]),
    13: Table("Table 13. S, the joint layers of the mid-fusion encoder (12-layer ViT-B in the "
              "paper); audiovisual finetuning", ["av"], [
        _row(f"S = {s}", [f"model.fusion_layers={s}"], ["av"], [acc])
        for s, acc in ((1, 63.4), (2, 63.5), (3, 63.2), (4, 63.1))
    ], sets=["model.encoder=mid", "model.decoder=shared"]),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("table", type=int, metavar="TABLE", help=f"one of {', '.join(map(str, TABLES))}")
    parser.add_argument("--data", default=None, metavar="DIR",
                        help="a folder with train.csv and test.csv (default: generate the synthetic "
                             "dataset into OUT/data)")
    parser.add_argument("--out", default=None, help="results folder (default ./reproduce)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the synthetic dataset and of every run (default %(default)s)")
    parser.add_argument("--preset", default="tiny-4l-cpu", help="model and input sizes (default %(default)s)")
    parser.add_argument("--pretrain-steps", type=positive_int, default=600, help="per row (default %(default)s)")
    parser.add_argument("--finetune-steps", type=positive_int, default=300, help="per cell (default %(default)s)")
    parser.add_argument("--clips", type=positive_int, default=Plan.clips,
                        help="synthetic clips when --data is not given (default %(default)s: the "
                             f"quickstart's {Plan.clips - Plan.test_clips} training and {Plan.test_clips} "
                             "test clips; other counts keep its test fraction)")
    parser.add_argument("--labelled-per-class", type=int, default=12,
                        help="finetune on the first N training clips of each class (pretraining uses "
                             "them all, unlabelled); 0: every training clip (default %(default)s)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="pretraining config override for every row (after the table's fixed "
                             "settings, before the row's own)")
    parser.add_argument("--finetune-set", dest="finetune_overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="finetuning override (after the small-scale recipe)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the table already in --out (measured cells are reused)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the table already in --out (its results and runs)")


def run(args: argparse.Namespace) -> int:
    reproduce(args.table, data=args.data, out=Path(args.out or "reproduce"), preset=args.preset,
              pretrain_steps=args.pretrain_steps, finetune_steps=args.finetune_steps,
              overrides=args.overrides, finetune_overrides=args.finetune_overrides, clips=args.clips,
              labelled_per_class=args.labelled_per_class, resume=args.resume,
              overwrite=args.overwrite, seed=args.seed)
    return 0


def impossible(preset: str, sets: list[str]) -> str | None:
    """Why a row's config cannot be built (the config's own one-line refusal), or None."""
    try:
        build_config(preset, sets)
    except ConfigError as err:
        return str(err)
    return None


def find_data(data: str | None, out: Path, preset: str, overrides: list[str], clips: int,
              labelled_per_class: int, seed: int = 0) -> tuple[Path, Path, Path]:
    """(pretraining shards: every training clip, finetuning shards: the labelled subset, test
    shards), prepared into OUT/shards from the manifests in --data or from the synthetic dataset."""
    if data is not None:
        manifests = Path(data)
        if not ((manifests / "train.csv").is_file() and (manifests / "test.csv").is_file()):
            raise ConfigError(f"--data {manifests} holds no train.csv and test.csv (manifests with a "
                              "`path` and a `label` column)")
    else:
        manifests = out / "data"
        if not (manifests / "test.csv").exists():
            avmae(synth_args(manifests, clips, Plan().test_fraction, seed))
    csvs = {"train": manifests / "train.csv", "test": manifests / "test.csv"}
    shards = out / "shards"
    if labelled_per_class > 0:
        csvs["labelled"] = out / "labelled.csv"
        before = csvs["labelled"].read_text() if csvs["labelled"].exists() else None
        kept = labelled_subset(csvs["train"], csvs["labelled"], labelled_per_class)
        if before is not None and before != csvs["labelled"].read_text():
            shutil.rmtree(shards / "labelled", ignore_errors=True)  # another subset: prepare again
        print(f"finetuning sees the labels of {kept} training clips (the first {labelled_per_class} "
              f"of each class): {csvs['labelled']}", flush=True)
    data_sets = [s for s in overrides if s.startswith("data.")]  # what shapes the shards
    for split, manifest in csvs.items():
        if not shards_current(shards / split):  # absent, or an older format: prepare again
            avmae(["prepare", str(manifest), "--out", str(shards / split), "--preset", preset,
                   "--overwrite", *set_args(data_sets)])
    return shards / "train", shards / ("labelled" if labelled_per_class > 0 else "train"), shards / "test"


def _slug(label: str) -> str:
    """A row's folder name: 'video 0.9 / audio 0.5' -> 'video_0.9_audio_0.5'."""
    return re.sub(r"[^a-z0-9.]+", "_", label.lower()).strip("_")


def reproduce(number: int, *, data: str | None = None, out: Path = Path("reproduce"),
              preset: str = "tiny-4l-cpu", pretrain_steps: int = 600, finetune_steps: int = 300,
              overrides: list[str] | None = None, finetune_overrides: list[str] | None = None,
              clips: int = Plan.clips, labelled_per_class: int = 12, resume: bool = False,
              overwrite: bool = False, seed: int = 0) -> dict:
    """Run table `number`'s grid; returns {row label: {column: accuracy % | None}}. An `out`
    holding this table is continued (resume=True) or replaced (overwrite=True), else refused."""
    if number not in TABLES:
        raise ConfigError(f"table {number} is not one of {', '.join(map(str, TABLES))} (the paper's "
                          "ablations: 1, 2, 3, 8-10, 13)")
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset '{preset}'; choose one of: {', '.join(PRESETS)}")
    if pretrain_steps < 1 or finetune_steps < 1:
        raise ConfigError("--pretrain-steps and --finetune-steps must be >= 1")
    if labelled_per_class < 0:
        raise ConfigError("--labelled-per-class must be >= 0 (0: every training clip)")
    overrides, finetune_overrides = list(overrides or []), list(finetune_overrides or [])
    scale = Scale(preset, pretrain_steps, finetune_steps, labelled_per_class, overrides,
                  finetune_overrides, data, seed)
    table = TABLES[number]
    build_config(preset, [*table.sets, *overrides])  # a bad --set fails now, not after an hour
    # The table's own files: its results and the runs of its rows (the prepared data is shared).
    files = (f"table_{number}.json", f"table_{number}.md",
             *[f"runs/{_slug(row.label)}" for row in table.rows])
    with claim_run_dir(out, resume=resume, overwrite=overwrite, files=files,
                       what=f"table {number}"):
        earlier = out / f"table_{number}.json"
        if earlier.exists():  # measured cells are reused: only at the same scale
            stored = json.loads(earlier.read_text())
            if {k: stored.get(k) for k in asdict(scale)} != asdict(scale):
                raise ConfigError(f"{out} holds table {number} measured as "
                                  f"`{stored.get('command')}`; to run it at another scale choose "
                                  "another --out (or replace it with --overwrite)")
        return _reproduce(number, table, scale, data, out, preset, pretrain_steps, finetune_steps,
                          overrides, finetune_overrides, clips, labelled_per_class, seed)


def _reproduce(number: int, table: Table, scale: Scale, data: str | None, out: Path, preset: str,
               pretrain_steps: int, finetune_steps: int, overrides: list[str],
               finetune_overrides: list[str], clips: int, labelled_per_class: int, seed: int) -> dict:
    start = time.perf_counter()
    train, labelled, test = find_data(data, out, preset, overrides, clips, labelled_per_class, seed)

    results: dict[str, dict[str, float | None]] = {}
    notes: dict[str, str] = {}
    for i, row in enumerate(table.rows, 1):
        # --seed before the overrides (an explicit train.seed wins); each cell's finetuning
        # inherits train.seed from its row's checkpoint
        sets = [*PRETRAIN_RECIPE, f"train.seed={seed}", *table.sets, *overrides, *row.sets]
        print(f"\n=== table {number}, row {i}/{len(table.rows)}: {row.label} "
              f"({time.perf_counter() - start:.0f} s so far)", flush=True)
        why = impossible(preset, sets)
        if why is not None:
            print(f"impossible with preset {preset}: {why}", flush=True)
            notes[row.label] = why
            results[row.label] = {c: None for c in table.columns}
            continue
        row_dir = out / "runs" / _slug(row.label)
        pretrained = row_dir / "pretrain"
        if not (pretrained / "checkpoints" / step_name(pretrain_steps) / "COMPLETE").exists():
            avmae(["pretrain", "--preset", preset, "--data", str(train), "--out", str(pretrained),
                   *continue_flag(pretrained),
                   *set_args([*sets, f"train.steps={pretrain_steps}",
                           f"train.checkpoint_every={pretrain_steps}"])])
        results[row.label] = {}
        for column in table.columns:
            results[row.label][column] = _cell(row_dir, pretrained, column, labelled, test,
                                               finetune_steps, finetune_overrides)
        _write(number, table, results, notes, out, scale, time.perf_counter() - start)
    path = _write(number, table, results, notes, out, scale, time.perf_counter() - start)
    print("\n" + path.read_text(), flush=True)
    return results


def _cell(row_dir: Path, pretrained: Path, column: str, train: Path, test: Path, steps: int,
          finetune_overrides: list[str]) -> float:
    """Finetune one column from the row's pretrained model, evaluate its last checkpoint."""
    run_dir = row_dir / column
    done = run_dir / "test_metrics.json"
    if done.exists():
        return json.loads(done.read_text())["top1_percent"]
    avmae(["finetune", "--init", str(pretrained), "--modality", column, "--data", str(train),
           "--val", str(test), "--out", str(run_dir), *continue_flag(run_dir),
           *set_args([*FINETUNE_RECIPE, f"train.steps={steps}", f"train.checkpoint_every={steps}",
                   *finetune_overrides])])
    metrics = evaluate_last(run_dir, test)
    value = round(100.0 * metrics["top1"], 2)
    with writing(done):
        done.write_text(json.dumps({**metrics, "top1_percent": value}) + "\n")
    return value


def continue_flag(run_dir: Path) -> list[str]:
    """How to run a row's pretraining or a cell's finetuning again after an interruption:
    --resume from its checkpoint, --overwrite when it stopped before writing one."""
    if step_checkpoints(run_dir):
        return ["--resume"]
    return ["--overwrite"] if run_dir.exists() else []


def markdown(number: int, table: Table, results: dict, notes: dict, scale: Scale,
             seconds: float) -> str:
    labels = (f"{scale.labelled_per_class} labelled clips per class" if scale.labelled_per_class
              else "every training clip")
    head = " | ".join(f"{COLUMN_TITLES[c]} (measured / paper)" for c in table.columns)
    lines = [f"# {table.caption}", "",
             f"Measured: top-1 % on the test split, preset `{scale.preset}`, {scale.pretrain_steps} "
             f"pretraining and {scale.finetune_steps} finetuning steps per model, finetuned on "
             f"{labels}, last checkpoint, one centre view. "
             f"Paper: ViT-B, 400 pretraining epochs on VGGSound, top-1 %.", "",
             f"| Row | {head} |", "| --- | " + " | ".join("---:" for _ in table.columns) + " |"]
    for row in table.rows:
        got = results.get(row.label)
        cells = []
        for c in table.columns:
            value = None if got is None else got.get(c)
            shown = "impossible" if row.label in notes else ("..." if value is None else f"{value:.1f}")
            cells.append(f"{shown} / {row.paper[c]:.1f}")
        lines.append(f"| {row.label} | " + " | ".join(cells) + " |")
    if notes:
        lines += ["", "Impossible rows:"] + [f"- {label}: {why}" for label, why in notes.items()]
    lines += ["", f"Pretraining overrides (every row): `{' '.join(table.sets + scale.overrides) or 'none'}`; "
              f"small-scale recipes: pretraining `{' '.join(PRETRAIN_RECIPE)}`, finetuning "
              f"`{' '.join(FINETUNE_RECIPE + scale.finetune_overrides)}`.",
              f"Command: `{scale.command(number)}`; wall time {seconds / 60:.1f} min."]
    return "\n".join(lines) + "\n"


def _write(number: int, table: Table, results: dict, notes: dict, out: Path, scale: Scale,
           seconds: float) -> Path:
    path = out / f"table_{number}.md"
    with writing(path):
        path.write_text(markdown(number, table, results, notes, scale, seconds))
    paper = {row.label: row.paper for row in table.rows}
    with writing(out / f"table_{number}.json"):
        (out / f"table_{number}.json").write_text(json.dumps(
            {"table": number, "measured": results, "paper": paper, "impossible": notes,
             "command": scale.command(number), **asdict(scale),
             "seconds": round(seconds, 1)}, indent=2) + "\n")
    return path
