"""`avmae manifest`: the datasets' official annotation files -> the manifests every avmae command reads.

    avmae manifest vggsound vggsound.csv --videos DIR --out DIR
    avmae manifest audioset balanced_train_segments.csv eval_segments.csv \\
        class_labels_indices.csv --videos DIR --out DIR
    avmae manifest epic-kitchens EPIC_100_train.csv EPIC_100_validation.csv \\
        [EPIC_100_verb_classes.csv EPIC_100_noun_classes.csv] --videos DIR --out DIR

writes, in OUT:
    train.csv, test.csv   manifests (path relative to OUT, label column(s), start, end, id); test is
                          the split the paper evaluates on (VGGSound test, AudioSet eval, EPIC-100
                          validation)
    val.csv               a validation hold-out carved from the training annotations (not from test):
                          VAL_FRACTION (5 %) of the located training clips, stratified (VGGSound by
                          label, Epic Kitchens by verb, AudioSet by each clip's rarest label) and
                          deterministic (chosen by a hash of the clip id); train.csv excludes them.
                          `avmae finetune --val` takes it, so the `best` checkpoint is never chosen
                          on the test split. Not written when the training split is too small to
                          give one clip (fewer than about 10 clips at 5 %)
    vocab.json            the class vocabulary in the official order (VGGSound: the label strings
                          sorted; AudioSet: class_labels_indices.csv's index order; Epic Kitchens:
                          the class indices), for `avmae finetune --vocab`
    missing.txt           one line per annotated clip whose video is not under --videos

The formats read (all public):
    vggsound.csv              no header; youtube_id,start_seconds,label,split (train / test)
    *_segments.csv            three '#' lines, then YTID, start_seconds, end_seconds, "/m/..,/m/.."
                              (balanced_train / unbalanced_train -> train, eval -> test)
    class_labels_indices.csv  index,mid,display_name
    EPIC_100_{train,validation}.csv   narration_id,participant_id,video_id,...,start_timestamp,
                              stop_timestamp (HH:MM:SS.ff),...,verb_class,...,noun_class,...
    EPIC_100_{verb,noun}_classes.csv  id,key,... (the class names, optional)

Locating videos. YouTube clips are found under --videos (any depth, any case of the extension) by
the names the common downloaders give them, tried in this order after --pattern:
    {ytid}_{start:06d}               a 10 s clip (VGGSound's downloader)
    {ytid}_{start_ms}_{end_ms}       a clip, times in milliseconds (common for AudioSet)
    {ytid}_{start}_{end}             a clip, whole seconds; also with 3 or 1 decimals
    {ytid}                           the whole video: the segment's start and end go into the manifest
each also with a leading 'Y' (AudioSet's own convention). Some downloaders (PANNs' for AudioSet)
save just the segment as Y{ytid}.mp4: a sample of the files matched as whole videos is probed, and
if most are too short to hold their segment, all of them are taken as the segments themselves (and
the summary says so). Epic Kitchens videos are found by video_id (P01/videos/P01_01.MP4,
P01/P01_01.MP4, P01_01.mp4, ...), each row a segment of one. --pattern is a path under --videos
with {ytid}, {start}, {end} (whole seconds), {start_ms}, {end_ms}, {video_id}, {participant_id};
without an extension any video extension matches; a pattern without a time field names the whole
video (probed like {ytid}). A missing video is counted and listed, never fatal (10-20 % of AudioSet
is gone from YouTube). Bad input (a wrong header, a malformed timestamp, an unknown label id) stops
with one line naming the file and line.
"""

from __future__ import annotations

import csv
import hashlib
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from avmae.config import ConfigError
from avmae.data.manifest import save_vocab

DATASETS = ("vggsound", "audioset", "epic-kitchens")
SPLITS = ("train", "test")
VAL_FRACTION = 0.05              # share of the training clips held out as val.csv
VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v", ".flv", ".mpg", ".mpeg")
VGGSOUND_SECONDS = 10.0          # every VGGSound clip is 10 s from start_seconds
AUDIOSET_HEADER = "# YTID, start_seconds, end_seconds, positive_labels"
EPIC_COLUMNS = ("narration_id", "video_id", "start_timestamp", "stop_timestamp", "verb_class",
                "noun_class")
