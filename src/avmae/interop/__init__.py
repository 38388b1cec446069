"""Interoperability with other implementations' checkpoints: the official Scenic / Flax release,
and public unimodal MAEs (VideoMAE, ImageNet MAE, AudioMAE) into the encoders."""

from avmae.interop.flax_checkpoint import read_params
from avmae.interop.scenic import import_scenic
from avmae.interop.unimodal import SOURCES, init_from

__all__ = ["read_params", "import_scenic", "SOURCES", "init_from"]
