"""`avmae synth`: real mp4 files, deterministic, balanced, and built so that the class needs both
senses (video shows the shape, audio carries the timbre, their events are in sync)."""

import csv
import json
import hashlib
from dataclasses import asdict, replace

import av
import numpy as np
import pytest

from avmae import cli
from avmae.cli import synth

SEED = 3
SMALL = dict(clips=16, seconds=2.0, size=80, fps=16, test_fraction=0.25)


def _make(tmp_path_factory, name, seed, workers=1):
    out = tmp_path_factory.mktemp(name)
    synth.generate(out, seed=seed, workers=workers, progress=False, **SMALL)
    return out


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return _make(tmp_path_factory, "synth_a", SEED)


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def rows(out):
    return read_csv(out / "train.csv") + read_csv(out / "test.csv")


def spec_of(out, row):
    names = [c["name"] for c in json.loads((out / "classes.json").read_text())["classes"]]
    index = int(row["path"].split("/")[1].split(".")[0])
    g = json.loads((out / "classes.json").read_text())["generator"]
    return synth.clip_spec(g["seed"], index, names.index(row["label"]),
                           seconds=g["seconds"], size=g["size"], fps=g["fps"])


def decode(path):
    """(frames uint8 (T, H, W, 3), audio float (C, S), sample rate, stream info)"""
    with av.open(str(path)) as c:
        v, a = c.streams.video[0], c.streams.audio[0]
        info = dict(vcodec=v.codec_context.name, pix_fmt=v.codec_context.pix_fmt,
                    acodec=a.codec_context.name, channels=a.codec_context.channels,
                    duration=float(c.duration) / av.time_base)
        frames = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])
    with av.open(str(path)) as c:
        audio = np.concatenate([f.to_ndarray() for f in c.decode(audio=0)], axis=1)
        sr = c.streams.audio[0].sample_rate
    return frames, audio, sr, info


# --- files and streams ------------------------------------------------------------------------

def test_clips_are_h264_aac_mp4_of_expected_size_and_duration(data):
    rates, channels = set(), set()
    for row in rows(data):
        spec = spec_of(data, row)
        frames, audio, sr, info = decode(data / row["path"])
        assert (info["vcodec"], info["pix_fmt"], info["acodec"]) == ("h264", "yuv420p", "aac")
        assert frames.shape == (round(SMALL["seconds"] * SMALL["fps"]), 80, 80, 3)
        assert sr == spec.sample_rate and audio.shape[0] == info["channels"] == spec.channels
        # AAC pads its last 1024-sample frame; the encoder delay is removed on decoding
        assert spec.num_samples <= audio.shape[1] <= spec.num_samples + 1024
        assert abs(info["duration"] - SMALL["seconds"]) < 0.1
        assert np.abs(audio).max() < 1.0
        rates.add(sr)
        channels.add(spec.channels)
    assert len(rates) >= 2 and channels == {1, 2}          # resampling and downmix get exercised


def test_write_clip_honours_size_fps_and_seconds(tmp_path):
    spec = synth.clip_spec(0, 5, 6, seconds=1.0, size=32, fps=10)
    synth.write_clip(tmp_path / "x.mp4", spec)
    frames, audio, sr, _ = decode(tmp_path / "x.mp4")
    assert frames.shape == (10, 32, 32, 3)
    assert audio.shape[1] >= sr and not (tmp_path / "x.mp4.part").exists()


def test_decoded_audio_matches_rendered_audio_without_delay(data):
    row = rows(data)[0]
    spec = spec_of(data, row)
    _, audio, _, _ = decode(data / row["path"])
    ref = synth.render_audio(spec)
    n = ref.shape[1]
    lags = range(-256, 257)
    corr = [np.dot(audio[0, max(0, d):n + min(0, d)], ref[0, max(0, -d):n - max(0, d)]) for d in lags]
    assert list(lags)[int(np.argmax(corr))] == 0                     # no AAC priming offset


# --- manifests and classes --------------------------------------------------------------------