TIMESTAMP = re.compile(r"^(\d+):([0-5]\d):([0-5]\d(?:\.\d+)?)$")   # HH:MM:SS.ff


@dataclass
class Row:
    """One annotated clip before its video is looked up."""
    split: str
    id: str                          # YouTube id or EPIC video_id
    start: float
    end: float
    labels: dict                     # manifest column -> value
    where: str                       # "file line N", for messages
    extra: dict = field(default_factory=dict)   # other pattern fields (participant_id, narration_id)


# ---- reading the official files --------------------------------------------------------------

def _bad(path: Path, line: int, message: str) -> ConfigError:
    return ConfigError(f"{path} line {line}: {message}")


def _seconds(value: str, path: Path, line: int, name: str) -> float:
    try:
        x = float(value)
    except ValueError:
        raise _bad(path, line, f"{name} '{value}' is not a number of seconds") from None
    if not math.isfinite(x) or x < 0:
        raise _bad(path, line, f"{name} {value} must be a finite number of seconds >= 0")
    return x


def read_vggsound(path: Path) -> tuple[list[Row], dict]:
    """vggsound.csv -> rows and {"label": sorted label strings}."""
    rows = []
    with open(path, newline="", encoding="utf-8-sig") as f:
        for line, fields in enumerate(csv.reader(f), start=1):
            if not any(v.strip() for v in fields):
                continue
            if len(fields) != 4:
                raise _bad(path, line, f"{len(fields)} fields; vggsound.csv rows are "
                                       "youtube_id,start_seconds,label,split (no header)")
            ytid, start, label, split = (v.strip() for v in fields)
            if not re.fullmatch(r"\d+", start):
                raise _bad(path, line, f"start_seconds '{start}' is not a whole number of seconds "
                                       "(vggsound.csv has no header line: remove it)")
            if split not in SPLITS:
                raise _bad(path, line, f"split '{split}' is not train or test")
            if not ytid or not label:
                raise _bad(path, line, "empty youtube_id or label")
            s = float(start)
            rows.append(Row(split, ytid, s, s + VGGSOUND_SECONDS, {"label": label}, f"{path} line {line}"))
    return rows, {"label": sorted({r.labels["label"] for r in rows})}


def read_audioset_classes(path: Path) -> dict[str, str]:
    """class_labels_indices.csv -> {mid: display_name} in the official index order."""
    classes = {}
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = [c.strip() for c in next(reader, [])]
        if header != ["index", "mid", "display_name"]:
            raise _bad(path, 1, f"header '{','.join(header)}' is not index,mid,display_name")
        for line, fields in enumerate(reader, start=2):
            if not any(v.strip() for v in fields):
                continue
            if len(fields) != 3 or not fields[0].strip().isdigit():
                raise _bad(path, line, "expected index,mid,display_name")
            index, mid, name = (v.strip() for v in fields)
            if int(index) != len(classes):
                raise _bad(path, line, f"index {index} out of order (expected {len(classes)})")
            if ";" in name or name in classes.values() or mid in classes:
                raise _bad(path, line, f"class '{name}' ({mid}) is a duplicate or contains ';'")
            classes[mid] = name
    if not classes:
        raise ConfigError(f"{path} lists no classes")
    return classes


def read_audioset_segments(path: Path, split: str, classes: dict[str, str]) -> list[Row]:
    """*_segments.csv -> rows with "labels": display names joined with ';'."""
    rows = []
    with open(path, newline="", encoding="utf-8-sig") as f:
        lines = f.read().splitlines()
    if len(lines) < 3 or not all(l.startswith("#") for l in lines[:3]) or \
            lines[2].replace(" ", "") != AUDIOSET_HEADER.replace(" ", ""):
        got = lines[2] if len(lines) >= 3 else "(fewer than 3 lines)"
        raise _bad(path, 3, f"header '{got}' is not the segment files' '{AUDIOSET_HEADER}' "
                            "(after two other '#' lines)")
    for line, fields in enumerate(csv.reader(lines[3:], skipinitialspace=True), start=4):
        if not any(v.strip() for v in fields):
            continue
        if len(fields) != 4:
            raise _bad(path, line, f"{len(fields)} fields; expected YTID, start_seconds, "
                                   'end_seconds, "/m/..,/m/.." (labels quoted)')
        ytid, start, end, mids = (v.strip() for v in fields)
        s, e = _seconds(start, path, line, "start_seconds"), _seconds(end, path, line, "end_seconds")
        if e <= s:
            raise _bad(path, line, f"end_seconds {end} is not after start_seconds {start}")
        names = []
        for mid in (m.strip() for m in mids.split(",") if m.strip()):
            if mid not in classes:
                raise _bad(path, line, f"label id '{mid}' is not in class_labels_indices.csv")
            names.append(classes[mid])
        if not names:
            raise _bad(path, line, "no labels")
        rows.append(Row(split, ytid, s, e, {"labels": ";".join(names)}, f"{path} line {line}"))
    return rows


