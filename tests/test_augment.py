"""Finetuning augmentations (paper B.2): mixup, label smoothing, SpecAugment, circular time shift."""

import dataclasses

import torch

from avmae.config import FinetuneConfig
from avmae.training import (
    augment_spectrogram,
    mixup_modalities,
    one_hot,
    sample_lambda,
    smooth_labels,
    spec_augment,
    time_shift,
)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def spectrogram(batch=8, frames=96, bins=32, seed=0):
    # Values far from 0, so that a masked (zeroed) entry is unambiguous.
    return torch.rand(batch, 1, frames, bins, generator=gen(seed)) + 1.0


def test_one_hot_and_label_smoothing():
    t = one_hot(torch.tensor([2, 0]), 4)
    assert torch.equal(t, torch.tensor([[0.0, 0, 1, 0], [1, 0, 0, 0]]))
    s = smooth_labels(t, 0.3)
    torch.testing.assert_close(s[0], torch.tensor([0.075, 0.075, 0.775, 0.075]))  # 0.3/4; 0.7 + 0.3/4
    torch.testing.assert_close(s.sum(1), torch.ones(2))
    multi = smooth_labels(torch.tensor([[1.0, 1.0, 0.0, 0.0]]), 0.2)
    torch.testing.assert_close(multi, torch.tensor([[0.85, 0.85, 0.05, 0.05]]))


def test_sample_lambda_draws_a_lambda_per_seed():
    lams = {sample_lambda(0.5, gen(s)) for s in range(10)}
    assert len(lams) == 10 and all(0 < l < 1 for l in lams)


def bands(row: torch.Tensor) -> list[tuple[int, int]]:
    """Maximal runs of True in a 1-D bool tensor, as (start, length)."""
    runs, start = [], None
    for i, v in enumerate(row.tolist() + [False]):
        if v and start is None:
            start = i
        if not v and start is not None:
            runs.append((start, i - start))
            start = None
    return runs


def test_spec_augment_frequency_mask_is_one_band_within_the_width_across_all_time():
    x = spectrogram(batch=64)
    y = spec_augment(x, gen(0), freq_masks=1, freq_mask_width=10, time_masks=0, time_mask_width=0)
    masked = y == 0
    assert torch.equal(y[~masked], x[~masked])                       # the rest is untouched
    per_bin = masked[:, 0].all(dim=1)                                # (B, F): bins masked at every frame
    assert torch.equal(masked[:, 0], per_bin[:, None, :].expand_as(masked[:, 0]))
    widths = []
    for b in range(64):
        runs = bands(per_bin[b])
        assert len(runs) <= 1
        widths.append(runs[0][1] if runs else 0)
    assert max(widths) <= 10 and len(set(widths)) > 3                # widths vary up to the limit


def test_spec_augment_time_masks_stay_within_their_limits():
    x = spectrogram(batch=64, frames=200)
    y = spec_augment(x, gen(1), freq_masks=0, freq_mask_width=0, time_masks=4, time_mask_width=12)
    per_frame = (y == 0)[:, 0].all(dim=2)                            # (B, T)
    assert torch.equal((y == 0)[:, 0], per_frame[:, :, None].expand(-1, -1, 32))
    for b in range(64):
        runs = bands(per_frame[b])
        assert sum(n for _, n in runs) <= 4 * 12
        assert all(n <= 4 * 12 for _, n in runs)
    assert per_frame.sum(1).float().mean() > 5                       # masks do happen


def test_spec_augment_width_larger_than_the_axis_and_reproducibility():
    x = spectrogram(batch=4, bins=16)
    y = spec_augment(x, gen(2), freq_masks=2, freq_mask_width=100, time_masks=4, time_mask_width=48)
    assert y.shape == x.shape
    assert torch.equal(y, spec_augment(x, gen(2), 2, 100, 4, 48))
    assert not torch.equal(y, spec_augment(x, gen(3), 2, 100, 4, 48))


def test_time_shift_is_circular_and_preserves_content():
    x = spectrogram(batch=16, frames=50)
    y, offsets = time_shift(x, gen(0))
    assert ((offsets >= 0) & (offsets < 50)).all() and len(set(offsets.tolist())) > 5
    for b in range(16):
        assert torch.equal(y[b], torch.roll(x[b], int(offsets[b]), dims=1))
        assert torch.equal(y[b].sort(dim=1).values, x[b].sort(dim=1).values)


