"""Finetuning classifiers (paper Sec. 4.1, A.3, Table 12; the AV-MAE decoder is discarded, Fig. 1).

    StreamClassifier, one ViT stream per modality over ALL of its tokens (no masking):
        modality "audio" -> AST [31]: spectrogram patches, global average pooling, linear head
        modality "video" -> unfactorised ViViT [6]: tubelets, global average pooling, linear head
        modality "av"    -> MBT [52]: an audio and a video stream; layers before `fusion_layer` are
                            unimodal, from `fusion_layer` on they exchange information only through
                            a few shared bottleneck tokens
    EncoderClassifier, the AV-MAE encoder structure itself (early / separate / mid / shared) over all
        tokens: Table 12's "pretraining encoder" column.

Both pool each modality's own tokens, send every pooled vector through ONE shared head and average
the logits over modalities (MBT). Training takes the logits per modality instead
(`forward(..., per_modality=True)`): each gets its own loss and the losses are averaged (official
mbt.py); evaluation averages the logits. `num_classes` is an int (one head) or a tuple such as
(num_verbs, num_nouns) (one head each, Epic Kitchens, Sec. 4.1); the output is then a tuple.

Inputs as everywhere: audio log-mel (B, 1, T_frames, 128), video (B, 3, T, H, W). Position
embeddings are fixed sin-cos computed for the actual token grid, so 32 finetuning frames or 10 s of
audio need no resizing. A clip without audio or video is given as zeros (the data pipeline's fill).

Parameter names (what `init_from_pretrained` maps onto):
    patch_embed.<m>.proj.*, modality_embed.<m>     as in AVMAE
    streams.<m>.blocks.N.*, streams.<m>.norm.*     StreamClassifier (timm ViT names per stream);
    norm.*                                         its one final norm with finetune.shared_norm
    bottleneck                                     StreamClassifier with two modalities (MBT)
    encoder.*                                      EncoderClassifier, exactly AVMAE's encoder
    head.* (one head) or head.<i>.* (several)
"""

from __future__ import annotations

import dataclasses
import re

import torch
from torch import nn

from avmae.config import Config, ConfigError, FinetuneConfig, ModelConfig
from avmae.models.encoders import Tokens, build_encoder
from avmae.models.patch_embed import AudioPatchEmbed, VideoPatchEmbed
from avmae.models.pos_embed import sincos_pos_embed
from avmae.models.transformer import Transformer, drop_path_schedule, init_weights

FINETUNE_MODALITIES = {"audio": ["audio"], "video": ["video"], "av": ["audio", "video"]}
Logits = torch.Tensor | tuple[torch.Tensor, ...]