def _timestamp(value: str, path: Path, line: int, name: str) -> float:
    found = TIMESTAMP.match(value.strip())
    if not found:
        raise _bad(path, line, f"{name} '{value}' is not a timestamp HH:MM:SS.ff")
    h, m, s = found.groups()
    return int(h) * 3600 + int(m) * 60 + float(s)


def read_epic_classes(path: Path) -> dict[int, str]:
    """EPIC_100_{verb,noun}_classes.csv -> {id: key}."""
    names = {}
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or not {"id", "key"} <= {c.strip() for c in reader.fieldnames}:
            raise _bad(path, 1, f"header '{','.join(reader.fieldnames or [])}' has no id and key "
                                "columns")
        for row in reader:
            value = (row.get("id") or "").strip()
            if not value.isdigit() or not (row.get("key") or "").strip():
                raise _bad(path, reader.line_num, "expected a class id and key")
            names[int(value)] = row["key"].strip()
    return names


def read_epic(path: Path, split: str, verbs: dict[int, str] | None,
              nouns: dict[int, str] | None) -> list[Row]:
    """EPIC_100_{train,validation}.csv -> rows of segments of long videos, with verb and noun."""
    rows = []
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        columns = [c.strip() for c in reader.fieldnames or []]
        missing = [c for c in EPIC_COLUMNS if c not in columns]
        if missing:
            raise _bad(path, 1, f"header has no {', '.join(missing)} column (an EPIC_100_test "
                                "file has no labels: finetune and evaluate on train / validation)")
        for row in reader:
            line = reader.line_num
            row = {k.strip(): (v or "").strip() for k, v in row.items() if k is not None}
            start = _timestamp(row["start_timestamp"], path, line, "start_timestamp")
            stop = _timestamp(row["stop_timestamp"], path, line, "stop_timestamp")
            if stop <= start:
                raise _bad(path, line, f"stop_timestamp {row['stop_timestamp']} is not after "
                                       f"start_timestamp {row['start_timestamp']}")
            labels = {}
            for column, names in (("verb", verbs), ("noun", nouns)):
                value = row[f"{column}_class"]
                if not value.isdigit():
                    raise _bad(path, line, f"{column}_class '{value}' is not a class index")
                if names is not None and int(value) not in names:
                    raise _bad(path, line, f"{column}_class {value} is not in the {column} classes file")
                labels[column] = names[int(value)] if names is not None else value
            rows.append(Row(split, row["video_id"], start, stop, labels, f"{path} line {line}",
                            {"participant_id": row.get("participant_id", ""),
                             "narration_id": row["narration_id"]}))
    return rows


def _role(path: Path, dataset: str) -> str:
    """Which file an annotation path is, from its name: train, test, classes, verb/noun classes."""
    name = path.name.lower()
    if dataset == "audioset":
        if "class_labels" in name:
            return "classes"
        if "eval" in name:
            return "test"
        if "train" in name:
            return "train"
    if dataset == "epic-kitchens":
        if "verb_classes" in name:
            return "verb_classes"
        if "noun_classes" in name:
            return "noun_classes"
        if "validation" in name:
            return "test"
        if "train" in name:
            return "train"
    raise ConfigError(f"{path}: not one of the {dataset} annotation files (named as released: "
                      + ("*train_segments.csv, eval_segments.csv, class_labels_indices.csv"
                         if dataset == "audioset" else
                         "EPIC_100_train.csv, EPIC_100_validation.csv, EPIC_100_verb_classes.csv, "
                         "EPIC_100_noun_classes.csv") + ")")


