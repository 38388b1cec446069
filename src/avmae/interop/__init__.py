"""Interoperability with other implementations' checkpoints (official Scenic / Flax release)."""

from avmae.interop.flax_checkpoint import read_params
from avmae.interop.scenic import import_scenic

__all__ = ["read_params", "import_scenic"]
