"""`avmae prepare`: standard tar shards (format 2: whole clips) with offset indexes, meta.json, and
samples drawn as the raw path draws them."""

import json
import logging
import shutil
import tarfile

import numpy as np
import pytest
import torch
from test_dataset import assert_same_batches, make_media, tiny_cfg

from avmae.cli import main
from avmae.config import ConfigError
from avmae.data import build_dataset, build_loader, prepare_shards



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
    assert (meta["format"], meta["version"]) == ("avmae-shards", 2)
    assert meta["clips"] == 8 and meta["skipped"] == 0 and meta["every"] == 2
    assert [s["clips"] for s in meta["shards"]] == [3, 3, 2]
    assert meta["data"]["short_side"] == 36 and "num_frames" not in meta["data"]
    assert meta["label_columns"] == ["label", "labels", "verb", "noun"]
    assert meta["vocab"]["verb"] == ["close", "open", "take"]
    shard = meta["shards"][1]
    index = json.loads((shards / shard["index"]).read_text())["clips"]
    raw = (shards / shard["tar"]).read_bytes()
    with tarfile.open(shards / shard["tar"]) as tar:
        names = tar.getnames()
        assert names[:3] == ["00000003.mjpeg", "00000003.logmel", "00000003.json"]
        for entry in index:
            video, audio = entry["video"], entry["audio"]
            mjpeg = tar.extractfile(f"{entry['key']}.mjpeg").read()
            assert raw[video["offset"]:video["offset"] + video["size"]] == mjpeg
            # the whole clip: 1 s at 25 fps, every 2nd frame -> 13 JPEG files back to back
            offsets = video["frame_offsets"]
            assert len(offsets) == 14 and offsets[-1] == len(mjpeg)
            for a, b in zip(offsets[:-1], offsets[1:]):
                assert mjpeg[a:a + 2] == b"\xff\xd8" and mjpeg[b - 2:b] == b"\xff\xd9"
            assert (video["height"], video["width"], video["fps"]) == (36, 48, 25.0)
            logmel = tar.extractfile(f"{entry['key']}.logmel").read()
            assert raw[audio["offset"]:audio["offset"] + audio["size"]] == logmel
            # the whole second of audio (1 + (16000 - 400) // 160 frames of 32 bins)
            assert np.frombuffer(logmel, np.float16).shape == (98 * 32,) == (audio["frames"] * 32,)
            described = json.loads(tar.extractfile(f"{entry['key']}.json").read())
            assert described == entry
    assert index[0]["targets"]["labels"] == ["a", "b"] and index[0]["path"] == "clip3.mp4"


def test_shard_samples_match_raw_samples(media, shards):
    """Evaluation, 1 and 3 views: the window is drawn by the raw path's code; with every=2 it
    starts on the nearest kept frame, so the frames are the raw path's or one source frame
    earlier, and JPEG costs a few grey levels."""
    cfg = tiny_cfg()
    for views in (1, 3):
        raw = build_dataset(media / "good.csv", cfg, train=False, label_column="verb,noun",
                            num_views=views)
        fast = build_dataset(shards, cfg, train=False, label_column="verb,noun", num_views=views)
        assert len(fast) == len(raw) == 8 * views and fast.vocab == raw.vocab
        for i in range(len(raw)):
            a, b = raw[i], fast[i]
            assert (a["video"] - b["video"]).abs().max() <= 0.15    # one index step: 16 / 127.5
            for k in ("label", "index", "view", "has_audio", "has_video"):
                assert torch.equal(a[k], b[k]), k


def test_every_frame_kept_gives_the_raw_paths_windows(media, tmp_path):
    """every=1: the same centre draw and the same source frames as the raw path, in training
    (random windows and crops from the same rng) and evaluation; the audio within float16 and
    the log-mel frame grid (the stored frames nearest the raw window's)."""
    cfg = tiny_cfg()
    prepare_shards(media / "good.csv", tmp_path, cfg.data, every=1, jpeg_quality=95,
                   progress=False)
    for train, views in ((True, 1), (False, 3)):
        raw = build_dataset(media / "good.csv", cfg, train=train, num_views=views)
        fast = build_dataset(tmp_path, cfg, train=train, num_views=views)
        for epoch in (0, 5):
            raw.set_epoch(epoch)
            fast.set_epoch(epoch)
            for i in range(len(raw)):
                a, b = raw[i], fast[i]
                assert (a["video"] - b["video"]).abs().max() < 0.06, (train, epoch, i)
                assert (a["audio"] - b["audio"]).abs().max() < 0.02, (train, epoch, i)


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
    with pytest.raises(ConfigError, match=r"data.short_side=36 but the config has 48"):
        build_dataset(shards, tiny_cfg("data.short_side=48"), train=True)
    with pytest.raises(ConfigError, match=r"data.window=hamming"):
        build_dataset(shards, tiny_cfg("data.window=hanning"), train=True)
    # every 2nd frame kept: stride 3 cannot be served, stride 1 neither
    for stride in (1, 3):
        with pytest.raises(ConfigError, match="re-run `avmae prepare` with --keep-every 1"):
            build_dataset(shards, tiny_cfg(f"data.frame_stride={stride}"), train=True)
    # crop, jitter, normalisation and the input length are chosen at load time
    build_dataset(shards, tiny_cfg("data.crop_size=16", "data.audio_mean=0"), train=True)
    build_dataset(shards, tiny_cfg(), train=False, num_views=3)