def test_manifests_split_and_label_columns(data):
    train, test = read_csv(data / "train.csv"), read_csv(data / "test.csv")
    assert list(train[0]) == ["path", "label", "labels", "verb", "noun"]
    classes = json.loads((data / "classes.json").read_text())["classes"]
    by_name = {c["name"]: c for c in classes}
    assert len(by_name) == synth.NUM_CLASSES
    paths = [r["path"] for r in train + test]
    assert len(set(paths)) == SMALL["clips"] and not {r["path"] for r in train} & {r["path"] for r in test}
    assert all((data / p).is_file() for p in paths)
    # 16 clips: 2 per class, one of each in test (stratified)
    for name in by_name:
        assert sum(r["label"] == name for r in train) == 1 and sum(r["label"] == name for r in test) == 1
    for r in train + test:
        c = by_name[r["label"]]
        assert (r["verb"], r["noun"]) == (c["timbre"], c["shape"])
        tags = r["labels"].split(";")
        assert tags[:2] == [f"shape_{c['shape']}", f"timbre_{c['timbre']}"]
        assert tags[2:] in ([], ["hum"])
        assert tags[2:] == (["hum"] if spec_of(data, r).hum > 0 else [])


def test_class_rule_pairs_each_shape_with_two_timbres_and_vice_versa():
    table = synth.class_table()
    assert len({(c["shape"], c["timbre"]) for c in table}) == 8             # both identify the class
    for s in synth.SHAPES:
        assert sum(c["shape"] == s for c in table) == 2                     # video alone: 2 candidates
    for t in synth.TIMBRES:
        assert sum(c["timbre"] == t for c in table) == 2                    # audio alone: 2 candidates


@pytest.mark.parametrize("clips,fraction", [(400, 0.25), (50, 0.5), (17, 0.1)])
def test_split_plan_is_balanced_and_stratified(clips, fraction):
    labels, is_test = synth.split_plan(clips, 0, fraction)
    counts = np.bincount(labels, minlength=8)
    assert counts.max() - counts.min() <= 1
    for k in range(8):
        n, n_test = counts[k], int(is_test[labels == k].sum())
        assert 1 <= n_test <= n - 1 and abs(n_test - fraction * n) <= 1
    assert not np.array_equal(labels, synth.split_plan(clips, 1, fraction)[0])


# --- determinism ------------------------------------------------------------------------------

def test_same_seed_same_dataset_any_worker_count(data, tmp_path_factory):
    again = _make(tmp_path_factory, "synth_b", SEED, workers=2)
    for name in ("train.csv", "test.csv", "classes.json", "clips.jsonl"):
        assert (data / name).read_bytes() == (again / name).read_bytes()
    for row in rows(data)[:4]:
        a, b = decode(data / row["path"]), decode(again / row["path"])
        assert np.array_equal(a[0][0], b[0][0]) and np.array_equal(a[1], b[1])
    # x264 single-threaded and FFmpeg's AAC are bit-exact: the files are identical too
    digest = lambda p: hashlib.sha256(p.read_bytes()).hexdigest()
    assert all(digest(data / r["path"]) == digest(again / r["path"]) for r in rows(data))


def test_different_seed_different_dataset(data, tmp_path_factory):
    other = _make(tmp_path_factory, "synth_c", SEED + 1)
    assert (data / "train.csv").read_text() != (other / "train.csv").read_text()
    first = "clips/00000.mp4"
    assert not np.array_equal(decode(data / first)[0][0], decode(other / first)[0][0])


# --- the class needs both senses --------------------------------------------------------------

def test_nuisances_do_not_depend_on_the_label():
    """Changing only the label changes only the label: no colour, size, rate, pitch or event
    time can leak the class. Video depends on the shape only, audio on the timbre only."""
    specs = [synth.clip_spec(7, 11, k) for k in range(8)]
    assert all(asdict(replace(s, label=0)) == asdict(specs[0]) for s in specs)
    video = {k: synth.render_video(specs[k]) for k in (0, 1, 2)}          # disc, disc, square
    audio = {k: synth.render_audio(specs[k]) for k in (1, 2, 3)}          # buzz, buzz, chirp
    assert np.array_equal(video[0], video[1]) and not np.array_equal(video[1], video[2])
    assert np.array_equal(audio[1], audio[2]) and not np.array_equal(audio[2], audio[3])


def shape_from_frame(frame, spec):
    """A trivial shape reader: object pixels (nearer the object's colour than the background's),
    their fill of the enclosing circle, and whether the centre is a hole."""
    x = frame.astype(float) / 255
    obj = np.linalg.norm(x - np.array(spec.colour), axis=-1) < np.linalg.norm(x - np.array(spec.background), axis=-1)
    ys, xs = np.nonzero(obj)
    cy, cx = ys.mean(), xs.mean()
    if not obj[int(round(cy - 0.5)), int(round(cx - 0.5))]:
        return "ring"
    fill = obj.sum() / (np.pi * (np.sqrt((ys - cy) ** 2 + (xs - cx) ** 2).max() + 0.5) ** 2)
    return "disc" if fill > 0.78 else "square" if fill > 0.53 else "triangle"   # ~0.9, 0.64, 0.42


