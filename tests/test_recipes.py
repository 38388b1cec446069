"""The paper's dataset recipes (recipes.py, Tables 14-18) and the finetuning input (Table 16)."""

import json

import pytest

from avmae.cli import main
from avmae.config import build_config
from avmae.recipes import RECIPES, recipe_overrides
from avmae.training import finetune_config


def ft(recipe, modality="av", preset="base", overrides=()):
    return finetune_config(build_config(preset), modality, list(overrides), recipe)


def test_finetuning_input_is_32_frames_at_stride_2_but_cpu_presets_keep_theirs():
    # Table 16 / official configs: the paper's pretraining input (16 at stride 4) -> 32 at stride 2.
    cfg = ft(None)
    assert (cfg.data.num_frames, cfg.data.frame_stride) == (32, 2)
    cfg = ft("audioset", "video")
    assert (cfg.data.num_frames, cfg.data.frame_stride) == (32, 2)
    # A CPU preset set its own input: kept, as before.
    cfg = ft(None, preset="tiny-4l-cpu")
    assert (cfg.data.num_frames, cfg.data.frame_stride) == (8, 2)
    # --set wins over the rule.
    cfg = ft(None, overrides=["data.num_frames=16", "data.frame_stride=4"])
    assert (cfg.data.num_frames, cfg.data.frame_stride) == (16, 4)


def test_default_finetuning_lr_is_table_16s_at_batch_64():
    t = ft(None).train
    assert (t.base_lr, t.lr_batch) == (0.8, 64)
    assert build_config("base").train.lr_batch == 512          # pretraining: 3e-4 at 512 (Table 14)
    assert build_config("base").train.base_lr == 3e-4


@pytest.mark.parametrize("recipe,lr,batch,column,audio_mixup,shift,freq", [
    ("vggsound", 0.8, 64, "label", 0.5, False, (1, 48)),       # Table 16; official VGGSound config
    ("audioset", 1.6, 128, "labels", 1.25, True, (2, 36)),     # Table 18; official AudioSet config
    ("epic-kitchens", 1.2, 64, "verb,noun", 1.25, True, (2, 36)),  # Table 17
])
def test_each_recipe_is_its_table(recipe, lr, batch, column, audio_mixup, shift, freq):
    for modality in ("audio", "video", "av"):
        cfg = ft(recipe, modality)
        f, t, d = cfg.finetune, cfg.train, cfg.data
        assert (t.optimizer, t.momentum, t.base_lr, t.lr_batch) == ("sgd", 0.9, lr, batch)
        assert (t.warmup_epochs, t.epochs, t.clip_grad, t.weight_decay) == (2.5, 50, 1.0, 0.0)
        assert (f.layer_decay, f.drop_path, f.label_smoothing) == (0.75, 0.3, 0.3)
        assert f.label_column == column
        assert f.mixup_alpha == (audio_mixup if modality == "audio" else 0.5)
        assert f.time_shift is shift and f.specaugment
        assert (f.freq_masks, f.freq_mask_width, f.time_masks, f.time_mask_width) == (*freq, 4, 48)
        # Video, the official configs: colour augmentation 0.8 / drop 0.1, scale jitter 0.9-1.33.
        assert (d.color_augment, d.color_drop) == (0.8, 0.1)
        assert (d.scale_jitter_min, d.scale_jitter_max) == (0.9, 1.33)


def test_recipes_come_after_the_preset_and_before_set():
    cfg = build_config("tiny-4l-cpu", ["train.epochs=3"], recipe=recipe_overrides("vggsound", "pretrain"))
    assert cfg.model.depth == 4 and cfg.data.num_frames == 8              # the preset's model and input
    assert (cfg.train.base_lr, cfg.train.lr_batch, cfg.train.warmup_epochs) == (3e-4, 512, 40.0)  # Table 14
    assert cfg.train.weight_decay == 0.0 and cfg.train.epochs == 3        # --set last
    cfg = ft("vggsound", "audio", overrides=["finetune.time_shift=true", "finetune.mixup_alpha=0.2"])
    assert cfg.finetune.time_shift and cfg.finetune.mixup_alpha == 0.2
    for recipe in RECIPES.values():  # training, augmentation and lr only: presets own sizes and input
        for stage in ("pretrain", "finetune"):
            keys = recipe[stage] or {}
            assert not [k for k in keys if k.startswith("model.") or k in (
                "data.num_frames", "data.frame_stride", "data.audio_seconds", "data.crop_size")]