class Classifier(nn.Module):
    """What both classifiers share: tokenisers, pooling and the shared head(s)."""

    def __init__(self, model_cfg: ModelConfig, finetune_cfg: FinetuneConfig,
                 num_classes: int | tuple[int, ...]):
        super().__init__()
        if finetune_cfg.modality not in FINETUNE_MODALITIES:
            raise ConfigError(f"finetune.modality='{finetune_cfg.modality}' is not one of: audio, video, av")
        self.model_cfg, self.finetune_cfg = model_cfg, finetune_cfg
        self.modalities = FINETUNE_MODALITIES[finetune_cfg.modality]
        self.num_classes = num_classes
        D, p = model_cfg.embed_dim, model_cfg.patch_size
        embeds = {"audio": lambda: AudioPatchEmbed(D, p),
                  "video": lambda: VideoPatchEmbed(D, model_cfg.tubelet_frames, p)}
        self.patch_embed = nn.ModuleDict({m: embeds[m]() for m in self.modalities})
        if model_cfg.modality_embed:  # kept only so that a pretrained one is carried over
            self.modality_embed = nn.ParameterDict(
                {m: nn.Parameter(torch.zeros(1, 1, D)) for m in self.modalities})
        sizes = (num_classes,) if isinstance(num_classes, int) else tuple(num_classes)
        if not sizes or any(int(c) < 1 for c in sizes):
            raise ConfigError(f"num_classes={num_classes!r}: every head needs at least one class")
        heads = [nn.Linear(D, int(c)) for c in sizes]
        self.head = heads[0] if isinstance(num_classes, int) else nn.ModuleList(heads)

    def _init_weights(self) -> None:
        """As AVMAE for the trunk (xavier linears, MAE patch projections); zero heads as ViViT /
        MBT, so that finetuning starts from uniform predictions."""
        self.apply(init_weights)
        for pe in self.patch_embed.values():
            nn.init.xavier_uniform_(pe.proj.weight.view(pe.proj.weight.shape[0], -1))
        if self.model_cfg.modality_embed:
            for e in self.modality_embed.values():
                nn.init.normal_(e, std=0.02)
        for head in self.heads():
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)

    def heads(self) -> list[nn.Linear]:
        return [self.head] if isinstance(self.head, nn.Linear) else list(self.head)

    # --- Tokenise ----------------------------------------------------------------------------
    def _inputs(self, audio: torch.Tensor | None, video: torch.Tensor | None) -> Tokens:
        """The inputs this model uses; others are ignored, so one data pipeline serves all."""
        given = {"audio": audio, "video": video}
        missing = [m for m in self.modalities if given[m] is None]
        if missing:
            raise ValueError(f"this classifier (finetune.modality={self.finetune_cfg.modality}) needs "
                             f"{' and '.join(missing)}; give zeros for a clip without it")
        return {m: given[m] for m in self.modalities}

    def tokenise(self, inputs: Tokens) -> Tokens:
        """Every token, with its sin-cos position embedding for the actual grid: {m: (B, N_m, D)}."""
        tokens = {}
        for m, x in inputs.items():
            grid = self.patch_embed[m].grid(x)
            v = self.patch_embed[m](x)                                   # (B, N_m, D)
            v = v + sincos_pos_embed(grid, v.shape[-1], self.model_cfg.pos_embed,
                                     v.device, v.dtype, self.model_cfg.sincos_layout)
            if self.model_cfg.modality_embed:
                v = v + self.modality_embed[m].to(v.dtype)
            tokens[m] = v
        return tokens

    # --- Classify ----------------------------------------------------------------------------
    @staticmethod
    def pool(features: Tokens) -> Tokens:
        """Global average pooling of each modality's own tokens: {m: (B, N_m, D)} -> {m: (B, D)}."""
        return {m: x.mean(dim=1) for m, x in features.items()}

    def forward_head(self, features: Tokens, per_modality: bool = False) -> Logits | dict[str, Logits]:
        """Pool each modality and apply the shared head(s). By default the logits are averaged over
        modalities (MBT at evaluation); per_modality=True returns {m: logits} instead, what MBT
        trains on (one loss per modality, averaged: official mbt.py)."""
        pooled = self.pool(features)
        one = isinstance(self.head, nn.Linear)
        per = {m: self.head(z) if one else tuple(head(z) for head in self.heads())   # (B, C) each
               for m, z in pooled.items()}
        if per_modality:
            return per
        if one:
            return torch.stack(list(per.values())).mean(dim=0)
        return tuple(torch.stack([p[i] for p in per.values()]).mean(dim=0) for i in range(len(self.head)))

    def forward(self, audio: torch.Tensor | None = None, video: torch.Tensor | None = None,
                per_modality: bool = False) -> Logits | dict[str, Logits]:
        """Logits (B, C), or a tuple of them for several heads, averaged over modalities; with
        per_modality=True a dict {modality: those logits} (training)."""
        return self.forward_head(self.forward_features(audio, video), per_modality)

    def forward_features(self, audio=None, video=None) -> Tokens:
        raise NotImplementedError

    def layer_id(self, name: str) -> int:
        raise NotImplementedError