def test_augment_spectrogram_follows_the_config():
    x = spectrogram()
    off = dataclasses.replace(FinetuneConfig(), specaugment=False, time_shift=False)
    assert torch.equal(augment_spectrogram(x, off, gen(0), fill=0.0), x)
    shift_only = dataclasses.replace(off, time_shift=True)
    y = augment_spectrogram(x, shift_only, gen(0), fill=0.0)
    assert torch.equal(y, time_shift(x, gen(0))[0]) and not (y == 0).any()
    on = FinetuneConfig()   # defaults: shift + 2 frequency and 4 time masks
    assert (augment_spectrogram(x, on, gen(0), fill=0.0) == 0).any()


def test_mixup_modalities_one_pairing_a_lambda_and_targets_per_modality():
    """Official `mixmod=True`: every modality mixed with the same partner clip, each with its own
    lambda, and each modality's targets mixed with that modality's lambda."""
    B = 6
    audio = torch.randn(B, 1, 32, 16, generator=gen(1))
    video = torch.randn(B, 3, 2, 8, 8, generator=gen(2))
    verb, noun = one_hot(torch.arange(B) % 3, 3), one_hot(torch.arange(B) % 5, 5)
    mixed, targets, lams, perm = mixup_modalities({"audio": audio, "video": video}, (verb, noun), 0.5,
                                                  gen(3))
    assert set(targets) == set(lams) == {"audio", "video"}
    assert lams["audio"] != lams["video"] and all(0 < l < 1 for l in lams.values())
    for m, x in (("audio", audio), ("video", video)):
        lam = lams[m]
        torch.testing.assert_close(mixed[m], lam * x + (1 - lam) * x[perm])
        mv, mn = targets[m]
        torch.testing.assert_close(mv, lam * verb + (1 - lam) * verb[perm])
        torch.testing.assert_close(mn, lam * noun + (1 - lam) * noun[perm])
    assert not torch.allclose(targets["audio"][0], targets["video"][0])
    # Over many batches the two lambdas are independent draws, not one shared value.
    draws = [mixup_modalities({"audio": audio, "video": video}, verb, 0.5, gen(s))[2] for s in range(20)]
    assert all(d["audio"] != d["video"] for d in draws)
    # alpha 0: nothing mixed, nothing drawn.
    mixed, targets, lams, perm = mixup_modalities({"audio": audio}, verb, 0.0, gen(0))
    assert lams == {"audio": 1.0} and torch.equal(mixed["audio"], audio) and torch.equal(targets["audio"], verb)


def test_colour_augmentation_is_one_draw_per_clip_and_colour_drop_is_grey():
    import numpy as np

    from avmae.data import color_augment
    g = torch.Generator().manual_seed(0)
    frame = torch.rand(3, 1, 8, 8, generator=g) * 2 - 1
    clip = frame.expand(3, 4, 8, 8).contiguous()           # four identical frames
    out = color_augment(clip, np.random.default_rng(1), 1.0, 0.0)
    assert not torch.allclose(out, clip) and out.min() >= -1 and out.max() <= 1
    for t in range(1, 4):                                   # every frame changed alike
        torch.testing.assert_close(out[:, t], out[:, 0])
    grey = color_augment(clip, np.random.default_rng(1), 0.0, 1.0)
    torch.testing.assert_close(grey[0], grey[1])
    torch.testing.assert_close(grey[1], grey[2])
    assert torch.equal(color_augment(clip, np.random.default_rng(1), 0.0, 0.0), clip)
    # Hue turns the colour wheel: a third of a turn takes red to green.
    from avmae.data.transforms import adjust_hue
    red = torch.tensor([1.0, 0.0, 0.0]).view(3, 1, 1, 1)
    torch.testing.assert_close(adjust_hue(red, 1 / 3), torch.tensor([0.0, 1.0, 0.0]).view(3, 1, 1, 1))
    # With probability 0.8 about four clips in five change.
    rng = np.random.default_rng(2)
    changed = sum(not torch.equal(color_augment(clip, rng, 0.8, 0.0), clip) for _ in range(200))
    assert 130 < changed < 190
