"""Interoperability with other implementations' checkpoints (official Scenic / Flax release)."""
