"""Datasets and loaders over a manifest of real (tiny) mp4 files: shapes, determinism, resume,
ranks, and the broken-media policy."""

import logging

import pytest
import torch
from media import write_audio_only, write_clip, write_garbage, write_video_only, write_zero_bytes

from avmae.config import ConfigError, build_config
from avmae.data.dataset import EpochBatchSampler, build_dataset, build_loader

TINY = ["data.num_frames=4", "data.frame_stride=2", "data.short_side=36", "data.crop_size=32",
        "data.audio_seconds=0.64", "data.mel_bins=32", "data.num_workers=0"]
VERBS, NOUNS, LABELS = ["open", "close", "take"], ["door", "lid"], ["a", "b", "c"]


def tiny_cfg(*more):
    return build_config(overrides=TINY + list(more))


def make_media(folder):
    """8 good clips (good.csv) and good + broken + one-modality clips (mixed.csv)."""
    rows = []
    for i in range(8):
        write_clip(folder / f"clip{i}.mp4", seconds=1.0, size=(64, 48))
        rows.append(f"clip{i}.mp4,{LABELS[i % 3]},{LABELS[i % 3]};{LABELS[(i + 1) % 3]},"
                    f"{VERBS[i % 3]},{NOUNS[i % 2]}")
    header = "path,label,labels,verb,noun\n"
    (folder / "good.csv").write_text(header + "\n".join(rows) + "\n")
    write_garbage(folder / "garbage.mp4")
    write_zero_bytes(folder / "empty.mp4")
    write_video_only(folder / "video_only.mp4", seconds=1.0, size=(64, 48))
    write_audio_only(folder / "audio_only.mp4", seconds=1.0)
    mixed = rows[:2] + ["garbage.mp4,a,a,open,door", "video_only.mp4,b,b,close,lid",
                        "audio_only.mp4,c,c,take,door"]
    (folder / "mixed.csv").write_text(header + "\n".join(mixed) + "\n")
    (folder / "broken.csv").write_text("path\ngarbage.mp4\nempty.mp4\n")
    return folder


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    return make_media(tmp_path_factory.mktemp("media"))


def batches(loader):
    return list(loader)


