"""read_clip samples the right frames and audio, and the transforms make the right tensors."""

import av
import media
import numpy as np
import pytest
import torch

from avmae.config import DataConfig
from avmae.data import audio_tensor, fill_audio, fill_video, read_clip, video_tensor

# 8 frames at stride 4 of 25 fps: a 1.28 s video window; 2 s of audio
CFG = DataConfig(num_frames=8, frame_stride=4, short_side=32, crop_size=32, audio_seconds=2.0)


def indices(clip):
    return [media.frame_index(f) for f in clip.frames]


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("decode")
    return {
        # 100 frames, a keyframe every 10: windows late in the file need a seek
        "four": media.write_clip(d / "four.mp4", seconds=4.0, gop=10),
        "burst": media.write_clip(d / "burst.mp4", seconds=4.0, audio_fn=media.tone_burst(1.5)),
        "surround": media.write_surround(d / "surround.mp4", audio_fn=media.tone(1000.0)),
        "8k": media.write_8khz(d / "8k.mp4", audio_fn=media.tone(440.0)),
        "vfr": media.write_vfr(d / "vfr.mp4"),
    }


# ---- video: which frames ----------------------------------------------------------------------

def test_centre_view_is_strided_around_the_clip_centre(clips):
    # 100 frames, window of 32 frames centred on frame 50 -> starts at frame 34
    clip = read_clip(clips["four"], CFG)
    assert clip.frames.shape == (8, 32, 43, 3) and clip.frames.dtype == np.uint8
    assert indices(clip) == list(range(34, 63, 4))
    assert clip.duration == pytest.approx(4.0) and clip.problems == []


def test_views_are_evenly_spaced_where_both_windows_fit(clips):
    # 2 s audio window: centres in [1, 3] s -> views centred at 1, 2, 3 s
    got = [indices(read_clip(clips["four"], CFG, view=v, num_views=3))[0] for v in range(3)]
    assert got == [9, 34, 59]
    # video alone: centres in [0.64, 3.36] s -> from the first frame to the last window
    got = [indices(read_clip(clips["four"], CFG, view=v, num_views=3, audio=False))
           for v in range(3)]
    assert got[0] == list(range(0, 29, 4)) and got[2] == list(range(68, 97, 4))


def test_random_windows_come_from_the_rng(clips):
    firsts = []
    for seed in range(6):
        a = indices(read_clip(clips["four"], CFG, rng=np.random.default_rng(seed)))
        b = indices(read_clip(clips["four"], CFG, rng=np.random.default_rng(seed)))
        assert a == b                                       # same rng, same window
        assert np.all(np.diff(a) == 4)                      # stride in source frames
        assert 9 <= a[0] <= 59                              # both windows inside the clip
        firsts.append(a[0])
    assert len(set(firsts)) > 3


def test_variable_frame_rate_is_sampled_by_time(clips):
    # frames 0-24 at 25 fps, then 25-34 at 10 fps: a stride in frames of the average rate is a
    # fixed step in time, so sampled times are evenly spaced, not sampled frame numbers
    times = [i / 25 for i in range(25)] + [1.0 + i / 10 for i in range(10)]
    with av.open(str(clips["vfr"])) as c:
        step = CFG.frame_stride / float(c.streams.video[0].average_rate)
    got = indices(read_clip(clips["vfr"], CFG, audio=False))
    dt = np.diff([times[i] for i in got])
    assert np.all(np.abs(dt - step) <= 0.051 + 1e-9), (got, dt, step)
    assert np.diff(got)[0] >= 4 and np.diff(got)[-1] <= 3   # more frames apart where the rate is high


@pytest.mark.parametrize("container, video_codec, pix_fmt, audio_codec, rate", [
    ("webm", "libvpx", "yuv420p", "libopus", 48000),
    ("avi", "mjpeg", "yuvj420p", "pcm_s16le", 22050),
    ("matroska", "mpeg4", "yuv420p", "libmp3lame", 44100),
    ("mpegts", "libx264", "yuv420p", "aac", 44100),
])
def test_other_containers_and_codecs(tmp_path, container, video_codec, pix_fmt, audio_codec,
                                     rate):
    path = media.write_clip(tmp_path / "clip", seconds=4.0, container=container,
                            video_codec=video_codec, pix_fmt=pix_fmt, audio_codec=audio_codec,
                            sample_rate=rate, gop=12, audio_fn=lambda t: chirp(t)[None])
    for v, first in enumerate([9, 34, 59]):       # windows centred at 1, 2, 3 s
        clip = read_clip(path, CFG, view=v, num_views=3)
        got = indices(clip)
        # containers differ in the duration they report (by a frame or an audio packet)
        assert abs(got[0] - first) <= 1 and np.all(np.diff(got) == 4)
        # the audio is centred on the video window actually used: its centre +- 1 s
        lag, error = chirp_lag(clip.waveform, got[0] / 25 + 0.64 - 1.0)
        assert abs(lag) <= 16 and error < 0.02, (v, lag, error)   # WebM stamps whole ms
        assert clip.problems == []


