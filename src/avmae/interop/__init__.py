"""Interoperability with other implementations' checkpoints (official Scenic / Flax release), and
the official weights by name (a verified download cache)."""

from avmae.interop.flax_checkpoint import read_params
from avmae.interop.scenic import import_scenic
from avmae.interop.weights import (
    OFFICIAL_WEIGHTS,
    cache_status,
    download_weights,
    is_weights_name,
    lookup_weights,
    pretrained_run,
    weights_cache,
)

__all__ = ["read_params", "import_scenic", "OFFICIAL_WEIGHTS", "cache_status", "download_weights",
           "is_weights_name", "lookup_weights", "pretrained_run", "weights_cache"]
