"""`avmae prepare`: standard tar shards with offset indexes, meta.json, and samples equal to the
ones decoded from the raw files."""

import json
import tarfile

import numpy as np
import pytest
import torch
from test_dataset import assert_same_batches, make_media, tiny_cfg

from avmae.cli import main
from avmae.config import ConfigError
from avmae.data import build_dataset, build_loader, prepare_shards

# float16 keeps ~11 bits: |log-mel| < 32 -> error < 2^-6, then / (2 * audio_std) after normalising
AUDIO_ATOL = 2.0 ** -6 / (2 * 4.5690) + 1e-6


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    return make_media(tmp_path_factory.mktemp("media"))


@pytest.fixture(scope="module")
def shards(media, tmp_path_factory):
    out = tmp_path_factory.mktemp("shards")
    prepare_shards(media / "good.csv", out, tiny_cfg().data, clips_per_shard=3, progress=False)
    return out


def test_shards_are_standard_tars_with_an_offset_index(shards):
    meta = json.loads((shards / "meta.json").read_text())
    assert meta["clips"] == 8 and meta["skipped"] == 0 and meta["views"] == 1
    assert [s["clips"] for s in meta["shards"]] == [3, 3, 2]
    assert meta["data"]["num_frames"] == 4 and meta["data"]["short_side"] == 36
    assert meta["label_columns"] == ["label", "labels", "verb", "noun"]
    assert meta["vocab"]["verb"] == ["close", "open", "take"]
    shard = meta["shards"][1]
    index = json.loads((shards / shard["index"]).read_text())["clips"]
    raw = (shards / shard["tar"]).read_bytes()
    with tarfile.open(shards / shard["tar"]) as tar:
        names = tar.getnames()
        assert names[:3] == ["00000003.frames", "00000003.logmel", "00000003.json"]
        for entry in index:
            for member, dtype in (("frames", np.uint8), ("logmel", np.float16)):
                offset, size, shape = entry["views"][0][member]
                data = tar.extractfile(f"{entry['key']}.{member}").read()
                assert raw[offset:offset + size] == data  # the index points at the member's bytes
                assert np.frombuffer(data, dtype).size == np.prod(shape)
            described = json.loads(tar.extractfile(f"{entry['key']}.json").read())
            assert described["targets"] == entry["targets"]
            assert described["views"][0]["frames"]["shape"] == [4, 36, 48, 3]
    assert index[0]["targets"]["labels"] == ["a", "b"] and index[0]["path"] == "clip3.mp4"


def test_shard_samples_equal_raw_samples(media, shards):
    cfg = tiny_cfg()
    raw = build_dataset(media / "good.csv", cfg, train=False, label_column="verb,noun")
    fast = build_dataset(shards, cfg, train=False, label_column="verb,noun")
    assert len(fast) == len(raw) == 8 and fast.vocab == raw.vocab
    for i in range(8):
        a, b = raw[i], fast[i]
        assert torch.equal(a["video"], b["video"])       # frames stored losslessly
        assert torch.allclose(a["audio"], b["audio"], atol=AUDIO_ATOL, rtol=0)
        for k in ("label", "index", "view", "has_audio", "has_video"):
            assert torch.equal(a[k], b[k]), k


def test_shard_loader_is_the_same_for_0_and_2_workers(shards):
    cfg = tiny_cfg()
    ds = build_dataset(shards, cfg, train=True, label_column="labels")
    kw = dict(train=True, batch_size=3, seed=7, epoch=3)
    a = list(build_loader(ds, cfg, num_workers=0, **kw))
    b = list(build_loader(ds, cfg, num_workers=2, **kw))
    assert_same_batches(a, b)
    assert a[0]["video"].shape == (3, 3, 4, 32, 32) and a[0]["audio"].shape == (3, 1, 64, 32)
    assert a[0]["label"].shape == (3, 3) and a[0]["label"].dtype == torch.float32