def timbre_from_audio(audio, sr, onsets):
    """A trivial timbre reader on 60 ms after each onset (above the hum's 300 Hz): share of the
    energy at the spectral peak, at its 3rd harmonic, and the peak's drift 30 ms later."""
    x = audio.mean(0)
    n = int(0.06 * sr)
    f = np.fft.rfftfreq(n, 1 / sr)
    votes = []
    for t in onsets:
        start = int(round((t + 0.005) * sr))
        p1, p2 = (np.abs(np.fft.rfft(x[s:s + n] * np.hanning(n))) ** 2 * (f > 300)
                  for s in (start, start + n // 2))
        peak, later = f[np.argmax(p1)], f[np.argmax(p2)]
        share = lambda c: p1[np.abs(f / c - 1) < 0.06].sum() / p1.sum()
        if share(peak) < 0.4:
            votes.append("noise")
        elif share(3 * peak) > 0.05:
            votes.append("buzz")
        elif share(peak) > 0.97 and abs(np.log2(later / peak)) < 0.05:
            votes.append("tone")
        else:
            votes.append("chirp")
    return max(set(votes), key=votes.count)


def test_shape_is_seen_and_timbre_is_heard(data):
    for row in rows(data):
        spec = spec_of(data, row)
        frames, audio, sr, _ = decode(data / row["path"])
        assert shape_from_frame(frames[0], spec) == row["noun"]
        assert timbre_from_audio(audio, sr, spec.event_times) == row["verb"]


def test_sound_onsets_coincide_with_visible_events(data):
    """Events found in the decoded frames are the clip's event frames, and onsets found in the
    decoded audio fall within one frame of them: the object swells and flashes as its sound starts."""
    fps = SMALL["fps"]
    for row in rows(data):
        spec = spec_of(data, row)
        frames, audio, sr, _ = decode(data / row["path"])
        k = len(spec.event_frames)
        assert k >= 1
        change = np.abs(np.diff(frames.astype(float), axis=0)).mean(axis=(1, 2, 3))   # frame n vs n-1
        seen = sorted(np.argsort(change)[-k:] + 1)
        # audio energy above 300 Hz (no hum) per video-frame-long window; onsets = biggest rises
        x = audio.mean(0)
        spectrum = np.fft.rfft(x)
        spectrum[np.fft.rfftfreq(len(x), 1 / sr) < 300] = 0
        x = np.fft.irfft(spectrum, len(x))
        hop = sr / fps
        energy = np.array([np.mean(x[int(i * hop):int((i + 1) * hop)] ** 2) for i in range(len(frames))])
        rise = energy[1:] / (energy[:-1] + 1e-12)
        heard = sorted(np.argsort(rise)[-k:] + 1)
        assert seen == list(spec.event_frames)
        # AAC's pre-echo may smear an onset a few ms earlier, into the previous frame's window
        assert np.abs(np.array(heard) - np.array(seen)).max() <= 1
        assert rise[np.array(spec.event_frames) - 1].min() > 10


# --- bad arguments ----------------------------------------------------------------------------

@pytest.mark.parametrize("extra", [["--clips", "8"], ["--size", "72"], ["--seconds", "0.5"],
                                   ["--fps", "0"], ["--test-fraction", "1"], ["--workers", "0"],
                                   ["--seed", "-1"]])
def test_bad_arguments_exit_2(tmp_path, capsys, extra):
    assert cli.main(["synth", str(tmp_path / "out"), *extra]) == 2
    err = capsys.readouterr().err
    assert extra[0] in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_unparsable_argument_exits_2(tmp_path):
    with pytest.raises(SystemExit) as exit_:                         # argparse's own type error
        cli.main(["synth", str(tmp_path / "out"), "--clips", "many"])
    assert exit_.value.code == 2


def test_out_dir_that_is_a_file_exits_2(tmp_path, capsys):
    target = tmp_path / "file"
    target.write_text("x")
    assert cli.main(["synth", str(target), "--clips", "16"]) == 2
    assert "not a folder" in capsys.readouterr().err