def test_segments_restrict_the_window(clips):
    cfg = DataConfig(num_frames=8, frame_stride=1, short_side=32, crop_size=32, audio_seconds=0.5)
    clip = read_clip(clips["four"], cfg, start=1.0, end=2.2)
    assert indices(clip) == list(range(36, 44))             # centred on 1.6 s: frames 36..43
    assert clip.duration == pytest.approx(1.2) and clip.problems == []
    # a segment shorter than the window: its frames, then its last frame repeated
    clip = read_clip(clips["four"], cfg, start=1.0, end=1.2)
    assert indices(clip) == [25, 26, 27, 28, 29, 29, 29, 29]
    assert any("repeated the last frame" in p for p in clip.problems)


def test_segment_audio_is_centred_on_the_segment(clips):
    # the burst is at 1.5 s of the file; segment [1.0, 2.0] is centred on it
    clip = read_clip(clips["burst"], CFG, start=1.0, end=2.0, video=False)
    assert burst_centre(clip.waveform) == pytest.approx(1.0, abs=0.01)


@pytest.mark.parametrize("rotation, corner", [(-90, (0, 1)), (90, (1, 0)), (180, (1, 1))])
def test_display_rotation_is_applied(tmp_path, rotation, corner):
    def marked(i, w, h):                                   # white top-left quarter on black
        img = np.zeros((h, w, 3), np.uint8)
        img[: h // 2, : w // 2] = 255
        return img
    path = media.write_rotated(tmp_path / "r.mp4", rotation=rotation, size=(64, 32),
                               frame_fn=marked, seconds=0.4, audio=False)
    frames = read_clip(path, CFG).frames
    H, W = frames.shape[1:3]
    assert (H > W) == (abs(rotation) == 90) and min(H, W) == 32
    quarters = [[frames[0, : H // 2, : W // 2].mean(), frames[0, : H // 2, W // 2:].mean()],
                [frames[0, H // 2:, : W // 2].mean(), frames[0, H // 2:, W // 2:].mean()]]
    assert np.argmax(np.array(quarters)) == corner[0] * 2 + corner[1], quarters


# ---- audio: which samples ----------------------------------------------------------------------

def burst_centre(waveform, sample_rate=16000):
    """Seconds from the window start to the centre of the tone burst's energy."""
    energy = np.convolve(waveform ** 2, np.ones(160) / 160, mode="same")
    on = np.nonzero(energy > 0.5 * energy.max())[0]
    return (on[0] + on[-1]) / 2 / sample_rate


def test_audio_window_is_centred_on_the_video_window(clips):
    # windows centred at 1, 2, 3 s (2 s of audio): the burst at 1.5 s lies at 1.5, 0.5, absent
    views = [read_clip(clips["burst"], CFG, view=v, num_views=3) for v in range(3)]
    assert views[0].waveform.shape == (32000,) and views[0].waveform.dtype == np.float32
    assert burst_centre(views[0].waveform) == pytest.approx(1.5, abs=0.01)
    assert burst_centre(views[1].waveform) == pytest.approx(0.5, abs=0.01)
    assert np.abs(views[2].waveform).max() < 0.05
    # and the video windows are centred on the same times: frames 9.., 34.., 59..
    assert [indices(v)[0] for v in views] == [9, 34, 59]


def chirp(t):
    return 0.3 * np.sin(2 * np.pi * (200 * t + 100 * t ** 2))     # 200 Hz rising to 1 kHz


def chirp_lag(wave, start, max_lag=40, until=3.95):
    """(samples the waveform lags the chirp at [start, ...) by, relative squared error there),
    over the part of the window before `until` seconds (the clip's end)."""
    t = start + np.arange(wave.size) / 16000
    wave, t = wave[t < until], t[t < until]
    power = np.mean(chirp(t) ** 2)
    errors = [np.mean((wave - chirp(t + lag / 16000)) ** 2) / power
              for lag in range(-max_lag, max_lag + 1)]
    best = int(np.argmin(errors))
    return best - max_lag, errors[best]


@pytest.mark.parametrize("rate", [16000, 8000])
def test_waveform_is_the_source_at_the_window_times(tmp_path, rate):
    # sample-accurate after seeking and resampling: windows [0, 2], [1, 3], [2, 4] s
    path = media.write_clip(tmp_path / "chirp.mp4", seconds=4.0, sample_rate=rate,
                            audio_fn=lambda t: chirp(t)[None])
    for v, start in enumerate([0.0, 1.0, 2.0]):
        wave = read_clip(path, CFG, view=v, num_views=3).waveform
        lag, error = chirp_lag(wave, start)
        assert lag == 0 and error < 0.01, (rate, v, lag, error)
        assert np.abs(wave[:160]).max() > 0.2                  # no decoder warm-up at the start


@pytest.mark.parametrize("name, freq", [("surround", 1000.0), ("8k", 440.0)])
def test_resampling_to_16k_mono_keeps_the_frequency(clips, name, freq):
    wave = read_clip(clips[name], CFG).waveform
    assert wave.shape == (32000,)
    spectrum = np.abs(np.fft.rfft(wave * np.hanning(wave.size)))
    peak = np.argmax(spectrum) * 16000 / wave.size
    assert peak == pytest.approx(freq, abs=1.0)
    assert np.sqrt(np.mean(wave ** 2)) > 0.1                # the mix kept the tone


# ---- transforms -------------------------------------------------------------------------------

def test_eval_video_tensor_is_the_centre_crop_in_unit_range():
    frames = np.zeros((8, 32, 48, 3), np.uint8)
    frames[:, :, 8:40] = 255                                # the centre 32 columns are white
    x = video_tensor(frames, CFG, train=False, rng=None)
    assert x.shape == (3, 8, 32, 32) and x.dtype == torch.float32
    assert torch.all(x == 1.0)
    x = video_tensor(np.zeros_like(frames), CFG, train=False, rng=None)
    assert torch.all(x == -1.0)


def test_train_video_tensor_jitters_crops_and_flips_from_the_rng():
    cfg = DataConfig(num_frames=2, short_side=32, crop_size=16, scale_jitter=True,
                     scale_jitter_min=0.5, scale_jitter_max=1.5, flip=True)
    frames = np.broadcast_to(np.arange(48, dtype=np.uint8)[None, None, :, None] * 5,
                             (2, 32, 48, 3)).copy()        # brightness grows left to right
    outs = [video_tensor(frames, cfg, train=True, rng=np.random.default_rng(s)) for s in range(8)]
    again = video_tensor(frames, cfg, train=True, rng=np.random.default_rng(0))
    assert torch.equal(outs[0], again)
    assert all(o.shape == (3, 2, 16, 16) for o in outs)
    assert all(o.min() >= -1 and o.max() <= 1 for o in outs)
    slopes = [float(o[0, 0, 0, -1] - o[0, 0, 0, 0]) for o in outs]
    assert any(s < 0 for s in slopes) and any(s > 0 for s in slopes)      # flipped and not
    spans = {round(abs(s), 2) for s in slopes}
    assert len(spans) > 2                                                # different scales


def test_audio_tensor_pads_with_the_mean_and_normalises():
    cfg = DataConfig(audio_seconds=1.0, mel_bins=128, audio_mean=-4.0, audio_std=2.0)
    mel = torch.full((98, 128), 0.0)
    x = audio_tensor(mel, cfg)
    assert x.shape == (1, 100, 128)
    assert torch.allclose(x[0, :98], torch.full((98, 128), 1.0))       # (0 + 4) / (2 * 2)
    assert torch.all(x[0, 98:] == 0)                                    # padded with the mean
    assert audio_tensor(torch.zeros(1, 130, 128), cfg).shape == (1, 100, 128)
    raw = audio_tensor(mel, DataConfig(audio_seconds=1.0, normalize_audio=False))
    assert torch.all(raw[0, :98] == 0)


def test_fills_have_the_model_shapes():
    assert fill_video(CFG).shape == (3, 8, 32, 32) and not fill_video(CFG).any()
    assert fill_audio(CFG).shape == (1, 200, 128) and not fill_audio(CFG).any()