def test_a_config_that_differs_from_the_shards_is_refused(shards):
    with pytest.raises(ConfigError, match=r"data.num_frames=4 but the config has 8"):
        build_dataset(shards, tiny_cfg("data.num_frames=8"), train=True)
    with pytest.raises(ConfigError, match=r"data.window=hamming"):
        build_dataset(shards, tiny_cfg("data.window=hanning"), train=True)
    # crop, jitter and normalisation happen at load time: they may change freely
    build_dataset(shards, tiny_cfg("data.crop_size=16", "data.audio_mean=0"), train=True)
    with pytest.raises(ConfigError, match="prepare them with --views 3"):
        build_dataset(shards, tiny_cfg(), train=False, num_views=3)


def test_broken_media_is_counted_in_meta_and_flagged_at_load(media, tmp_path):
    meta = prepare_shards(media / "mixed.csv", tmp_path, tiny_cfg().data, progress=False)
    assert (meta["clips"], meta["skipped"]) == (4, 1)
    assert meta["filled"] == {"audio": 1, "video": 1}
    assert meta["skipped_clips"][0]["path"].endswith("garbage.mp4")
    assert meta["skipped_clips"][0]["line"] == 4 and meta["skipped_clips"][0]["reason"]
    ds = build_dataset(tmp_path, tiny_cfg(), train=False)
    assert [ds[i]["has_audio"].item() for i in range(4)] == [True, True, False, True]
    assert [ds[i]["has_video"].item() for i in range(4)] == [True, True, True, False]
    skip = build_dataset(tmp_path, tiny_cfg("data.missing_modality=skip"), train=False)
    assert [skip[i] is None for i in range(4)] == [False, False, True, True]


def test_multi_view_shards_equal_multi_view_decoding(media, tmp_path):
    cfg = tiny_cfg()
    prepare_shards(media / "good.csv", tmp_path, cfg.data, views=2, progress=False)
    with tarfile.open(tmp_path / "shard-000000.tar") as tar:
        assert tar.getnames()[:2] == ["00000000.0.frames", "00000000.0.logmel"]
    raw = build_dataset(media / "good.csv", cfg, train=False, num_views=2)
    fast = build_dataset(tmp_path, cfg, train=False, num_views=2)
    assert len(fast) == 16
    for i in (0, 1, 5):
        assert torch.equal(raw[i]["video"], fast[i]["video"])
        assert torch.allclose(raw[i]["audio"], fast[i]["audio"], atol=AUDIO_ATOL, rtol=0)
    assert not torch.equal(fast[0]["video"], fast[1]["video"])
    # training picks one stored window at random per (seed, epoch, index)
    train = build_dataset(tmp_path, cfg, train=True)
    assert len(train) == 8


def test_cli_prepare_with_workers_and_refusal_to_overwrite(media, tmp_path, capsys):
    args = ["prepare", str(media / "mixed.csv"), "--out", str(tmp_path / "s"), "--workers", "2",
            "--clips-per-shard", "2"]
    for item in ("data.num_frames=4", "data.frame_stride=2", "data.short_side=36",
                 "data.crop_size=32", "data.audio_seconds=0.64", "data.mel_bins=32"):
        args += ["--set", item]
    assert main(args) == 0
    out = capsys.readouterr()
    assert "prepared 4 clips in 2 shards" in out.out and "1 skipped" in out.out
    one = prepare_shards(media / "mixed.csv", tmp_path / "one", tiny_cfg().data,
                         clips_per_shard=2, progress=False)
    # the same bytes with 1 or 2 workers
    for shard in one["shards"]:
        assert (tmp_path / "s" / shard["tar"]).read_bytes() == \
            (tmp_path / "one" / shard["tar"]).read_bytes()
    assert main(args) == 2
    assert "already holds shards" in capsys.readouterr().err
    assert main(["prepare", str(tmp_path / "none.csv"), "--out", str(tmp_path / "x")]) == 2