def test_info_shows_what_a_recipe_resolves_to(capsys):
    assert main(["info", "--recipe", "audioset"]) == 0
    info = json.loads(capsys.readouterr().out)
    fine = info["finetune"]
    assert (fine["train.base_lr"], fine["train.lr_batch"]) == (1.6, 128)
    assert fine["finetune.label_column"] == "labels"
    assert fine["data.num_frames"] == 32 and fine["data.frame_stride"] == 2
    # Table 18's batch, not the preset's train.batch_size: 128 = 8 per micro-batch x 16 accumulated.
    assert fine["peak_lr"]["global_batch"] == 128 and fine["peak_lr"]["lr"] == pytest.approx(1.6)
    assert (fine["train.batch_size"], fine["train.accum_steps"]) == (8, 16)
    assert info["pretrain"]["train.epochs"] == 80 and info["pretrain"]["train.lr_batch"] == 512
    assert main(["info", "--recipe", "epic-kitchens", "--preset", "tiny-4l-cpu",
                 "--set", "train.batch_size=2"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["pretrain"] is None and info["finetune"]["finetune.label_column"] == "verb,noun"
    assert info["finetune"]["peak_lr"]["lr"] == pytest.approx(1.2 * 2 / 64)


def test_bad_recipe_use_exits_2_with_one_line(tiny_synth, tmp_path, capsys):
    code = main(["pretrain", "--preset", "tiny-4l-cpu", "--recipe", "epic-kitchens",
                 "--data", str(tiny_synth / "train.csv"), "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "no pretrain stage" in err
    # A resumed run keeps its own recipe.
    code = main(["pretrain", "--resume", "--recipe", "vggsound", "--data", str(tiny_synth / "train.csv"),
                 "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--recipe" in err
    with pytest.raises(SystemExit) as exit_:
        main(["info", "--recipe", "kinetics"])
    assert exit_.value.code == 2
    assert main(["info"]) == 2 and "--recipe" in capsys.readouterr().err


# ---- issue #21: defaults that are Table 16, every field listed, no inherited batch ------------

TABLE_ROWS = ["data.num_frames", "data.audio_seconds", "train.optimizer", "train.momentum",
              "finetune.layer_decay", "train.base_lr", "train.clip_grad", "train.warmup_epochs",
              "train.epochs", "train.global_batch", "finetune.time_shift", "finetune.specaugment",
              "finetune.mixup_alpha", "finetune.mixup_alpha_audio", "finetune.drop_path",
              "finetune.label_smoothing"]


@pytest.mark.parametrize("modality", ["audio", "video", "av"])
def test_finetuning_without_a_recipe_is_table_16_exactly(modality):
    """No --recipe = --recipe vggsound (Table 16 + the official VGGSound config), but the label column."""
    default, table = ft(None, modality), ft("vggsound", modality)
    for key in RECIPES["vggsound"]["finetune"]:
        if key != "finetune.label_column":
            section, name = key.split(".")
            assert getattr(getattr(default, section), name) == getattr(getattr(table, section), name), key
    f, d = default.finetune, default.data
    assert f.time_shift is False                                          # no time-shift row
    assert (f.freq_masks, f.freq_mask_width) == (1, 48)                   # official VGGSound
    assert f.mixup_alpha == 0.5                                           # audio-only too: 0.5
    assert (d.color_augment, d.color_drop, d.flip) == (0.8, 0.1, True)    # official configs
    assert default.train.global_batch == 64


def test_the_finetuning_batch_is_the_recipes_never_the_pretraining_runs():
    from avmae.training import fit_global_batch
    pre = build_config("base", ["train.batch_size=48"])                   # a pretraining run's batch
    t = finetune_config(pre, "av").train
    assert (t.global_batch, t.batch_size) == (64, 8)                      # Table 16, 8 per micro-batch
    for world, expected in ((1, (8, 8)), (2, (8, 4)), (8, (8, 1)), (16, (4, 1))):
        fitted = finetune_config(pre, "av").train
        fit_global_batch(fitted, world)
        assert (fitted.batch_size, fitted.accum_steps) == expected
        assert fitted.batch_size * fitted.accum_steps * world == 64
    capped = finetune_config(pre, "av", ["train.global_batch=64"]).train
    capped.batch_size = 6                                                 # memory: at most 6 clips
    fit_global_batch(capped, 1)
    assert (capped.batch_size, capped.accum_steps) == (4, 16)             # 4 x 16 = 64
    assert finetune_config(pre, "av", recipe="audioset").train.global_batch == 128
    # --set train.batch_size is the user's batch, as given.
    t = finetune_config(pre, "av", ["train.batch_size=4"]).train
    assert (t.global_batch, t.batch_size, t.accum_steps) == (0, 4, 1)


def test_info_acceptance_lr_and_input_with_a_set_batch(capsys):
    assert main(["info", "--recipe", "vggsound", "--set", "train.batch_size=4"]) == 0
    fine = json.loads(capsys.readouterr().out)["finetune"]
    assert fine["peak_lr"]["lr"] == pytest.approx(0.05) and fine["peak_lr"]["global_batch"] == 4
    assert (fine["data.num_frames"], fine["data.frame_stride"]) == (32, 2)
    assert fine["train.global_batch"] == 0                   # the set batch, as given
    assert main(["info", "--recipe", "vggsound", "--preset", "tiny-4l-cpu"]) == 0   # preset batch 16
    fine = json.loads(capsys.readouterr().out)["finetune"]
    assert fine["peak_lr"]["global_batch"] == 64 and fine["peak_lr"]["lr"] == pytest.approx(0.8)


@pytest.mark.parametrize("recipe,seconds", [("vggsound", 8.0), ("audioset", 10.0), ("epic-kitchens", 8.0)])
def test_info_lists_every_row_of_the_recipes_table(recipe, seconds, capsys):
    assert main(["info", "--recipe", recipe]) == 0
    fine = json.loads(capsys.readouterr().out)["finetune"]
    assert not [k for k in TABLE_ROWS if k not in fine]
    assert fine["table_audio_seconds"] == seconds
    assert ("note" in fine) == (seconds != 8.0)   # the library default input is 8 s
