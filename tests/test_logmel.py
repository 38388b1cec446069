"""log_mel against an independent Kaldi fbank (kaldi-native-fbank), and `avmae stats`."""

import json

import media
import numpy as np
import pytest
import torch

from avmae.cli import main
from avmae.config import DataConfig
from avmae.data import audio_logmel, read_clip
from avmae.data.logmel import FLOAT_EPS, log_mel, mel_banks, num_frames, window_function

knf = pytest.importorskip("kaldi_native_fbank")

SR = 16000


def speech_like(t):
    """A voiced 'syllable' train: a harmonic source with vibrato, formant-like weights and gaps."""
    f0 = 140 * (1 + 0.05 * np.sin(2 * np.pi * 3 * t))
    phase = 2 * np.pi * np.cumsum(f0) / SR
    voiced = sum(np.sin(k * phase) / k * (1.5 if k in (4, 5, 12) else 1.0) for k in range(1, 25))
    envelope = np.clip(np.sin(2 * np.pi * 2.5 * t), 0, None) ** 0.5
    noise = 0.02 * np.random.default_rng(0).standard_normal(t.size)
    return (0.1 * voiced * envelope + noise)[None]


def music_like(t):
    """A chord that changes every half second, with a few partials per note and a decay."""
    chords = [(220.0, 277.2, 329.6), (196.0, 246.9, 293.7), (174.6, 220.0, 261.6)]
    out = np.zeros_like(t)
    for i, chord in enumerate(chords * 2):
        on = (t >= 0.5 * i) & (t < 0.5 * (i + 1))
        decay = np.exp(-3 * (t - 0.5 * i))
        for f in chord:
            out += on * decay * sum(0.08 / k * np.sin(2 * np.pi * k * f * t) for k in (1, 2, 3))
    hiss = 0.005 * np.random.default_rng(1).standard_normal(t.size)   # a recording's noise floor
    return (out + hiss)[None]


@pytest.fixture(scope="module")
def decoded(tmp_path_factory):
    """Real audio: synthesised, encoded to AAC in an mp4, decoded by read_clip."""
    d = tmp_path_factory.mktemp("logmel")
    cfg = DataConfig(audio_seconds=1.5)
    out = {}
    for name, fn in (("speech", speech_like), ("music", music_like)):
        path = media.write_audio_only(d / f"{name}.mp4", seconds=2.0, audio_fn=fn)
        out[name] = read_clip(path, cfg).waveform
    return out


def kaldi_fbank(wave, window, mel_bins, frame_length_ms=25.0):
    opts = knf.FbankOptions()
    opts.frame_opts.samp_freq = SR
    opts.frame_opts.dither = 0.0
    opts.frame_opts.window_type = window
    opts.frame_opts.snip_edges = True
    opts.frame_opts.frame_length_ms = frame_length_ms
    opts.frame_opts.frame_shift_ms = 10.0
    opts.frame_opts.preemph_coeff = 0.97
    opts.frame_opts.remove_dc_offset = True
    opts.frame_opts.round_to_power_of_two = True
    opts.mel_opts.num_bins = mel_bins
    opts.mel_opts.low_freq = 20.0
    opts.mel_opts.high_freq = 0.0                 # Nyquist
    opts.use_energy = False
    opts.use_log_fbank = True
    opts.use_power = True
    fbank = knf.OnlineFbank(opts)
    fbank.accept_waveform(SR, wave.tolist())
    fbank.input_finished()
    return np.stack([fbank.get_frame(i) for i in range(fbank.num_frames_ready)])


# Kaldi refuses 128 bins with 25 ms windows (one filter is empty, see test below), so the
# comparison runs 128 bins with 50 ms windows (1024-point FFT) and 80 bins with 25 ms ones.
@pytest.mark.parametrize("window", ["hamming", "hanning", "povey", "rectangular"])
@pytest.mark.parametrize("mel_bins, frame_length_ms", [(80, 25.0), (128, 50.0)])
@pytest.mark.parametrize("signal", ["speech", "music"])
def test_matches_kaldi_native_fbank(decoded, signal, window, mel_bins, frame_length_ms):
    wave = decoded[signal]
    ours = log_mel(torch.from_numpy(wave), SR, mel_bins, window, frame_length_ms).numpy()
    # the AST-style waveform mean removal is ours (subtract_mean=True), not Kaldi's
    ref = kaldi_fbank(wave - wave.mean(), window, mel_bins, frame_length_ms)
    assert ours.shape == ref.shape
    assert np.abs(ours - ref).max() < 1e-3


def test_frame_count_is_kaldis_snip_edges():
    for S in (0, 399, 400, 401, 559, 560, 16000, 128000):
        expected = 0 if S < 400 else 1 + (S - 400) // 160
        assert num_frames(S) == expected
        wave = np.random.default_rng(S).standard_normal(S).astype(np.float32) * 0.1
        assert log_mel(torch.from_numpy(wave)).shape == (expected, 128)
        if S >= 400:
            assert kaldi_fbank(wave, "hanning", 80).shape[0] == expected
    assert num_frames(128000) == 798                        # 8 s -> 798 frames, padded to 800


def test_the_empty_filter_at_128_bins_and_25_ms():
    # 128 filters from 20 Hz on a 31.25 Hz FFT grid: filter 3 (63-93 Hz) holds no FFT bin.
    # Kaldi refuses these settings; torchaudio's fbank (AST, AudioMAE) and we keep the filter,
    # whose output is the log floor.
    banks = mel_banks(128, 512, SR, 20.0, 8000.0)
    assert torch.nonzero(banks.sum(1) == 0).flatten().tolist() == [3]
    wave = torch.randn(4000) * 0.1
    assert torch.all(log_mel(wave)[:, 3] == torch.tensor(FLOAT_EPS).log())
    with pytest.raises(Exception, match="num_mel_bins too large"):
        kaldi_fbank(wave.numpy(), "hanning", 128)