def test_one_set_of_shards_serves_every_input_length(shards):
    """Prepared once; read as 4 frames at stride 2, 8 at stride 4, 2 at stride 2."""
    for num, stride in ((4, 2), (8, 4), (2, 2)):
        cfg = tiny_cfg(f"data.num_frames={num}", f"data.frame_stride={stride}",
                       "model.tubelet_frames=2")
        ds = build_dataset(shards, cfg, train=True)
        assert ds[0]["video"].shape == (3, num, 32, 32)


def test_format_1_shards_are_refused_with_one_line(shards, tmp_path):
    old = tmp_path / "old"
    old.mkdir()
    meta = json.loads((shards / "meta.json").read_text())
    (old / "meta.json").write_text(json.dumps(dict(meta, version=1)))
    with pytest.raises(ConfigError) as err:
        build_dataset(old, tiny_cfg(), train=True)
    assert "version 1" in str(err.value) and "avmae prepare" in str(err.value)
    assert "\n" not in str(err.value)


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


def test_resume_after_a_kill_keeps_finished_shards_and_gives_the_same_bytes(media, tmp_path,
                                                                          monkeypatch):
    import avmae.data.prepare as prep
    cfg = tiny_cfg()
    whole = prepare_shards(media / "mixed.csv", tmp_path / "whole", cfg.data, clips_per_shard=2,
                           progress=False)
    decode, calls = prep.decode_clip, []

    def killed_at_row_4(clip, *args):
        calls.append(clip.path.name)
        if len(calls) == 5:
            raise KeyboardInterrupt  # the process dies while shard 1 is being written
        return decode(clip, *args)
    monkeypatch.setattr(prep, "decode_clip", killed_at_row_4)
    with pytest.raises(KeyboardInterrupt):
        prepare_shards(media / "mixed.csv", tmp_path / "cut", cfg.data, clips_per_shard=2,
                       progress=False)
    assert not (tmp_path / "cut" / "meta.json").exists()
    with pytest.raises(ConfigError, match="data.short_side"):
        prepare_shards(media / "mixed.csv", tmp_path / "cut", tiny_cfg("data.short_side=40").data,
                       clips_per_shard=2, resume=True, progress=False)
    calls.clear()
    monkeypatch.setattr(prep, "decode_clip", lambda clip, *a: calls.append(clip.path.name)
                        or decode(clip, *a))
    meta = prepare_shards(media / "mixed.csv", tmp_path / "cut", cfg.data, clips_per_shard=2,
                          resume=True, progress=False)
    # shard 0 (rows 0 and 1) is kept; rows 2-4 (a skipped clip, shard 1's) are decoded again
    assert calls == ["garbage.mp4", "video_only.mp4", "audio_only.mp4"]
    assert {k: v for k, v in meta.items() if k != "source"} == \
        {k: v for k, v in whole.items() if k != "source"}
    for shard in whole["shards"]:
        for name in (shard["tar"], shard["index"]):
            assert (tmp_path / "cut" / name).read_bytes() == (tmp_path / "whole" / name).read_bytes()
    assert sorted(p.name for p in (tmp_path / "cut").iterdir()) == \
        sorted(p.name for p in (tmp_path / "whole").iterdir())


def test_workers_never_run_more_than_a_few_clips_ahead():
    from avmae.data.prepare import _ordered

    class Pool:  # runs tasks at once and records how many results wait for the writer
        def __init__(self):
            self.waiting, self.most = 0, 0

        def apply_async(self, fn, args):
            self.waiting += 1
            self.most = max(self.most, self.waiting)
            pool = self

            class Result:
                def get(self):
                    pool.waiting -= 1
                    return fn(*args)
            return Result()
    pool = Pool()
    assert list(_ordered(pool, lambda x: x * 2, iter(range(1000)), ahead=4)) == \
        [2 * x for x in range(1000)]
    assert pool.most == 4


