"""Manifests (CSV -> clips, with one-line errors) and label vocabularies."""

import json

import pytest
import torch

from avmae.config import ConfigError
from avmae.data import (
    as_vocab,
    build_vocab,
    build_vocabs,
    encode_labels,
    label_columns,
    load_manifest,
    load_vocab,
    num_classes,
    save_vocab,
)

GOOD = """path,label,labels,verb,noun,start,end
a.mp4,dog,dog;bark,open,door,,
sub/b.mp4,cat,"cat; meow",close,door,1.5,4
c.mp4,bird,,open,lid,0,2.25
"""


def write(tmp_path, text, name="m.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_load_manifest_resolves_paths_segments_and_labels(tmp_path):
    m = load_manifest(write(tmp_path, GOOD))
    assert len(m) == 3
    assert m.root == tmp_path.resolve()
    assert m.clips[1].path == tmp_path.resolve() / "sub" / "b.mp4"
    assert [c.line for c in m.clips] == [2, 3, 4]
    assert (m.clips[0].start, m.clips[0].end) == (None, None)
    assert (m.clips[1].start, m.clips[1].end) == (1.5, 4.0)
    assert m.clips[1].targets["labels"] == ("cat", "meow")      # split on ';', stripped
    assert m.clips[2].targets["labels"] == ()
    assert m.label_columns == ["label", "labels", "verb", "noun"]


def test_manifest_with_bom_blank_lines_and_absolute_path(tmp_path):
    text = "\ufeffpath\n\n" + str(tmp_path / "x.mp4") + "\nrel.mp4\n"
    m = load_manifest(write(tmp_path, text))
    assert [c.path for c in m.clips] == [tmp_path / "x.mp4", tmp_path.resolve() / "rel.mp4"]
    assert m.label_columns == []


@pytest.mark.parametrize("text, message", [
    ("", "is empty"),
    ("path,label\n", "no rows"),
    ("file,label\na.mp4,dog\n", "no 'path' column"),
    ("path,start\na.mp4,0\nb.mp4,abc\n", "line 3: start='abc' is not a number"),
    ("path,start,end\na.mp4,5,2\n", "line 2: end=2.0 must be after start=5.0"),
    ("path,end\na.mp4,-1\n", "line 2: end=-1 must be"),
    ("path,end\na.mp4,nan\n", "line 2: end=nan must be"),
    ("path,label\na.mp4,dog,extra\n", "line 2 has 3 fields but the header has 2"),
    ("path,label\n,dog\n", "line 2 has an empty path"),
])
def test_malformed_manifest_is_one_clear_line(tmp_path, text, message):
    with pytest.raises(ConfigError) as err:
        load_manifest(write(tmp_path, text))
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_manifest(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_manifest(tmp_path / "nope.csv")


def test_vocab_is_sorted_unique_and_round_trips(tmp_path):
    m = load_manifest(write(tmp_path, GOOD))
    assert build_vocab(m, "label") == ["bird", "cat", "dog"]
    assert build_vocab(m, "labels") == ["bark", "cat", "dog", "meow"]
    vocab = build_vocabs(m, "verb,noun")
    assert vocab == {"verb": ["close", "open"], "noun": ["door", "lid"]}
    assert num_classes(vocab) == [2, 2]
    save_vocab(vocab, tmp_path / "vocab.json")
    loaded = load_vocab(tmp_path / "vocab.json")
    assert loaded == vocab and list(loaded) == ["verb", "noun"]  # column order kept


def test_load_vocab_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_vocab(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text(json.dumps({"vocab": {"label": [1, 2]}}))
    with pytest.raises(ConfigError, match="not a vocabulary file"):
        load_vocab(tmp_path / "bad.json")


def test_encode_labels_per_column_kind(tmp_path):
    m = load_manifest(write(tmp_path, GOOD))
    single = encode_labels(m.clips, "label", build_vocabs(m, "label"))
    assert single.dtype == torch.int64 and single.tolist() == [2, 1, 0]   # dog, cat, bird
    multi = encode_labels(m.clips, "labels", build_vocabs(m, "labels"))
    assert multi.dtype == torch.float32
    assert multi.tolist() == [[1, 0, 1, 0], [0, 1, 0, 1], [0, 0, 0, 0]]  # bark cat dog meow
    vn = encode_labels(m.clips, "verb,noun", build_vocabs(m, "verb,noun"))
    assert vn.dtype == torch.int64 and vn.tolist() == [[1, 0], [0, 0], [1, 1]]


def test_a_given_vocab_is_used_and_unknown_labels_are_refused(tmp_path):
    m = load_manifest(write(tmp_path, GOOD))
    # a vocabulary saved by an earlier run keeps its own indices, even with extra classes
    vocab = as_vocab(["ant", "bird", "cat", "dog"], "label")
    assert encode_labels(m.clips, "label", vocab).tolist() == [3, 2, 1]
    with pytest.raises(ConfigError, match=r"line 4: label 'bird' is not in the vocabulary"):
        encode_labels(m.clips, "label", {"label": ["cat", "dog"]})
    with pytest.raises(ConfigError, match="one vocabulary per column"):
        as_vocab(["a"], "verb,noun")
    with pytest.raises(ConfigError, match="vocabulary is for column"):
        as_vocab({"label": ["a"]}, "labels")


def test_label_column_errors(tmp_path):
    m = load_manifest(write(tmp_path, "path,label\na.mp4,dog\nb.mp4,\n"))
    with pytest.raises(ConfigError, match="is not one of"):
        label_columns("tags")
    with pytest.raises(ConfigError, match="no 'labels' column"):
        build_vocab(m, "labels")
    with pytest.raises(ConfigError, match="line 3: empty label"):
        encode_labels(m.clips, "label", {"label": ["dog"]})