def read_annotations(dataset: str, files: list[Path]) -> tuple[list[Row], dict]:
    """The rows of every split and the vocabulary {column: names in the official order}."""
    for path in files:
        if not path.is_file():
            raise ConfigError(f"annotation file {path} not found")
        try:
            path.read_bytes().decode("utf-8-sig")
        except UnicodeDecodeError as err:
            raise ConfigError(f"annotation file {path} is not UTF-8 text (byte {err.start}); give the "
                              "official CSV as downloaded") from None
    if dataset == "vggsound":
        rows, vocab = [], {"label": []}
        for path in files:
            more, _ = read_vggsound(path)
            rows += more
        vocab["label"] = sorted({r.labels["label"] for r in rows})
        return rows, vocab
    roles = {path: _role(path, dataset) for path in files}
    if dataset == "audioset":
        class_files = [p for p, r in roles.items() if r == "classes"]
        if len(class_files) != 1:
            raise ConfigError("audioset needs class_labels_indices.csv (exactly once) among the "
                              "annotation files: it maps the label ids to the 527 classes")
        classes = read_audioset_classes(class_files[0])
        rows = [r for p, role in roles.items() if role in SPLITS
                for r in read_audioset_segments(p, role, classes)]
        return rows, {"labels": list(classes.values())}
    names = {}
    for kind in ("verb", "noun"):
        found = [p for p, r in roles.items() if r == f"{kind}_classes"]
        names[kind] = read_epic_classes(found[0]) if found else None
    rows = [r for p, role in roles.items() if role in SPLITS
            for r in read_epic(p, role, names["verb"], names["noun"])]
    vocab = {}
    for kind in ("verb", "noun"):
        if names[kind] is not None:   # the class files' order is the class index order
            top = max(names[kind])
            vocab[kind] = [names[kind].get(i, f"{kind}_{i}") for i in range(top + 1)]
        else:                         # indices as they are: class i is the string "i"
            top = max((int(r.labels[kind]) for r in rows), default=-1)
            vocab[kind] = [str(i) for i in range(top + 1)]
    return rows, vocab


# ---- locating the videos ---------------------------------------------------------------------

class VideoIndex:
    """Every video file under a folder, by file stem and by path without extension."""

    def __init__(self, root: Path):
        self.root = root
        self.by_stem: dict[str, Path] = {}
        self.by_rel: dict[str, Path] = {}
        for folder, dirs, names in os.walk(root):
            dirs.sort()
            for name in sorted(names):
                stem, ext = os.path.splitext(name)
                if ext.lower() not in VIDEO_EXTENSIONS:
                    continue
                path = Path(folder) / name
                self.by_stem.setdefault(stem, path)
                self.by_rel.setdefault(path.relative_to(root).with_suffix("").as_posix(), path)
                self.by_rel.setdefault(path.relative_to(root).as_posix(), path)

    def __len__(self) -> int:
        return len(self.by_stem)

    def find_pattern(self, name: str) -> Path | None:
        """A --pattern expansion: a path under the root, with or without its extension."""
        name = name.strip("/")
        found = self.by_rel.get(name)
        if found is None and "/" not in name:
            found = self.by_stem.get(name)
        return found


def _youtube_names(ytid: str, start: float, end: float) -> list[tuple[str, bool]]:
    """(file stem, is the whole video) for the common naming schemes of downloaded YouTube clips."""
    s, e = int(round(start)), int(round(end))
    names = [f"{ytid}_{s:06d}", f"{ytid}_{int(round(start * 1000))}_{int(round(end * 1000))}",
             f"{ytid}_{s}_{e}", f"{ytid}_{start:.3f}_{end:.3f}", f"{ytid}_{start:.1f}_{end:.1f}",
             f"{ytid}_{s}"]
    return [(n, False) for n in names] + [(f"Y{n}", False) for n in names] + \
        [(ytid, True), (f"Y{ytid}", True)]


