"""Decoders (paper Sec. 3.3): shared, separate, joint.

A decoder takes full-length decoder sequences {"audio": z_a (B, n_a, Dd), "video": z_v (B, n_v, Dd)}
(encoded tokens projected to the decoder width, mask tokens inserted, position embeddings added)
and returns per-modality predictions in patch space: (B, n_a, 256) and (B, n_v, 1536).

- shared: one set of decoder weights, each modality decoded on its own;
- separate: one decoder per modality;
- joint: one decoder over the concatenation of both sequences ("early" decoding, Table 1).
Each modality always has its own output head `pred.<modality>` (official release).
"""

from __future__ import annotations

from torch import nn

from avmae.config import ModelConfig
from avmae.models.encoders import Tokens, concat_tokens, split_tokens
from avmae.models.transformer import Transformer


class Decoder(nn.Module):
    def __init__(self, cfg: ModelConfig, modalities: list[str], patch_dims: dict[str, int]):
        super().__init__()
        self.strategy = cfg.decoder

        def make() -> Transformer:
            return Transformer(cfg.decoder_embed_dim, cfg.decoder_depth, cfg.decoder_num_heads,
                               cfg.decoder_mlp_dim, gelu=cfg.gelu, eps=cfg.layer_norm_eps)

        if self.strategy == "separate":
            self.streams = nn.ModuleDict({m: make() for m in modalities})
        else:
            self.transformer = make()
        self.pred = nn.ModuleDict({m: nn.Linear(cfg.decoder_embed_dim, patch_dims[m]) for m in modalities})

    def forward(self, seqs: Tokens) -> Tokens:
        if self.strategy == "separate":
            out = {m: self.streams[m](z) for m, z in seqs.items()}
        elif self.strategy == "shared":
            out = {m: self.transformer(z) for m, z in seqs.items()}
        else:  # joint
            z, order = concat_tokens(seqs)
            out = split_tokens(self.transformer(z), order)
        return {m: self.pred[m](z) for m, z in out.items()}
