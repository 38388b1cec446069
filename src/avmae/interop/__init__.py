"""Interoperability with other implementations' checkpoints: the official Scenic / Flax release
(also by name, through a verified download cache), and public unimodal MAEs (VideoMAE, ImageNet
MAE, AudioMAE) into the encoders."""

from avmae.interop.flax_checkpoint import read_params
from avmae.interop.scenic import import_scenic
from avmae.interop.unimodal import SOURCES, init_from
from avmae.interop.weights import (
    OFFICIAL_WEIGHTS,
    cache_status,
    download_weights,
    is_weights_name,
    lookup_weights,
    pretrained_run,
    weights_cache,
)

__all__ = ["read_params", "import_scenic", "SOURCES", "init_from", "OFFICIAL_WEIGHTS", "cache_status",
           "download_weights", "is_weights_name", "lookup_weights", "pretrained_run", "weights_cache"]
