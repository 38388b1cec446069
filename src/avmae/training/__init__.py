"""Training: the loop both stages share, pretraining (`Pretraining`), finetuning (`Finetuning`),
optimisers with layer-wise lr decay, and the finetuning augmentations."""

from avmae.training.augment import (
    augment_spectrogram,
    mixup_modalities,
    one_hot,
    sample_lambda,
    smooth_labels,
    spec_augment,
    time_shift,
)
from avmae.training.finetune import (
    Finetuning,
    classification_loss,
    finetune_config,
    per_modality_loss,
)
from avmae.training.loop import fit_global_batch, model_inputs, train_loop
from avmae.training.optim import build_optimizer, param_groups_weight_decay, scaled_lr
from avmae.training.pretrain import Pretraining, masking_noise

__all__ = [
    "augment_spectrogram",
    "mixup_modalities",
    "one_hot",
    "sample_lambda",
    "smooth_labels",
    "spec_augment",
    "time_shift",
    "Finetuning",
    "classification_loss",
    "finetune_config",
    "per_modality_loss",
    "fit_global_batch",
    "model_inputs",
    "train_loop",
    "build_optimizer",
    "param_groups_weight_decay",
    "scaled_lr",
    "Pretraining",
    "masking_noise",
]
