"""Audiovisual encoders (paper Sec. 3.2, Fig. 2): early fusion, separate, mid-fusion, shared.

Every encoder maps a dict of visible token sequences {"audio": (B, n_a, D), "video": (B, n_v, D)}
(one or both modalities) to a dict of encoded sequences of the same shapes. Parameter names inside
each `Transformer` follow timm's ViT.
"""

from __future__ import annotations

import torch
from torch import nn

from avmae.config import ModelConfig
from avmae.models.transformer import Transformer, drop_path_schedule

Tokens = dict[str, torch.Tensor]


def concat_tokens(tokens: Tokens) -> tuple[torch.Tensor, list[tuple[str, int]]]:
    """Concatenate modalities along the token axis, remembering how to split them again."""
    order = [(m, x.shape[1]) for m, x in tokens.items()]
    return torch.cat(list(tokens.values()), dim=1), order


def split_tokens(x: torch.Tensor, order: list[tuple[str, int]]) -> Tokens:
    parts = torch.split(x, [n for _, n in order], dim=1)
    return {m: p for (m, _), p in zip(order, parts)}


def _transformer(cfg: ModelConfig, depth: int, rates: list[float], final_norm: bool = True) -> Transformer:
    return Transformer(cfg.embed_dim, depth, cfg.num_heads, int(cfg.embed_dim * cfg.mlp_ratio),
                       rates, final_norm, cfg.gelu, cfg.layer_norm_eps)


class EarlyFusionEncoder(nn.Module):
    """One transformer over the concatenated visible tokens of both modalities (Fig. 2a)."""

    def __init__(self, cfg: ModelConfig, modalities: list[str]):
        super().__init__()
        self.transformer = _transformer(cfg, cfg.depth, drop_path_schedule(cfg.drop_path, cfg.depth))

    def forward(self, tokens: Tokens) -> Tokens:
        x, order = concat_tokens(tokens)
        return split_tokens(self.transformer(x), order)

    def stream_modules(self, modality: str) -> list[nn.Module]:
        return [self.transformer]


class SeparateEncoder(nn.Module):
    """One transformer per modality, no interaction ("late fusion" in the decoder, Fig. 2b)."""

    def __init__(self, cfg: ModelConfig, modalities: list[str]):
        super().__init__()
        rates = drop_path_schedule(cfg.drop_path, cfg.depth)
        self.streams = nn.ModuleDict({m: _transformer(cfg, cfg.depth, rates) for m in modalities})

    def forward(self, tokens: Tokens) -> Tokens:
        return {m: self.streams[m](x) for m, x in tokens.items()}

    def stream_modules(self, modality: str) -> list[nn.Module]:
        return [self.streams[modality]]


class SharedEncoder(nn.Module):
    """The same transformer applied to each modality on its own (tied weights, Fig. 2c)."""

    def __init__(self, cfg: ModelConfig, modalities: list[str]):
        super().__init__()
        self.transformer = _transformer(cfg, cfg.depth, drop_path_schedule(cfg.drop_path, cfg.depth))

    def forward(self, tokens: Tokens) -> Tokens:
        return {m: self.transformer(x) for m, x in tokens.items()}

    def stream_modules(self, modality: str) -> list[nn.Module]:
        return [self.transformer]


class MidFusionEncoder(nn.Module):
    """L - S separate layers per modality, each ending in its own LayerNorm, then S joint layers
    over the concatenation (Fig. 2d; official release)."""

    def __init__(self, cfg: ModelConfig, modalities: list[str]):
        super().__init__()
        rates = drop_path_schedule(cfg.drop_path, cfg.depth)
        sep = cfg.depth - cfg.fusion_layers
        self.streams = nn.ModuleDict({m: _transformer(cfg, sep, rates[:sep]) for m in modalities})
        self.joint = _transformer(cfg, cfg.fusion_layers, rates[sep:])

    def forward(self, tokens: Tokens) -> Tokens:
        x, order = concat_tokens({m: self.streams[m](x) for m, x in tokens.items()})
        return split_tokens(self.joint(x), order)

    def stream_modules(self, modality: str) -> list[nn.Module]:
        return [self.streams[modality], self.joint]


ENCODER_CLASSES = {"early": EarlyFusionEncoder, "separate": SeparateEncoder,
                   "mid": MidFusionEncoder, "shared": SharedEncoder}


def build_encoder(cfg: ModelConfig, modalities: list[str]) -> nn.Module:
    return ENCODER_CLASSES[cfg.encoder](cfg, modalities)