def _pattern_fields(row: Row) -> dict:
    return {"ytid": row.id, "video_id": row.id, "start": int(round(row.start)),
            "end": int(round(row.end)), "start_ms": int(round(row.start * 1000)),
            "end_ms": int(round(row.end * 1000)), **row.extra}


def locate(row: Row, index: VideoIndex, dataset: str, pattern: str | None
           ) -> tuple[Path, bool] | None:
    """(video file, is the whole video) of a row, or None."""
    if pattern is not None:
        try:
            name = pattern.format(**_pattern_fields(row))
        except (KeyError, IndexError, ValueError) as err:
            raise ConfigError(f"--pattern '{pattern}': {err!r} is not a field; use {{ytid}}, "
                              "{start}, {end}, {start_ms}, {end_ms}, {video_id}, {participant_id}") from None
        found = index.find_pattern(name)
        if found is not None:
            whole = dataset == "epic-kitchens" or not re.search(r"\{(start|end)", pattern)
            return found, whole
    if dataset == "epic-kitchens":
        found = index.by_stem.get(row.id)
        return (found, True) if found is not None else None
    for stem, whole in _youtube_names(row.id, row.start, row.end):
        found = index.by_stem.get(stem)
        if found is not None:
            return found, whole
    return None


PROBE_FILES = 50        # whole-video matches whose duration is read to tell videos from segments


def media_seconds(path: Path) -> float | None:
    """The container's duration in seconds (header only), or None if unknown or unreadable."""
    import av
    try:
        with av.open(str(path)) as container:
            return container.duration / 1e6 if container.duration else None
    except Exception:  # broken media is the data pipeline's business, not the manifest's
        return None


def whole_files_are_segments(matches: list[tuple[Row, Path]]) -> bool:
    """True when most of a sample of files matched as whole videos cannot hold their segment (they
    end before it does, with 0.5 s of slack): those files are the segments themselves."""
    sample = matches[:PROBE_FILES]
    durations = [(row, media_seconds(path)) for row, path in sample]
    known = [(row, d) for row, d in durations if d is not None]
    too_short = sum(d < row.end - 0.5 for row, d in known)
    return bool(known) and too_short > len(known) / 2


# ---- the validation hold-out -------------------------------------------------------------------

def _stratum(row: Row, dataset: str, label_counts: dict[str, int]) -> str:
    """The class a clip is stratified by: VGGSound its label, Epic Kitchens its verb (97 classes;
    actions are too many and too sparse), AudioSet its rarest label among the training clips."""
    if dataset == "audioset":
        return min(row.labels["labels"].split(";"), key=lambda n: (label_counts[n], n))
    return row.labels["verb" if dataset == "epic-kitchens" else "label"]


def _hash(row: Row) -> str:
    key = f"{row.id}|{row.start:g}|{row.end:g}|{row.extra.get('narration_id', '')}"
    return hashlib.sha1(key.encode()).hexdigest()


def hold_out(rows: list[Row], dataset: str, fraction: float = VAL_FRACTION) -> set[int]:
    """Indices into `rows` (training clips) of a stratified, deterministic validation hold-out of
    about `fraction` of them: the strata are visited in sorted order and each gives the floor of
    its share plus the fractions carried over from the strata before it (so the total is
    round-down of fraction x len(rows) and every stratum gives its share +- 1), never a stratum's
    last clip; within a stratum the clips with the smallest hash of their id are taken. The same
    annotations give the same hold-out on every machine."""
    if not 0.0 <= fraction < 1.0:
        raise ConfigError(f"--val-fraction {fraction} must be in [0, 1)")
    label_counts: dict[str, int] = {}
    if dataset == "audioset":
        for row in rows:
            for name in row.labels["labels"].split(";"):
                label_counts[name] = label_counts.get(name, 0) + 1
    strata: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        strata.setdefault(_stratum(row, dataset, label_counts), []).append(i)
    chosen, carry = set(), 0.0
    for key in sorted(strata):
        members = sorted(strata[key], key=lambda i: _hash(rows[i]))
        want = len(members) * fraction + carry
        k = min(int(math.floor(want + 1e-9)), len(members) - 1)
        carry = want - k
        chosen.update(members[:k])
    return chosen