def test_batched_any_dtype_and_mean_removal():
    waves = torch.randn(2, 3, 4000, dtype=torch.float64) * 0.1
    batch = log_mel(waves, window="hanning")
    assert batch.shape == (2, 3, 23, 128) and batch.dtype == torch.float64
    single = log_mel(waves[1, 2], window="hanning")
    assert torch.allclose(batch[1, 2], single)
    assert torch.allclose(log_mel(waves.float()).double(), log_mel(waves), atol=1e-3)
    # a DC offset changes nothing (waveform mean and per-frame DC are both removed)
    assert torch.allclose(log_mel(waves + 0.3), log_mel(waves), atol=1e-6)
    # numpy in, silence -> the floor
    assert torch.all(log_mel(np.zeros(800, np.float32)) == torch.tensor(FLOAT_EPS).log())


def test_windows_are_kaldis():
    assert window_function("hamming", 400)[0].item() == pytest.approx(0.08)
    assert window_function("hamming", 400)[-1].item() == pytest.approx(0.08)   # symmetric
    assert window_function("hanning", 400)[0].item() == pytest.approx(0.0, abs=1e-7)
    assert window_function("povey", 400)[200].item() == pytest.approx(1.0, abs=1e-4)
    assert torch.all(window_function("rectangular", 400) == 1)
    with pytest.raises(ValueError):
        window_function("blackmanharris", 400)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_gpu_matches_cpu():
    wave = torch.randn(2, 16000) * 0.1
    assert torch.allclose(log_mel(wave.cuda()).cpu(), log_mel(wave), atol=1e-3)


# ---- avmae stats --------------------------------------------------------------------------------

def test_stats_over_a_manifest(tmp_path, capsys):
    media.write_clip(tmp_path / "a.mp4", seconds=1.0, audio_fn=media.tone(440.0))
    media.write_clip(tmp_path / "b.mp4", seconds=1.0, audio=False)
    media.write_zero_bytes(tmp_path / "broken.mp4")
    (tmp_path / "m.csv").write_text("path\na.mp4\nb.mp4\nbroken.mp4\n")
    sets = ["--set", "data.num_frames=4", "--set", "data.short_side=32", "--set",
            "data.crop_size=32", "--set", "data.audio_seconds=0.5"]
    assert main(["stats", str(tmp_path / "m.csv"), *sets]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["clips"], out["skipped"], out["audio_clips"], out["video_clips"]) == (2, 1, 1, 2)
    assert out["clips_with_problems"] == 1                                # no audio stream
    # exactly the statistics of the one clip with audio
    cfg = DataConfig(num_frames=4, short_side=32, crop_size=32, audio_seconds=0.5)
    mel = audio_logmel(read_clip(tmp_path / "a.mp4", cfg).waveform, cfg).double()
    assert out["audio_mean"] == pytest.approx(mel.mean().item(), abs=1e-6)
    assert out["audio_std"] == pytest.approx(mel.std(unbiased=False).item(), abs=1e-6)
    assert len(out["video_mean"]) == 3 and all(-1 <= m <= 1 for m in out["video_mean"])
    assert all(s > 0 for s in out["video_std"])              # frames differ in brightness
    # --max-clips picks clips spread over the manifest: the first and the last
    assert main(["stats", str(tmp_path / "m.csv"), *sets, "--max-clips", "2"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["clips"], out["skipped"]) == (1, 1)


def test_stats_over_shards_equal_the_manifests(tmp_path, capsys):
    """`avmae stats SHARDS` reads the same centre windows as `avmae stats MANIFEST`: the same
    numbers up to the shards' JPEG and float16 rounding, counts and problems included."""
    media.write_clip(tmp_path / "a.mp4", seconds=1.5, audio_fn=media.tone(440.0))
    media.write_clip(tmp_path / "b.mp4", seconds=1.0, audio=False)
    (tmp_path / "m.csv").write_text("path\na.mp4\nb.mp4\n")
    sets = ["--set", "data.num_frames=4", "--set", "data.short_side=32", "--set",
            "data.crop_size=32", "--set", "data.audio_seconds=0.5"]
    assert main(["prepare", str(tmp_path / "m.csv"), "--out", str(tmp_path / "shards"),
                 "--keep-every", "1", *sets]) == 0     # every frame: the raw path's window exactly
    capsys.readouterr()
    got = {}
    for name in ("m.csv", "shards"):
        assert main(["stats", str(tmp_path / name), *sets]) == 0
        got[name] = json.loads(capsys.readouterr().out)
    manifest, shards = got["m.csv"], got["shards"]
    for key in ("clips", "skipped", "audio_clips", "video_clips", "clips_with_problems"):
        assert shards[key] == manifest[key], key
    assert shards["audio_mean"] == pytest.approx(manifest["audio_mean"], abs=0.01)
    assert shards["audio_std"] == pytest.approx(manifest["audio_std"], abs=0.01)
    assert shards["video_mean"] == pytest.approx(manifest["video_mean"], abs=0.01)
    assert shards["video_std"] == pytest.approx(manifest["video_std"], abs=0.01)


def test_stats_user_errors_exit_2(tmp_path, capsys):
    assert main(["stats", str(tmp_path / "missing.csv")]) == 2
    assert main(["stats", str(tmp_path)]) == 2
    (tmp_path / "m.csv").write_text("path\nnone.mp4\n")
    assert main(["stats", str(tmp_path / "m.csv")]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 3 and "Traceback" not in err
