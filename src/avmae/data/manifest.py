"""CSV manifests and label vocabularies.

A manifest is a CSV file with one clip per row:

    path,label,labels,verb,noun,start,end
    videos/a.mp4,dog,dog;bark,,,,
    videos/b.mp4,cat,cat,,,2.5,12.5

`path` is relative to the CSV's own folder (absolute paths are kept as they are). The label
columns are optional and a manifest may carry several of them; a run picks one with
`label_column`:

    "label"      single label per clip           -> int64 class index
    "labels"     ';'-separated labels per clip   -> float32 multi-hot (C,)
    "verb,noun"  two single labels (EPIC-style)  -> int64 (2,) = verb index, noun index
    "verb" or "noun" alone                       -> int64 class index

`start` / `end` (seconds, optional, may be empty) restrict a row to a segment of its file.

A vocabulary maps each label column to its sorted unique class names. A run builds it once from
its training data, writes it beside the run (`save_vocab`) and every later stage loads that file
(`load_vocab`), so class indices never change between pretraining, finetuning and evaluation.
"""

from __future__ import annotations

import codecs
import csv
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from avmae.config import ConfigError

LABEL_COLUMNS = ("label", "labels", "verb", "noun")
LABEL_SPECS = ("label", "labels", "verb", "noun", "verb,noun")

Vocab = dict[str, list[str]]  # label column -> sorted class names


@dataclass(frozen=True)
class Clip:
    """One manifest row."""

    path: Path                      # absolute path of the media file
    line: int                       # line of the CSV it came from (the header is line 1)
    targets: dict                   # column -> str, or tuple[str, ...] for "labels"
    start: float | None = None      # segment of the file, in seconds
    end: float | None = None


@dataclass
class Manifest:
    source: Path                    # the CSV file
    root: Path                      # its folder: `path` values are relative to it
    columns: list[str]              # the CSV header
    clips: list[Clip]

    def __len__(self) -> int:
        return len(self.clips)

    def __iter__(self) -> Iterator[Clip]:
        return iter(self.clips)

    @property
    def label_columns(self) -> list[str]:
        return [c for c in LABEL_COLUMNS if c in self.columns]


def _seconds(value: str | None, name: str, where: str) -> float | None:
    if value is None or not value.strip():
        return None
    try:
        x = float(value)
    except ValueError:
        raise ConfigError(f"{where}: {name}='{value}' is not a number of seconds") from None
    if not math.isfinite(x) or x < 0:
        raise ConfigError(f"{where}: {name}={value} must be a finite number of seconds >= 0")
    return x


def _targets(row: dict, columns: Sequence[str]) -> dict:
    targets = {}
    for c in LABEL_COLUMNS:
        if c not in columns:
            continue
        value = (row.get(c) or "").strip()
        if c == "labels":
            targets[c] = tuple(v.strip() for v in value.split(";") if v.strip())
        else:
            targets[c] = value
    return targets