# ---- writing -----------------------------------------------------------------------------------

LABEL_COLUMNS = {"vggsound": ["label"], "audioset": ["labels"], "epic-kitchens": ["verb", "noun"]}


def write_manifests(dataset: str, files: list[Path], videos: Path, out: Path,
                    pattern: str | None = None, val_fraction: float = VAL_FRACTION) -> dict:
    """Read the annotation files, locate each clip's video and write OUT/{train,val,test}.csv,
    vocab.json and missing.txt (val.csv: `hold_out` of the located training clips, which
    train.csv then excludes). Returns {split: {"clips", "found", "missing"}}, "val": the number of
    training clips held out, and, under "whole_as_segments", how many files named by the id alone
    were taken as the segments."""
    if dataset not in DATASETS:
        raise ConfigError(f"unknown dataset '{dataset}'; choose one of: {', '.join(DATASETS)}")
    if not videos.is_dir():
        raise ConfigError(f"--videos '{videos}' is not a folder")
    rows, vocab = read_annotations(dataset, files)
    if not rows:
        raise ConfigError(f"the annotation files list no clips: {', '.join(map(str, files))}")
    index = VideoIndex(videos)
    out.mkdir(parents=True, exist_ok=True)
    base = _relative(videos, out)   # once: resolving every one of 2 M paths is slow
    columns = ["path", *LABEL_COLUMNS[dataset], "start", "end", "id"]
    counts = {s: {"clips": 0, "found": 0, "missing": 0} for s in SPLITS}
    written: dict[str, list[list[str]]] = {s: [] for s in SPLITS}
    missing: list[str] = []
    located = []
    for row in rows:
        counts[row.split]["clips"] += 1
        found = locate(row, index, dataset, pattern)
        if found is None:
            counts[row.split]["missing"] += 1
            missing.append(f"{row.split}\t{row.id}\t{row.start:g}\t{row.end:g}\t{row.where}")
            continue
        counts[row.split]["found"] += 1
        located.append((row, *found))
    whole = [(row, path) for row, path, is_whole in located if is_whole]
    segments = dataset != "epic-kitchens" and whole_files_are_segments(whole)
    train_at = [i for i, (row, _, _) in enumerate(located) if row.split == "train"]
    held = {train_at[i] for i in hold_out([located[j][0] for j in train_at], dataset, val_fraction)}
    written["val"] = []
    for at, (row, path, is_whole) in enumerate(located):
        is_whole = is_whole and not segments
        start, end = (f"{row.start:g}", f"{row.end:g}") if is_whole else ("", "")
        row_id = row.extra.get("narration_id") or f"{row.id}_{row.start:g}"
        rel = (Path(base) / path.relative_to(videos)).as_posix()
        written["val" if at in held else row.split].append(
            [rel, *(row.labels[c] for c in LABEL_COLUMNS[dataset]), start, end, row_id])
    (out / "missing.txt").write_text("".join(line + "\n" for line in missing))
    for split in SPLITS:
        if counts[split]["clips"] and not counts[split]["found"]:
            raise ConfigError(f"none of the {counts[split]['clips']} {split} clips has a video under "
                              f"{videos} ({len(index)} video files there; listed in "
                              f"{out / 'missing.txt'}): name them {{ytid}}_{{start:06d}}.mp4, "
                              "{ytid}_{start_ms}_{end_ms}.mp4 or {ytid}.mp4, or give --pattern")
    stale = out / "val.csv"
    if not written["val"] and stale.exists():
        stale.unlink()  # an earlier run's val.csv would overlap this train.csv
    for split in (*SPLITS, "val"):
        if not written[split]:
            continue
        tmp = out / f"{split}.csv.tmp"
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(columns)
            writer.writerows(written[split])
        os.replace(tmp, out / f"{split}.csv")
    save_vocab(vocab, out / "vocab.json")
    return {**counts, "val": len(written["val"]), "whole_as_segments": len(whole) if segments else 0}


def _relative(path: Path, out: Path) -> str:
    """`path` relative to the manifest's folder `out` where possible, else absolute."""
    try:
        return os.path.relpath(path.resolve(), out.resolve())
    except ValueError:  # another drive (Windows)
        return str(path.resolve())