class StreamClassifier(Classifier):
    """AST / ViViT (one modality) or MBT (two modalities), see the module docstring.

    MBT fusion (reference-facts, MBT release): the bottleneck is a learned (1, n, D) parameter tiled
    over the batch. At each layer i >= fusion_layer, stream m's own layer i processes
    [x_m ; b] (B, N_m + n, D); the next bottleneck is the mean of the streams' updated bottlenecks.
    fusion_layer = depth means no fusion inside the network (late fusion of logits only).
    """

    def __init__(self, model_cfg: ModelConfig, finetune_cfg: FinetuneConfig,
                 num_classes: int | tuple[int, ...]):
        super().__init__(model_cfg, finetune_cfg, num_classes)
        L, D = model_cfg.depth, model_cfg.embed_dim
        self.fusion_layer = finetune_cfg.fusion_layer
        if len(self.modalities) > 1:
            if not 0 <= self.fusion_layer <= L:
                raise ConfigError(f"finetune.fusion_layer={self.fusion_layer} must be in [0, model.depth="
                                  f"{L}] (MBT ViT-B fuses from layer 8 of 12)")
            if finetune_cfg.bottlenecks < 1:
                raise ConfigError(f"finetune.bottlenecks={finetune_cfg.bottlenecks} must be >= 1 for MBT")
        rates = drop_path_schedule(finetune_cfg.drop_path, L)  # stochastic depth, Tables 16-18
        mlp_dim = int(D * model_cfg.mlp_ratio)
        # The official MBT ends in ONE LayerNorm (`encoder_norm`) over the concatenated streams, i.e.
        # the same norm for every token of both (finetune.shared_norm); else each stream has its own.
        self.shared_norm = finetune_cfg.shared_norm
        self.streams = nn.ModuleDict({m: Transformer(D, L, model_cfg.num_heads, mlp_dim, rates,
                                                     not self.shared_norm, model_cfg.gelu,
                                                     model_cfg.layer_norm_eps)
                                      for m in self.modalities})
        if self.shared_norm:
            self.norm = nn.LayerNorm(D, eps=model_cfg.layer_norm_eps)
        self._init_weights()
        # Only built where used (DDP requires every parameter to get a gradient).
        self.fused = len(self.modalities) > 1 and self.fusion_layer < L
        if self.fused:
            self.bottleneck = nn.Parameter(torch.empty(1, finetune_cfg.bottlenecks, D))
            nn.init.normal_(self.bottleneck, std=0.02)  # MBT release

    def forward_fusion_layer(self, i: int, x: Tokens, bottleneck: torch.Tensor
                             ) -> tuple[Tokens, torch.Tensor]:
        """One MBT fusion layer: x {m: (B, N_m, D)}, bottleneck (B, n, D) -> the same shapes."""
        out, updated = {}, []
        for m, xm in x.items():
            y = self.streams[m].forward_block(i, torch.cat([xm, bottleneck], dim=1))  # (B, N_m + n, D)
            out[m] = y[:, : xm.shape[1]]
            updated.append(y[:, xm.shape[1]:])                                # (B, n, D)
        return out, torch.stack(updated).mean(dim=0)

    def forward_features(self, audio: torch.Tensor | None = None,
                         video: torch.Tensor | None = None) -> Tokens:
        """Normalised output tokens of each stream (bottleneck tokens excluded): {m: (B, N_m, D)}."""
        x = self.tokenise(self._inputs(audio, video))
        if self.fused:
            B = next(iter(x.values())).shape[0]
            bottleneck = self.bottleneck.to(x[self.modalities[0]].dtype).expand(B, -1, -1)  # (B, n, D)
        for i in range(self.model_cfg.depth):
            if self.fused and i >= self.fusion_layer:
                x, bottleneck = self.forward_fusion_layer(i, x, bottleneck)
            else:  # unimodal layer: no information crosses between the streams
                x = {m: self.streams[m].forward_block(i, xm) for m, xm in x.items()}
        norm = {m: self.norm if self.shared_norm else self.streams[m].norm for m in x}
        return {m: norm[m](xm) for m, xm in x.items()}

    def layer_id(self, name: str) -> int:
        """Depth for layer-wise lr decay: tokenisers 0, block i -> i + 1, final norms / head L + 1.
        The bottleneck tokens take the top id (no decay), as the official `_get_layer_id` gives
        every parameter it does not recognise as an embedding or a block."""
        L = self.model_cfg.depth
        if name.startswith(("patch_embed.", "modality_embed.")):
            return 0
        if name == "bottleneck":
            return L + 1
        found = re.match(r"streams\.\w+\.blocks\.(\d+)\.", name)
        if found:
            return int(found.group(1)) + 1
        return L + 1  # streams.<m>.norm or norm, head