class ManifestFile:
    """A manifest read row by row: iterating it reads the CSV again from its first line and
    yields its Clips one at a time, so a 2 M-row manifest never sits in memory
    (`avmae prepare`). Opening it reads the header; any malformed row raises ConfigError naming
    the file and line when the iteration reaches it. `load_manifest` keeps every row."""

    def __init__(self, path: str | os.PathLike):
        self.source = Path(path)
        if not self.source.is_file():
            raise ConfigError(f"manifest {self.source} not found (expected a CSV file with a "
                              "'path' column)")
        self.root = self.source.resolve().parent
        with self._open() as f:
            self.columns = self._header(csv.reader(f))

    @property
    def label_columns(self) -> list[str]:
        return [c for c in LABEL_COLUMNS if c in self.columns]

    def __iter__(self) -> Iterator[Clip]:
        root = self.root
        for line, rel, targets, start, end in self.records():
            yield Clip(path=root / rel, line=line, targets=targets, start=start, end=end)

    def records(self) -> Iterator[tuple[int, str, dict, float | None, float | None]]:
        """(line, path as written, targets, start, end) of each row, checked; blank lines are
        skipped. Cheaper than Clips (no Path per row) for a pass that only counts or collects
        labels."""
        columns, source = self.columns, self.source
        with self._open() as f:
            reader = csv.reader(f)
            self._header(reader)
            while True:
                try:
                    fields = next(reader)
                except StopIteration:
                    return
                except csv.Error as err:
                    raise ConfigError(f"manifest {source} line {reader.line_num}: {err}") from None
                except UnicodeDecodeError:
                    raise self._not_utf8() from None
                line = reader.line_num
                if not any(v.strip() for v in fields):
                    continue  # blank line
                where = f"manifest {source} line {line}"
                if len(fields) != len(columns):
                    raise ConfigError(f"{where} has {len(fields)} fields but the header has "
                                      f"{len(columns)}; quote values that contain commas")
                row = dict(zip(columns, fields))
                rel = row["path"].strip()
                if not rel:
                    raise ConfigError(f"{where} has an empty path")
                start = _seconds(row.get("start"), "start", where)
                end = _seconds(row.get("end"), "end", where)
                if start is not None and end is not None and end <= start:
                    raise ConfigError(f"{where}: end={end} must be after start={start}")
                yield line, rel, _targets(row, columns), start, end

    def _open(self):
        # utf-8-sig: spreadsheets often write a byte-order mark before the header. newline="":
        # the csv module sees quoted line breaks as they are written.
        return open(self.source, encoding="utf-8-sig", newline="")

    def _header(self, reader) -> list[str]:
        source = self.source
        try:
            header = next(reader)
        except StopIteration:
            raise ConfigError(f"manifest {source} is empty: it needs a header line with a "
                              "'path' column and one row per clip") from None
        except csv.Error as err:
            raise ConfigError(f"manifest {source} line 1: {err}") from None
        except UnicodeDecodeError:
            raise self._not_utf8() from None
        columns = [c.strip() for c in header]
        if "path" not in columns:
            raise ConfigError(f"manifest {source} has no 'path' column (header: "
                              f"{','.join(columns)}); add one with file paths relative to "
                              f"{self.root}")
        return columns

    def _not_utf8(self) -> ConfigError:
        """The one line for a file that is not UTF-8, naming its first bad byte (found by
        reading the file again: a streaming decoder only knows its offset in a chunk)."""
        decoder = codecs.getincrementaldecoder("utf-8")()  # a BOM is valid UTF-8 too
        offset = 0  # of the chunk; bytes the decoder holds back belong to the chunks before
        with open(self.source, "rb") as f:
            while chunk := f.read(1 << 16):
                held = len(decoder.getstate()[0])
                try:
                    decoder.decode(chunk)
                except UnicodeDecodeError as err:
                    pos = offset - held + err.start
                    bad = err.object[err.start:err.start + 1]
                    return ConfigError(f"manifest {self.source} is not UTF-8 text (byte {pos}: "
                                       f"{bad!r}): save it as a UTF-8 CSV")
                offset += len(chunk)
        return ConfigError(f"manifest {self.source} is not UTF-8 text: save it as a UTF-8 CSV")


def load_manifest(path: str | os.PathLike) -> Manifest:
    """Read a manifest CSV, every row. Any malformed row raises ConfigError naming the file and
    line. (A manifest too large to hold: iterate a ManifestFile.)"""
    manifest = ManifestFile(path)
    clips = list(manifest)
    if not clips:
        raise ConfigError(f"manifest {manifest.source} has a header but no rows: add one row "
                          "per clip")
    return Manifest(source=manifest.source, root=manifest.root, columns=manifest.columns,
                    clips=clips)


def label_names(manifest: ManifestFile, columns: Sequence[str]) -> tuple[int, dict[str, set]]:
    """One streaming pass: (rows, {column: the set of its class names}), the names as
    build_vocab splits them. Memory: the vocabularies, not the rows."""
    names: dict[str, set] = {c: set() for c in columns}
    rows = 0
    for _, _, targets, _, _ in manifest.records():
        rows += 1
        for c in columns:
            value = targets[c]
            if c == "labels":
                names[c].update(value)
            elif value:
                names[c].add(value)
    return rows, names


# ---- label vocabularies --------------------------------------------------------------------

def label_columns(label_column: str) -> tuple[str, ...]:
    """'verb,noun' -> ('verb', 'noun'); 'label' -> ('label',). ConfigError for other specs."""
    spec = ",".join(c.strip() for c in label_column.split(","))
    if spec not in LABEL_SPECS:
        raise ConfigError(f"label column '{label_column}' is not one of: {', '.join(LABEL_SPECS)}")
    return tuple(spec.split(","))


def _clips(manifest) -> Sequence[Clip]:
    return manifest.clips if hasattr(manifest, "clips") else manifest


def build_vocab(manifest: Manifest | Sequence[Clip], column: str) -> list[str]:
    """Sorted unique class names of one label column ('labels' is split on ';')."""
    names = set()
    for clip in _clips(manifest):
        if column not in clip.targets:
            raise ConfigError(f"the data has no '{column}' column; add it to the manifest or "
                              "choose another label column")
        value = clip.targets[column]
        names.update(value if column == "labels" else [value] if value else [])
    if not names:
        raise ConfigError(f"the '{column}' column has no labels: every row is empty")
    return sorted(names)


