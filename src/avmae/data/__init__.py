"""Data: decoding, log-mel front end, manifests, shards and loaders."""

from avmae.data.annotations import DATASETS, SPLITS, VAL_FRACTION, hold_out, write_manifests
from avmae.data.dataset import ClipDataset, build_dataset, build_loader, build_train_loader
from avmae.data.decode import MediaError, read_clip
from avmae.data.gpu_jpeg import choose_jpeg_decode, gpu_jpeg_available
from avmae.data.logmel import log_mel
from avmae.data.manifest import (
    as_vocab,
    build_vocab,
    build_vocabs,
    encode_labels,
    label_columns,
    load_manifest,
    load_vocab,
    num_classes,
    save_vocab,
)
from avmae.data.prepare import prepare_shards
from avmae.data.shards import DEFAULT_EVERY, DEFAULT_JPEG_QUALITY, shards_current
from avmae.data.stats import dataset_stats
from avmae.data.transforms import (
    audio_logmel,
    audio_tensor,
    color_augment,
    fill_audio,
    fill_video,
    video_tensor,
)

__all__ = [
    "DATASETS",
    "VAL_FRACTION",
    "hold_out",
    "SPLITS",
    "write_manifests",
    "ClipDataset",
    "build_dataset",
    "build_loader",
    "build_train_loader",
    "MediaError",
    "read_clip",
    "choose_jpeg_decode",
    "gpu_jpeg_available",
    "log_mel",
    "as_vocab",
    "build_vocab",
    "build_vocabs",
    "encode_labels",
    "label_columns",
    "load_manifest",
    "load_vocab",
    "num_classes",
    "save_vocab",
    "prepare_shards",
    "DEFAULT_EVERY",
    "DEFAULT_JPEG_QUALITY",
    "shards_current",
    "dataset_stats",
    "audio_logmel",
    "audio_tensor",
    "color_augment",
    "fill_audio",
    "fill_video",
    "video_tensor",
]
