"""The paper's dataset recipes: training, augmentation and learning rates per dataset and stage.

`--recipe NAME` on `avmae pretrain` and `avmae finetune` applies one of these after the preset (and,
for finetuning, after the finetuning defaults) and before `--set`. A recipe holds no model or input
sizes: those are presets' (`avmae presets`), so any preset combines with any recipe. Table 18's
10 s of audio (Tables 16-17: 8 s) is therefore the preset's: `audioset-large` has it, other
presets need `--set data.audio_seconds=10`. The values are
the paper's (appendix B, Tables 14-18); where the paper is silent they are the official configs'
(scenic/projects/av_mae/configs/{vggsound,audioset}/finetune.py). `avmae info --recipe NAME` prints
what a recipe resolves to.

Each rate is given at the batch size the paper reports it for and is scaled linearly to the global
batch actually used (Sec. B.1: "we show the learning rate for the reported batch size").
"""

from __future__ import annotations

from typing import Any

from avmae.config import ConfigError

STAGES = ("pretrain", "finetune")

# Table 14: one pretraining recipe for every dataset; only the epochs change. The official configs
# use weight decay 0.05 on kernels and 4 warm-up epochs instead; the paper wins (README).
_PRETRAIN = {
    "train.optimizer": "adamw",
    "train.beta1": 0.9,
    "train.beta2": 0.95,
    "train.weight_decay": 0.0,
    "train.base_lr": 3e-4,
    "train.lr_batch": 512,
    "train.min_lr": 0.0,
    "train.warmup_epochs": 40.0,
    "train.warmup_steps": -1,
    "train.clip_grad": 0.0,
    # Table 14: no augmentation; a random crop at the model's size and the official flip only.
    "data.scale_jitter": False,
    "data.flip": True,
    "data.color_augment": 0.0,
    "data.color_drop": 0.0,
}

# Tables 16-18, the rows they share.
_FINETUNE = {
    "train.optimizer": "sgd",
    "train.momentum": 0.9,
    "train.weight_decay": 0.0,
    "train.min_lr": 0.0,
    "train.warmup_epochs": 2.5,
    "train.warmup_steps": -1,             # a pretraining run's step budgets do not carry over
    "train.epochs": 50,
    "train.steps": 0,
    "train.clip_grad": 1.0,
    "finetune.layer_decay": 0.75,
    "finetune.drop_path": 0.3,
    "finetune.label_smoothing": 0.3,
    "finetune.mixup_alpha": 0.5,
    "finetune.specaugment": True,
    "finetune.views": 4,                  # Sec. B.2: 4 views averaged at evaluation
    # Video, official finetuning configs (the paper does not list video augmentation): scale jitter
    # 0.9-1.33, colour augmentation with probability 0.8 and colour drop 0.1, random flips.
    "data.scale_jitter": True,
    "data.scale_jitter_min": 0.9,
    "data.scale_jitter_max": 1.33,
    "data.color_augment": 0.8,
    "data.color_drop": 0.1,
    "data.flip": True,
}

# Table 16 (VGGSound), every row, plus the official VGGSound finetune config where the paper is
# silent (video augmentation above, SpecAugment's mask counts). These are also `avmae finetune`'s
# defaults without --recipe (training/finetune.py), so finetuning is Table 16 exactly unless a
# recipe or --set says otherwise; only the label column is left to the preset / checkpoint.
TABLE_16 = {
    **_FINETUNE,
    "train.base_lr": 0.8, "train.lr_batch": 64,             # Table 16: lr 0.8, batch 64
    "train.global_batch": 64,                                # Table 16: batch 64 (over all processes)
    "finetune.mixup_alpha_audio": 0.5,                       # Table 16: 0.5 in all columns
    # Table 16 has no random time shifting row (Tables 17-18 do); the official VGGSound config
    # has none either.
    "finetune.time_shift": False,
    # SpecAugment (Table 16: A and AV) with the official VGGSound config's masks.
    "finetune.freq_masks": 1, "finetune.freq_mask_width": 48,
    "finetune.time_masks": 4, "finetune.time_mask_width": 48,
}

RECIPES: dict[str, dict[str, Any]] = {
    "vggsound": {
        "doc": "VGGSound (309 classes, top-1): pretraining 800 epochs (Table 7a), finetuning Table 16",
        "audio_seconds": 8.0,                 # Table 16 (the preset's field: recipes hold no input)
        "pretrain": {**_PRETRAIN, "train.epochs": 800},
        "finetune": {**TABLE_16, "finetune.label_column": "label"},
    },
    "audioset": {
        "doc": "AudioSet (527 classes, mAP): pretraining on AS2M 80 epochs (Sec. 4.3, Table 4), "
               "finetuning on AS500K, Table 18",
        "audio_seconds": 10.0,                # Table 18 (the preset's: audioset-large has it)
        "pretrain": {**_PRETRAIN, "train.epochs": 80},
        "finetune": {
            **_FINETUNE,
            "finetune.label_column": "labels",
            "train.base_lr": 1.6, "train.lr_batch": 128,           # Table 18
            "train.global_batch": 128,                             # Table 18
            "finetune.mixup_alpha_audio": 1.25,                    # Table 18, audio only
            "finetune.time_shift": True,                           # Table 18
            # SpecAugment as the official AudioSet config.
            "finetune.freq_masks": 2, "finetune.freq_mask_width": 36,
            "finetune.time_masks": 4, "finetune.time_mask_width": 48,
        },
    },
    "epic-kitchens": {
        "doc": "Epic Kitchens-100 (97 verbs, 300 nouns, action top-1): finetuning Table 17 of the "
               "VGGSound-pretrained model; the paper does not pretrain on it",
        "audio_seconds": 8.0,                 # Table 17
        "pretrain": None,
        "finetune": {
            **_FINETUNE,
            "finetune.label_column": "verb,noun",                 # two heads, Sec. 4.1
            "train.base_lr": 1.2, "train.lr_batch": 64,            # Table 17
            "train.global_batch": 64,                              # Table 17
            "finetune.mixup_alpha_audio": 1.25,                    # Table 17, audio only
            "finetune.time_shift": True,                           # Table 17
            # Table 17 only says SpecAugment "following [31, 52]": the AudioSet settings.
            "finetune.freq_masks": 2, "finetune.freq_mask_width": 36,
            "finetune.time_masks": 4, "finetune.time_mask_width": 48,
        },
    },
}


def recipe_overrides(name: str | None, stage: str) -> dict[str, Any]:
    """The dotted overrides of recipe `name` for `stage` ("pretrain" or "finetune"); {} for None."""
    if name is None:
        return {}
    if name not in RECIPES:
        raise ConfigError(f"unknown recipe '{name}'; choose one of: {', '.join(RECIPES)}")
    overrides = RECIPES[name][stage]
    if overrides is None:
        raise ConfigError(f"recipe '{name}' has no {stage} stage: {RECIPES[name]['doc']} "
                          "(pretrain with --recipe vggsound)")
    return dict(overrides)