def build_vocabs(manifest: Manifest | Sequence[Clip], label_column: str) -> Vocab:
    """The vocabulary of a label spec: {column: sorted class names} for each of its columns."""
    return {c: build_vocab(manifest, c) for c in label_columns(label_column)}


def num_classes(vocab: Vocab) -> list[int]:
    """Classes per column, e.g. [97, 300] for verb,noun; [527] for labels."""
    return [len(v) for v in vocab.values()]


def save_vocab(vocab: Vocab, path: str | os.PathLike) -> None:
    """Write {column: [class names]} as JSON (atomically: temporary file, then rename)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"vocab": vocab}, indent=1, ensure_ascii=False) + "\n",
                   encoding="utf-8")
    os.replace(tmp, path)


def load_vocab(path: str | os.PathLike) -> Vocab:
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        vocab = data["vocab"]
        if not isinstance(vocab, dict) or not all(
                isinstance(v, list) and all(isinstance(n, str) for n in v) for v in vocab.values()):
            raise ValueError
    except FileNotFoundError:
        raise ConfigError(f"vocabulary file {path} not found") from None
    except (ValueError, KeyError, TypeError):
        raise ConfigError(f"{path} is not a vocabulary file (expected JSON "
                          '{"vocab": {"column": ["class", ...]}})') from None
    return vocab


def as_vocab(vocab: Vocab | list[str] | None, label_column: str) -> Vocab | None:
    """Accept a plain class list for a single-column spec; check the columns match the spec."""
    if vocab is None:
        return None
    columns = label_columns(label_column)
    if isinstance(vocab, (list, tuple)):
        if len(columns) != 1:
            raise ConfigError(f"label column '{label_column}' needs one vocabulary per column "
                              f"({', '.join(columns)}), got a single list")
        return {columns[0]: list(vocab)}
    if tuple(vocab) != columns:
        raise ConfigError(f"the vocabulary is for column(s) {','.join(vocab)} but the label "
                          f"column is '{label_column}'")
    return {c: list(v) for c, v in vocab.items()}


def select_columns(vocab: Vocab, label_column: str) -> Vocab:
    """The columns of `vocab` that a label spec uses ('verb,noun' from a verb/noun vocabulary)."""
    columns = label_columns(label_column)
    missing = [c for c in columns if c not in vocab]
    if missing:
        raise ConfigError(f"the vocabulary has no '{missing[0]}' column (it has: "
                          f"{', '.join(vocab)}); choose a label column it has")
    return {c: list(vocab[c]) for c in columns}


def encode_labels(clips: Sequence[Clip], label_column: str, vocab: Vocab,
                  where: str = "") -> torch.Tensor:
    """Class indices of every clip, checked against `vocab`.

    Returns int64 (N,) for one single-label column, float32 multi-hot (N, C) for 'labels',
    int64 (N, 2) for 'verb,noun'. A label the vocabulary does not know raises ConfigError.
    """
    columns = label_columns(label_column)
    index = {c: {name: i for i, name in enumerate(vocab[c])} for c in columns}

    def lookup(clip: Clip, column: str, name: str) -> int:
        if name not in index[column]:
            at = f"line {clip.line}" if clip.line else str(clip.path)
            raise ConfigError(f"{where}{at}: {column} '{name}' is not in the vocabulary "
                              f"({len(index[column])} classes, e.g. {vocab[column][:3]}); use "
                              "the vocabulary the data was trained with or fix the label")
        return index[column][name]

    for clip in clips:
        for c in columns:
            if c not in clip.targets:
                raise ConfigError(f"{where}the data has no '{c}' column; add it or choose another "
                                  "label column")
            if c != "labels" and not clip.targets[c]:
                raise ConfigError(f"{where}line {clip.line}: empty {c}; every clip needs one for "
                                  f"label column '{label_column}'")
    if columns == ("labels",):
        out = torch.zeros(len(clips), len(vocab["labels"]), dtype=torch.float32)
        for i, clip in enumerate(clips):
            for name in clip.targets["labels"]:
                out[i, lookup(clip, "labels", name)] = 1.0
        return out
    out = torch.tensor([[lookup(clip, c, clip.targets[c]) for c in columns] for clip in clips],
                       dtype=torch.int64).reshape(len(clips), len(columns))
    return out[:, 0] if len(columns) == 1 else out


class StringColumn:
    """Many strings in two arrays (utf-8 bytes + offsets): column[i] -> str."""

    def __init__(self, items):
        data = [str(s).encode() for s in items]
        self.offsets = np.cumsum([0] + [len(b) for b in data], dtype=np.int64)
        self.buffer = np.frombuffer(b"".join(data), np.uint8)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> str:
        return self.buffer[self.offsets[i]:self.offsets[i + 1]].tobytes().decode()