def test_progress_bar_counts_skips_by_reason(media, tmp_path, capsys):
    prepare_shards(media / "mixed.csv", tmp_path, tiny_cfg().data, progress=True)
    err = capsys.readouterr().err
    assert "clip/s" in err and "skipped: cannot open 1" in err   # rate, and skips by kind


def test_prepare_memory_does_not_grow_with_the_manifest(media, tmp_path, monkeypatch, caplog):
    """A 2 M-row manifest must not cost memory per row: the manifest is streamed and meta.json
    is built from counts, not from every index entry. Peak Python memory (tracemalloc) of a
    prepare of 4,000 rows stays within a small margin of one of 1,000 rows. Each distinct file is
    decoded for real once and its result reused: the test measures prepare, not PyAV."""
    import tracemalloc

    import avmae.data.prepare as prep
    cfg, decode, cache = tiny_cfg(), prep.decode_clip, {}

    def decode_once(clip, *args):
        if clip.path not in cache:
            cache[clip.path] = decode(clip, *args)
        return cache[clip.path]
    monkeypatch.setattr(prep, "decode_clip", decode_once)
    caplog.set_level(logging.ERROR, "avmae.data.prepare")  # pytest would keep every warning
    # good, one-modality and unreadable files; labels with a few classes; segments on some rows
    files = ["clip0.mp4", "clip1.mp4", "video_only.mp4", "audio_only.mp4", "clip2.mp4",
             "garbage.mp4", "clip3.mp4"]

    def manifest(rows: int):
        path = tmp_path / f"m{rows}.csv"
        with open(path, "w") as f:
            f.write("path,label,labels\n")
            f.writelines(f"{media / files[i % len(files)]},c{i % 5},c{i % 3};d{i % 4}\n"
                         for i in range(rows))
        return path

    def peak(rows: int) -> int:
        path = manifest(rows)
        tracemalloc.start()
        try:
            meta = prepare_shards(path, tmp_path / f"s{rows}", cfg.data, clips_per_shard=16,
                                  progress=False)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
            assert meta["clips"] + meta["skipped"] == rows
            shutil.rmtree(tmp_path / f"s{rows}")

    peak(len(files))  # warm: every file decoded once, imports done
    small, large = peak(1000), peak(4000)
    assert large < small + 256 * 1024, (small, large)


def test_skipped_clips_are_listed_up_to_a_bound_and_counted_by_reason(media, tmp_path,
                                                                       monkeypatch):
    """Past the first SKIPPED_LISTED, skipped clips are counted by reason, not listed: in a
    shard's index (skipped_more) and in meta.json (skipped_reasons); a resumed prepare counts
    the same."""
    import avmae.data.prepare as prep
    monkeypatch.setattr(prep, "SKIPPED_LISTED", 2)
    rows = ["garbage.mp4", "empty.mp4", "garbage.mp4", "empty.mp4", "clip0.mp4", "clip1.mp4",
            "garbage.mp4", "garbage.mp4", "garbage.mp4"]
    (media / "skips.csv").write_text("path\n" + "\n".join(rows) + "\n")
    meta = prepare_shards(media / "skips.csv", tmp_path / "a", tiny_cfg().data,
                          clips_per_shard=1, progress=False)
    assert (meta["clips"], meta["skipped"]) == (2, 7)
    assert sum(meta["skipped_reasons"].values()) == 7
    assert [s["line"] for s in meta["skipped_clips"]] == [2, 3]
    index = json.loads((tmp_path / "a" / "shard-000000.idx").read_text())
    assert [s["line"] for s in index["skipped"]] == [2, 3]
    assert sum(index["skipped_more"].values()) == 2
    assert "skipped_more" not in json.loads((tmp_path / "a" / "shard-000001.idx").read_text())
    # a prepare killed after shard 0 (at clip1's row), resumed: the same meta.json
    decode = prep.decode_clip

    def killed_at_clip1(clip, *args):
        if clip.path.name == "clip1.mp4":
            raise KeyboardInterrupt
        return decode(clip, *args)
    monkeypatch.setattr(prep, "decode_clip", killed_at_clip1)
    with pytest.raises(KeyboardInterrupt):
        prepare_shards(media / "skips.csv", tmp_path / "b", tiny_cfg().data, clips_per_shard=1,
                       progress=False)
    assert sorted(p.name for p in (tmp_path / "b").glob("shard-*")) == \
        ["shard-000000.idx", "shard-000000.tar"]
    monkeypatch.setattr(prep, "decode_clip", decode)
    resumed = prepare_shards(media / "skips.csv", tmp_path / "b", tiny_cfg().data,
                             clips_per_shard=1, resume=True, progress=False)
    assert resumed == meta
    assert (tmp_path / "b" / "meta.json").read_bytes() == (tmp_path / "a" / "meta.json").read_bytes()