class EncoderClassifier(Classifier):
    """The AV-MAE encoder (any strategy, `model_cfg.encoder`) over all tokens, then the shared head
    (Table 12, "pretraining encoder"). The encoder's parameter names are AVMAE's own."""

    def __init__(self, model_cfg: ModelConfig, finetune_cfg: FinetuneConfig,
                 num_classes: int | tuple[int, ...]):
        super().__init__(model_cfg, finetune_cfg, num_classes)
        # Finetuning's stochastic depth replaces pretraining's (none, Table 14).
        self.encoder = build_encoder(dataclasses.replace(model_cfg, drop_path=finetune_cfg.drop_path),
                                     self.modalities)
        self._init_weights()

    def forward_features(self, audio: torch.Tensor | None = None,
                         video: torch.Tensor | None = None) -> Tokens:
        """Encoded (normalised) tokens of each modality: {m: (B, N_m, D)}."""
        return self.encoder(self.tokenise(self._inputs(audio, video)))

    def layer_id(self, name: str) -> int:
        """Tokenisers 0; a block at depth i (counting a mid-fusion encoder's joint blocks after its
        L - S separate ones) -> i + 1; a mid-fusion stream's own final norm sits after block L - S - 1;
        final norm / head L + 1."""
        L = self.model_cfg.depth
        sep = L - self.model_cfg.fusion_layers
        if name.startswith(("patch_embed.", "modality_embed.")):
            return 0
        found = re.match(r"encoder\.(?:transformer|streams\.\w+)\.blocks\.(\d+)\.", name)
        if found:
            return int(found.group(1)) + 1
        found = re.match(r"encoder\.joint\.blocks\.(\d+)\.", name)
        if found:
            return sep + int(found.group(1)) + 1
        if self.model_cfg.encoder == "mid" and re.match(r"encoder\.streams\.\w+\.norm\.", name):
            return sep
        return L + 1


def build_classifier(cfg: Config, num_classes: int | tuple[int, ...]) -> Classifier:
    """The finetuning model for `cfg.finetune.architecture` and `cfg.finetune.modality`.

    `cfg.model` must describe the encoder to initialise from (sizes; and for the
    "pretraining_encoder" architecture its strategy): build it from the checkpoint's model config.
    Unimodal finetuning with architecture "mbt" is AST / ViViT (one stream, no bottleneck).
    """
    arch = cfg.finetune.architecture
    if arch == "mbt":
        return StreamClassifier(cfg.model, cfg.finetune, num_classes)
    if arch == "pretraining_encoder":
        return EncoderClassifier(cfg.model, cfg.finetune, num_classes)
    raise ConfigError(f"finetune.architecture='{arch}' is not one of: mbt, pretraining_encoder")


def param_groups_lrd(model: Classifier, base_lr: float, weight_decay: float,
                     layer_decay: float) -> list[dict]:
    """Optimiser parameter groups with layer-wise learning-rate decay (Tables 16-18: 0.75).

    A parameter at depth id k of L + 1 (see `layer_id`) gets lr = base_lr * layer_decay ** (L + 1 - k):
    the head the full rate, the tokenisers the smallest. Norms, biases, the bottleneck and the
    modality embeddings get no weight decay. Each group carries `lr_scale` (for schedulers that
    set lr = scheduled_lr * lr_scale), `layer_id` and the `names` of its parameters.
    """
    top = model.model_cfg.depth + 1
    groups: dict[tuple[int, bool], dict] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        no_decay = param.ndim <= 1 or name == "bottleneck" or name.startswith("modality_embed.")
        k = model.layer_id(name)
        key = (k, no_decay)
        if key not in groups:
            scale = layer_decay ** (top - k)
            groups[key] = {"params": [], "names": [], "layer_id": k, "lr_scale": scale,
                           "lr": base_lr * scale, "weight_decay": 0.0 if no_decay else weight_decay}
        groups[key]["params"].append(param)
        groups[key]["names"].append(name)
    return [groups[k] for k in sorted(groups)]