def assert_same_batches(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for k in x:
            if torch.is_tensor(x[k]):
                assert torch.equal(x[k], y[k]), k
            else:
                assert x[k] == y[k], k


def test_manifest_batches_have_design_shapes_with_two_workers(media):
    cfg = tiny_cfg()
    ds = build_dataset(media / "good.csv", cfg, train=True, label_column="verb,noun")
    assert len(ds) == 8 and ds.vocab == {"verb": sorted(VERBS), "noun": sorted(NOUNS)}
    loader = build_loader(ds, cfg, train=True, batch_size=3, num_workers=2)
    out = batches(loader)
    assert len(loader) == len(out) == 2  # 8 // 3, last partial batch dropped in training
    b = out[0]
    assert b["video"].shape == (3, 3, 4, 32, 32) and b["video"].dtype == torch.float32
    assert b["audio"].shape == (3, 1, 64, 32) and b["audio"].dtype == torch.float32
    assert -1.0 <= b["video"].min() and b["video"].max() <= 1.0
    assert b["has_audio"].all() and b["has_video"].all() and b["num_skipped"] == 0
    assert b["label"].shape == (3, 2) and b["label"].dtype == torch.int64
    assert b["index"].dtype == torch.int64 and b["view"].tolist() == [0, 0, 0]
    # labels follow the clips: verb of clip i is VERBS[i % 3]
    for index, (verb, noun) in zip(b["index"].tolist(), b["label"].tolist()):
        assert ds.vocab["verb"][verb] == VERBS[index % 3]
        assert ds.vocab["noun"][noun] == NOUNS[index % 2]


@pytest.mark.parametrize("column, shape, dtype", [
    ("label", (), torch.int64), ("labels", (3,), torch.float32), ("verb", (), torch.int64),
    (None, None, None)])
def test_label_encodings(media, column, shape, dtype):
    ds = build_dataset(media / "good.csv", tiny_cfg(), train=False, label_column=column)
    sample = ds[4]  # label b, labels b;c
    if column is None:
        assert "label" not in sample and ds.vocab is None
        return
    assert sample["label"].shape == shape and sample["label"].dtype == dtype
    if column == "labels":
        assert sample["label"].tolist() == [0.0, 1.0, 1.0]
    if column == "label":
        assert sample["label"].item() == 1


def test_same_seed_same_batches_for_0_and_2_workers(media):
    cfg = tiny_cfg()
    ds = build_dataset(media / "good.csv", cfg, train=True, label_column="label")
    kw = dict(train=True, batch_size=4, seed=3, epoch=1)
    a = batches(build_loader(ds, cfg, num_workers=0, **kw))
    b = batches(build_loader(ds, cfg, num_workers=2, **kw))
    assert_same_batches(a, b)
    c = batches(build_loader(ds, cfg, num_workers=0, **dict(kw, epoch=2)))
    assert not torch.equal(torch.cat([x["index"] for x in a]), torch.cat([x["index"] for x in c]))


def test_augmentation_is_a_function_of_seed_epoch_index(media):
    cfg = tiny_cfg()
    ds = build_dataset(media / "good.csv", cfg, train=True)
    first = ds[5]["video"]
    assert torch.equal(first, ds[5]["video"])
    views = []
    for epoch in range(4):
        ds.set_epoch(epoch)
        views.append(ds[5]["video"])
    assert any(not torch.equal(views[0], v) for v in views[1:])  # the crop changes per epoch
    ds.set_epoch(0)
    assert torch.equal(ds[5]["video"], views[0])


def test_skip_batches_resumes_at_the_same_data_position(media):
    cfg = tiny_cfg()
    ds = build_dataset(media / "good.csv", cfg, train=True)
    kw = dict(train=True, batch_size=2, seed=0, epoch=5, num_workers=0)
    full = batches(build_loader(ds, cfg, **kw))
    resumed_loader = build_loader(ds, cfg, skip_batches=3, **kw)
    assert resumed_loader.batches_per_epoch == 4 and len(resumed_loader) == 1
    assert_same_batches(batches(resumed_loader), full[3:])


@pytest.mark.parametrize("n, world, batch, drop_last", [(10, 3, 2, False), (10, 3, 2, True),
                                                        (7, 4, 3, False), (8, 2, 4, True)])
def test_ranks_partition_the_epoch(n, world, batch, drop_last):
    per_rank = [EpochBatchSampler(n, batch_size=batch, shuffle=True, seed=1, epoch=2, rank=r,
                                  world_size=world, drop_last=drop_last) for r in range(world)]
    assert len({len(s) for s in per_rank}) == 1  # the same number of batches on every rank
    seen = [i for s in per_rank for b in s for i in b]
    if not drop_last:
        assert set(seen) == set(range(n))       # every sample, padded by wrapping
        assert len(seen) == -(-n // world) * world
    ranks = [{i for b in s for i in b} for s in per_rank]
    if world * -(-n // world) == n:             # no padding -> disjoint
        assert all(not (ranks[a] & ranks[b]) for a in range(world) for b in range(a + 1, world))


def test_eval_order_and_rank_split_through_the_loader(media):
    cfg = tiny_cfg()
    ds = build_dataset(media / "good.csv", cfg, train=False)
    got = [torch.cat([b["index"] for b in build_loader(ds, cfg, train=False, batch_size=3,
                                                       rank=r, world_size=3, num_workers=0)])
           for r in range(3)]
    # in order, dealt round-robin, padded by wrapping to 9: rank 2 gets 2, 5, and 0 again
    assert [g.tolist() for g in got] == [[0, 3, 6], [1, 4, 7], [2, 5, 0]]


def test_broken_clip_is_skipped_and_counted_missing_modality_filled(media, caplog):
    cfg = tiny_cfg()
    ds = build_dataset(media / "mixed.csv", cfg, train=False, label_column="label")
    with caplog.at_level(logging.WARNING, logger="avmae.data.dataset"):
        (b,) = batches(build_loader(ds, cfg, train=False, batch_size=5, num_workers=0))
    assert b["num_skipped"] == 1 and b["index"].tolist() == [0, 1, 3, 4]
    assert b["has_audio"].tolist() == [True, True, False, True]     # video_only.mp4
    assert b["has_video"].tolist() == [True, True, True, False]     # audio_only.mp4
    assert b["audio"][2].abs().sum() == 0 and b["video"][3].abs().sum() == 0
    assert b["audio"][0].abs().sum() > 0 and b["video"][2].abs().sum() > 0
    messages = [r.getMessage() for r in caplog.records]
    assert sum("garbage.mp4: skipped" in m for m in messages) == 1
    assert sum("video_only.mp4: no audio" in m for m in messages) == 1
    assert ds[2] is None and ds[2] is None  # a second failure of the same clip is not logged again
    assert sum("garbage.mp4" in r.getMessage() for r in caplog.records) == 1


def test_skip_policy_skips_clips_missing_a_modality(media):
    cfg = tiny_cfg("data.missing_modality=skip")
    ds = build_dataset(media / "mixed.csv", cfg, train=False)
    (b,) = batches(build_loader(ds, cfg, train=False, batch_size=5, num_workers=0))
    assert b["num_skipped"] == 3 and b["index"].tolist() == [0, 1]
    # a video-only model does not need audio: the video-only clip is kept, the audio-only one not
    cfg = tiny_cfg("data.missing_modality=skip", "model.modalities=video")
    ds = build_dataset(media / "mixed.csv", cfg, train=False)
    (b,) = batches(build_loader(ds, cfg, train=False, batch_size=5, num_workers=0))
    assert b["index"].tolist() == [0, 1, 3] and b["num_skipped"] == 2


def test_a_batch_of_only_broken_clips_keeps_its_shapes(media):
    cfg = tiny_cfg()
    ds = build_dataset(media / "broken.csv", cfg, train=True)
    (b,) = batches(build_loader(ds, cfg, train=True, batch_size=2, num_workers=0))
    assert b["num_skipped"] == 2
    assert b["video"].shape == (0, 3, 4, 32, 32) and b["audio"].shape == (0, 1, 64, 32)


def test_data_errors_are_config_errors(media, tmp_path):
    cfg = tiny_cfg()
    (tmp_path / "wrong_root.csv").write_text("path\nclip0.mp4\nclip1.mp4\n")
    with pytest.raises(ConfigError, match="paths must be relative to the manifest's folder"):
        build_dataset(tmp_path / "wrong_root.csv", cfg, train=True)
    with pytest.raises(ConfigError, match="'c' is not in the vocabulary"):
        build_dataset(media / "good.csv", cfg, train=True, label_column="label", vocab=["a", "b"])
    with pytest.raises(ConfigError, match="not found"):
        build_dataset(tmp_path / "missing.csv", cfg, train=True)
    with pytest.raises(ConfigError, match="not a shards folder"):
        build_dataset(tmp_path, cfg, train=True)


def test_views_multiply_the_dataset(media):
    ds = build_dataset(media / "good.csv", tiny_cfg(), train=False, num_views=3)
    assert len(ds) == 24
    s = ds[7]
    assert s["index"].item() == 2 and s["view"].item() == 1
    assert not torch.equal(ds[6]["video"], ds[8]["video"])  # first and last window differ
    assert torch.equal(ds[6]["video"], ds[6]["video"])      # evaluation is not random


@pytest.mark.parametrize("workers", [0, 1])
def test_run_loader_gives_each_epochs_batches_across_epochs(media, workers):
    """The training loops' one loader for the whole run: epoch after epoch the batches (and their
    augmentation) of the per-epoch loader, cut to the batches the steps use, from any start."""
    from avmae.data import build_train_loader
    cfg = tiny_cfg(f"data.num_workers={workers}", "data.prefetch_factor=2")
    ds = build_dataset(media / "good.csv", cfg, train=True)
    per_epoch, total = 3, 8  # 4 batches of 2 per epoch, of which the steps use 3
    expected = []
    for epoch in range(3):
        expected += batches(build_loader(ds, cfg, train=True, batch_size=2, seed=1, epoch=epoch,
                                         num_workers=0))[:per_epoch]
    for start in (0, 4):  # a fresh run, and one resumed in the middle of epoch 1
        loader = build_train_loader(ds, cfg, batch_size=2, rank=0, world_size=1, seed=1,
                                    per_epoch=per_epoch, start=start, total=total)
        got = batches(loader)
        assert len(got) == len(loader) == total - start
        assert_same_batches(got, expected[start:total])
