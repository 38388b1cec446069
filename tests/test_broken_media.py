"""read_clip on awkward and broken files: right shapes, None for a missing stream, MediaError for
unreadable files, and every padding or failure written in `problems`."""

import media
import numpy as np
import pytest

from avmae.config import DataConfig
from avmae.data import MediaError, read_clip

# a 1.28 s video window (8 frames at stride 4 of 25 fps) and 2 s of audio
CFG = DataConfig(num_frames=8, frame_stride=4, short_side=32, crop_size=32, audio_seconds=2.0)
S = 32000

# name -> (writer, expected frame width (short side 32) or None, has audio)
READABLE = {
    "normal": (lambda p: media.write_clip(p, seconds=2.0), 43, True),
    "video_only": (media.write_video_only, 43, False),
    "audio_only": (media.write_audio_only, None, True),
    "one_frame": (media.write_one_frame, 43, True),
    "short": (media.write_short, 43, True),                       # 0.2 s
    "4k": (media.write_4k, 57, True),                             # 3840x2160, 2 frames
    "odd_size": (media.write_odd_size, 51, True),                 # 97x61
    "surround": (media.write_surround, 43, True),                 # 5.1 at 48 kHz
    "8khz": (media.write_8khz, 43, True),
    "vfr": (media.write_vfr, 43, True),
    "truncated": (lambda p: media.write_truncated(p, seconds=2.0, keep=0.5), 43, True),
}
UNREADABLE = {
    "zero_bytes": media.write_zero_bytes,
    "garbage": media.write_garbage,
    "truncated_index_lost": lambda p: media.write_truncated(p, faststart=False, keep=0.5),
}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("broken")


@pytest.mark.parametrize("name", READABLE)
def test_readable_files_give_the_contract_shapes(folder, name):
    writer, width, has_audio = READABLE[name]
    clip = read_clip(writer(folder / f"{name}.mp4"), CFG)
    if width is None:
        assert clip.frames is None and "no video stream" in clip.problems
    else:
        assert clip.frames.shape == (8, 32, width, 3) and clip.frames.dtype == np.uint8
    if has_audio:
        assert clip.waveform.shape == (S,) and clip.waveform.dtype == np.float32
        assert np.isfinite(clip.waveform).all() and np.abs(clip.waveform).max() > 0.1
    else:
        assert clip.waveform is None and "no audio stream" in clip.problems
    assert clip.duration > 0


def test_a_clean_clip_has_no_problems(folder):
    assert read_clip(media.write_clip(folder / "clean.mp4", seconds=3.0), CFG).problems == []


@pytest.mark.parametrize("name", ["one_frame", "short"])
def test_short_clips_repeat_the_last_frame_and_pad_audio_with_silence(folder, name):
    clip = read_clip(READABLE[name][0](folder / f"{name}-p.mp4"), CFG)
    got = [media.frame_index(f) for f in clip.frames]
    last = 0 if name == "one_frame" else 4                       # 0.2 s = frames 0..4
    assert got[-1] == last and got.count(last) >= 8 - (last // 4 + 1)
    assert any("video shorter than window" in p for p in clip.problems)
    assert any("audio shorter than window: zero-padded" in p for p in clip.problems)
    # the window starts at the clip start; the audio is where the video window says: zero
    # before the clip (0.64 s centre - 1 s) and after it
    on = np.nonzero(np.abs(clip.waveform) > 1e-3)[0] / 16000
    assert on[0] == pytest.approx(0.36, abs=0.02)
    assert on[-1] - on[0] < (0.3 if name == "short" else 0.1)


def test_short_audio_only_clip_is_padded_symmetrically(tmp_path):
    clip = read_clip(media.write_audio_only(tmp_path / "a.mp4", seconds=0.5), CFG)
    on = np.nonzero(np.abs(clip.waveform) > 1e-3)[0] / 16000
    assert (on[0] + on[-1]) / 2 == pytest.approx(1.0, abs=0.05)  # centred in the 2 s window
    assert any("zero-padded" in p for p in clip.problems)


def test_4k_frames_are_resized_and_distinct(folder):
    clip = read_clip(READABLE["4k"][0](folder / "4k-p.mp4"), CFG)
    assert [media.frame_index(f) for f in clip.frames][:2] == [0, 1]


def test_odd_size_keeps_its_content(folder):
    clip = read_clip(READABLE["odd_size"][0](folder / "odd-p.mp4"), CFG)
    assert [media.frame_index(f) for f in clip.frames] == list(range(9, 38, 4))


def test_truncated_file_returns_what_decodes_with_a_note(folder):
    clip = read_clip(media.write_truncated(folder / "t4.mp4", seconds=4.0, keep=0.4), CFG)
    assert clip.frames.shape == (8, 32, 43, 3)
    got = [media.frame_index(f) for f in clip.frames]
    assert got == sorted(got) and got[-1] < 100                  # real frames, then repeats
    assert any("video" in p for p in clip.problems)


@pytest.mark.parametrize("name", UNREADABLE)
def test_unreadable_files_raise_media_error(folder, name):
    path = UNREADABLE[name](folder / f"{name}.mp4")
    with pytest.raises(MediaError):
        read_clip(path, CFG)


def test_missing_file_and_empty_segment_raise_media_error(folder):
    with pytest.raises(MediaError, match="no such file"):
        read_clip(folder / "nope.mp4", CFG)
    path = media.write_clip(folder / "seg.mp4", seconds=1.0)
    with pytest.raises(MediaError, match="outside the file"):
        read_clip(path, CFG, start=5.0, end=6.0)


def test_only_the_requested_modality_is_decoded(folder):
    path = media.write_video_only(folder / "vo.mp4")
    with pytest.raises(MediaError, match="no audio stream"):
        read_clip(path, CFG, video=False)
    clip = read_clip(path, CFG, audio=False)
    assert clip.waveform is None and clip.problems == []


def test_bad_view_is_a_programming_error(folder):
    with pytest.raises(ValueError):
        read_clip(folder / "anything.mp4", CFG, view=2, num_views=2)
