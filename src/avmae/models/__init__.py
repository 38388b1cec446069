"""The paper's model: tokenisers, position tables, masking, the four encoders, the decoders,
the objectives, the pretraining model (AVMAE), the AST / ViViT / MBT classifiers, and the one
factory from a checkpoint to a model (`load_model`)."""

from avmae.models.avmae import AVMAE
from avmae.models.classifier import (
    Classifier,
    EncoderClassifier,
    StreamClassifier,
    build_classifier,
    param_groups_lrd,
)
from avmae.models.decoders import Decoder
from avmae.models.encoders import (
    EarlyFusionEncoder,
    MidFusionEncoder,
    SeparateEncoder,
    SharedEncoder,
    build_encoder,
)
from avmae.models.flops import finetune_flops, pretrain_flops, token_counts
from avmae.models.init_from_pretrained import init_classifier_from_avmae
from avmae.models.loading import build_model, load_model
from avmae.models.masking import num_visible, sample_noise
from avmae.models.objectives import masked_mse
from avmae.models.patch_embed import (
    AudioPatchEmbed,
    VideoPatchEmbed,
    patchify_audio,
    patchify_video,
    unpatchify_audio,
    unpatchify_video,
)
from avmae.models.pos_embed import sincos_pos_embed
from avmae.models.transformer import Block, Transformer, set_grad_checkpointing

__all__ = [
    "AVMAE",
    "Classifier",
    "EncoderClassifier",
    "StreamClassifier",
    "build_classifier",
    "param_groups_lrd",
    "Decoder",
    "EarlyFusionEncoder",
    "MidFusionEncoder",
    "SeparateEncoder",
    "SharedEncoder",
    "build_encoder",
    "finetune_flops",
    "pretrain_flops",
    "token_counts",
    "init_classifier_from_avmae",
    "build_model",
    "load_model",
    "num_visible",
    "sample_noise",
    "masked_mse",
    "AudioPatchEmbed",
    "VideoPatchEmbed",
    "patchify_audio",
    "patchify_video",
    "unpatchify_audio",
    "unpatchify_video",
    "sincos_pos_embed",
    "Block",
    "Transformer",
    "set_grad_checkpointing",
]
