"""The value of a missing soundtrack and of SpecAugment's masks is the dataset's mean log-mel on the
input's scale (issue #21, item 4): 0 where spectrograms are normalised, data.audio_mean where they
are not (the official presets feed raw log-mels)."""

import pytest
import torch

from avmae.config import FinetuneConfig, build_config
from avmae.data import fill_audio
from avmae.training import augment_spectrogram, finetune_config


@pytest.mark.parametrize("preset,overrides,fill", [
    ("base", [], 0.0),                                            # normalised: the mean is 0
    ("tiny-4l-cpu", [], 0.0),
    ("vggsound-large", [], -4.2677),                              # raw log-mels: the preset's mean
    ("audioset-large", [], -4.2677),
    ("audioset-large", ["data.audio_mean=-6.5"], -6.5),           # `avmae stats` numbers, --set
    ("base", ["data.normalize_audio=false", "data.audio_mean=-5.081"], -5.081),
])
def test_a_missing_soundtrack_is_the_mean_log_mel_on_the_inputs_scale(preset, overrides, fill):
    cfg = build_config(preset, overrides)
    for stage in (cfg, finetune_config(cfg, "av")):               # pretraining and finetuning alike
        assert stage.data.audio_fill == fill
        audio = fill_audio(stage.data)
        assert audio.shape == (1, stage.data.audio_frames, stage.data.mel_bins)
        assert torch.all(audio == torch.tensor(fill, dtype=audio.dtype))


@pytest.mark.parametrize("fill", [0.0, -4.2677])
def test_specaugment_masks_with_the_fill(fill):
    spec = torch.randn(3, 1, 200, 128) * 0.01 + 10.0             # nothing near either fill
    f = FinetuneConfig(time_shift=False, specaugment=True, freq_masks=2, freq_mask_width=36,
                       time_masks=4, time_mask_width=48)
    out = augment_spectrogram(spec, f, torch.Generator().manual_seed(0), fill=fill)
    masked = out != spec
    assert masked.any()
    assert torch.all(out[masked] == torch.tensor(fill))
