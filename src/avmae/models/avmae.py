"""The Audiovisual Masked Autoencoder (paper Sec. 3, Fig. 1-3).

    v = Tokenise(x) + p                      patch_embed.<modality> + sin-cos position embeddings
    u = Mask(v; alpha)                       random_masking, per modality and per sample
    e = Encode(u)                            encoder: early | separate | mid | shared ([CLS] first
                                             with model.cls_token, taken off after: `encode`)
    z = Unshuffle(e, m) + p  (or [e_B||m_A]) decoder_embed.<m>, mask_token.<m>
    x~ = Decode(z)                           decoder: shared | separate | joint, head pred.<m>
    loss = MSE on the masked tokens only     Eq. 1

Inputs: audio log-mel (B, 1, T_frames, 128), video (B, 3, T, H, W) in [-1, 1]. `modalities`
"audio" or "video" gives the unimodal AudioMAE / VideoMAE of Table 3 with the same class.
"""

from __future__ import annotations

import torch
from torch import nn

from avmae.config import ConfigError, ModelConfig
from avmae.models.decoders import Decoder
from avmae.models.encoders import Tokens, build_encoder
from avmae.models.masking import random_masking, unshuffle
from avmae.models.objectives import inpaint_sequence, masked_mse, reconstruction_target
from avmae.models.patch_embed import (AudioPatchEmbed, VideoPatchEmbed, patchify_audio, patchify_video,
                          unpatchify_audio, unpatchify_video)
from avmae.models.pos_embed import sincos_pos_embed
from avmae.models.transformer import init_weights

OTHER = {"audio": "video", "video": "audio"}
INPAINT_TARGETS = {"inpaint_video_from_audio": ["video"], "inpaint_audio_from_video": ["audio"],
                   "inpaint_both": ["audio", "video"], "joint_and_inpaint": ["audio", "video"]}


def model_modalities(cfg: ModelConfig) -> list[str]:
    return [m for m, on in (("audio", cfg.has_audio), ("video", cfg.has_video)) if on]


class AVMAE(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.modalities = model_modalities(cfg)
        D, Dd, p = cfg.embed_dim, cfg.decoder_embed_dim, cfg.patch_size
        embeds = {"audio": lambda: AudioPatchEmbed(D, p),
                  "video": lambda: VideoPatchEmbed(D, cfg.tubelet_frames, p)}
        self.patch_embed = nn.ModuleDict({m: embeds[m]() for m in self.modalities})
        self.patch_dims = {"audio": p * p, "video": cfg.tubelet_frames * p * p * 3}
        if cfg.modality_embed:
            self.modality_embed = nn.ParameterDict(
                {m: nn.Parameter(torch.zeros(1, 1, D)) for m in self.modalities})
        if cfg.cls_token:  # MAE / AudioMAE's [CLS]; its position code is zero (MAE's table row 0)
            self.cls_token = nn.ParameterDict(
                {m: nn.Parameter(torch.zeros(1, 1, D)) for m in self.modalities})
        self.encoder = build_encoder(cfg, self.modalities)
        # Only what the objective uses is built (DDP requires every parameter to get a gradient):
        # single-direction inpainting decodes one modality from the other's encoded tokens.
        decoded = INPAINT_TARGETS.get(cfg.objective, self.modalities)
        if cfg.objective == "joint_and_inpaint":
            decoded = self.modalities
        projected = self.modalities if cfg.objective in ("joint", "joint_and_inpaint", "inpaint_both") \
            else [OTHER[m] for m in decoded]
        self.decoder_embed = nn.ModuleDict({m: nn.Linear(D, Dd) for m in projected})
        self.mask_token = nn.ParameterDict(
            {m: nn.Parameter(torch.zeros(1, 1, Dd)) for m in decoded})  # zero init (official)
        self.decoder = Decoder(cfg, decoded, self.patch_dims)
        self.apply(init_weights)
        for pe in self.patch_embed.values():  # MAE: initialise the patch projection like a linear
            nn.init.xavier_uniform_(pe.proj.weight.view(pe.proj.weight.shape[0], -1))
        if cfg.modality_embed:
            for e in self.modality_embed.values():
                nn.init.normal_(e, std=0.02)
        if cfg.cls_token:
            for c in self.cls_token.values():
                nn.init.normal_(c, std=0.02)  # MAE

    # --- targets -----------------------------------------------------------------------------
    def patchify(self, modality: str, x: torch.Tensor) -> torch.Tensor:
        if modality == "audio":
            return patchify_audio(x, self.cfg.patch_size)
        return patchify_video(x, self.cfg.tubelet_frames, self.cfg.patch_size)

    def unpatchify(self, modality: str, x: torch.Tensor, grid: tuple[int, ...]) -> torch.Tensor:
        if modality == "audio":
            return unpatchify_audio(x, grid, self.cfg.patch_size)
        return unpatchify_video(x, grid, self.cfg.tubelet_frames, self.cfg.patch_size)

    # --- Tokenise ----------------------------------------------------------------------------
    def _inputs(self, audio: torch.Tensor | None, video: torch.Tensor | None) -> Tokens:
        given = {m: x for m, x in (("audio", audio), ("video", video)) if x is not None}
        if not given:
            raise ValueError("AVMAE needs audio, video or both")
        extra = set(given) - set(self.modalities)
        if extra:
            raise ValueError(f"this model was built for {self.cfg.modalities}, got {sorted(extra)}")
        return given

    def _pos(self, grid: tuple[int, ...], dim: int, like: torch.Tensor) -> torch.Tensor:
        return sincos_pos_embed(grid, dim, self.cfg.pos_embed,
                                like.device, like.dtype, self.cfg.sincos_layout)

    def tokenise(self, inputs: Tokens) -> tuple[Tokens, dict[str, tuple[int, ...]]]:
        """v = Tokenise(x) + p (+ optional learned modality embedding)."""
        tokens, grids = {}, {}
        for m, x in inputs.items():
            grids[m] = self.patch_embed[m].grid(x)
            v = self.patch_embed[m](x)                          # (B, N_m, D)
            v = v + self._pos(grids[m], v.shape[-1], v)
            if self.cfg.modality_embed:
                v = v + self.modality_embed[m].to(v.dtype)
            tokens[m] = v
        return tokens, grids

    def encode(self, tokens: Tokens) -> Tokens:
        """e = Encode(u), {m: (B, n_m, D)} -> the same shapes. With model.cls_token each modality's
        [CLS] goes first (as MAE appends it after masking) and is taken off after the encoder: the
        decoder and the classifiers see patch tokens only."""
        if not self.cfg.cls_token:
            return self.encoder(tokens)
        first = {m: torch.cat([self.cls_token[m].to(x.dtype).expand(x.shape[0], -1, -1), x], dim=1)
                 for m, x in tokens.items()}                     # (B, 1 + n_m, D)
        return {m: e[:, 1:] for m, e in self.encoder(first).items()}

    # --- encoder surface for finetuning and embeddings ------------------------------------------
    def forward_features(self, audio: torch.Tensor | None = None,
                         video: torch.Tensor | None = None) -> Tokens:
        """Encoded tokens of whichever modalities are given, without masking: {m: (B, N_m, D)}."""
        tokens, _ = self.tokenise(self._inputs(audio, video))
        return self.encode(tokens)

    # --- pretraining -------------------------------------------------------------------------
    def forward_encoder(self, tokens: Tokens, generator: torch.Generator | None,
                        noise: Tokens | None = None):
        ratio = {"audio": self.cfg.mask_ratio_audio, "video": self.cfg.mask_ratio_video}
        visible, masks, restore = {}, {}, {}
        for m, v in tokens.items():
            visible[m], masks[m], restore[m] = random_masking(
                v, ratio[m], generator, None if noise is None else noise[m])
        return self.encode(visible), masks, restore

    def forward_decoder_joint(self, projected: Tokens, restore: Tokens, grids) -> Tokens:
        """Joint reconstruction: z_m = Unshuffle(e_m, m_m) + p_m, decoded together."""
        seqs = {}
        for m, e in projected.items():
            z = unshuffle(e, self.mask_token[m], restore[m])
            seqs[m] = z + self._pos(grids[m], z.shape[-1], z)
        return self.decoder(seqs)

    def forward_decoder_inpaint(self, projected: Tokens, grids, targets: list[str]):
        """Modality inpainting: z_A = [e_B || m_A ...] + p_A (Fig. 3)."""
        seqs, loss_masks = {}, {}
        for a in targets:
            n_a = int(torch.tensor(grids[a]).prod())
            z, loss_masks[a] = inpaint_sequence(projected[OTHER[a]], self.mask_token[a], n_a)
            seqs[a] = z + self._pos(grids[a], z.shape[-1], z)
        return self.decoder(seqs), loss_masks

    def _weighted(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        w = {"audio": self.cfg.loss_weight_audio, "video": self.cfg.loss_weight_video}
        return sum(w[m] * l for m, l in losses.items()) / sum(w[m] for m in losses)

    def forward(self, audio: torch.Tensor | None = None, video: torch.Tensor | None = None,
                generator: torch.Generator | None = None, noise: Tokens | None = None,
                present: Tokens | None = None) -> dict:
        """One pretraining forward pass.

        Masks come from `noise` ({m: (B, N_m)}, see masking.sample_noise) when given, else from
        `generator`, else from torch's global RNG. `present` ({m: (B,) bool}) marks clips whose
        modality was missing and filled with zeros: they are encoded but not reconstructed.

        Returns a dict with `loss` (the objective), `loss_<m>` (per modality), and for each
        modality m: `pred_<m>` (B, N_m, P_m) in patch space, `target_<m>` (B, N_m, P_m),
        `mask_<m>` (B, N_m; 1 = removed from the encoder input), `loss_mask_<m>` (1 = in the loss;
        equal to the mask for joint reconstruction), and `grid_<m>`.
        """
        inputs = self._inputs(audio, video)
        objective = self.cfg.objective
        if objective != "joint" and set(inputs) != {"audio", "video"}:
            raise ConfigError(f"model.objective={objective} needs both audio and video inputs")
        tokens, grids = self.tokenise(inputs)
        targets = {m: reconstruction_target(self.patchify(m, x), self.cfg.norm_targets)
                   for m, x in inputs.items()}
        encoded, masks, restore = self.forward_encoder(tokens, generator, noise)
        projected = {m: self.decoder_embed[m](e) for m, e in encoded.items() if m in self.decoder_embed}

        def loss_of(m: str, pred: torch.Tensor, loss_mask: torch.Tensor) -> torch.Tensor:
            if present is not None and m in present:  # a filled modality is no target
                loss_mask = loss_mask * present[m].to(loss_mask.dtype)[:, None]
            return masked_mse(pred, targets[m], loss_mask)

        out: dict = {}
        for m in inputs:
            out[f"target_{m}"], out[f"mask_{m}"], out[f"grid_{m}"] = targets[m], masks[m], grids[m]

        if objective in ("joint", "joint_and_inpaint"):
            preds = self.forward_decoder_joint(projected, restore, grids)
            losses = {m: loss_of(m, preds[m], masks[m]) for m in preds}
            for m in preds:
                out[f"pred_{m}"], out[f"loss_mask_{m}"], out[f"loss_{m}"] = preds[m], masks[m], losses[m]
            out["loss"] = self._weighted(losses)
        if objective != "joint":
            preds, loss_masks = self.forward_decoder_inpaint(projected, grids, INPAINT_TARGETS[objective])
            losses = {m: loss_of(m, preds[m], loss_masks[m]) for m in preds}
            if objective == "joint_and_inpaint":
                out["loss_joint"] = out["loss"]
                out["loss_inpaint"] = self._weighted(losses)
                out.update({f"loss_inpaint_{m}": l for m, l in losses.items()})
                out["loss"] = (self.cfg.joint_weight * out["loss_joint"]
                               + self.cfg.inpaint_weight * out["loss_inpaint"])
            else:
                for m in preds:
                    out[f"pred_{m}"], out[f"loss_mask_{m}"], out[f"loss_{m}"] = preds[m], loss_masks[m], losses[m]
                out["loss"] = self._weighted(losses)
        return out

    # --- parameter groups for `info` ---------------------------------------------------------
    def encoder_parameters(self) -> list[nn.Parameter]:
        params = list(self.patch_embed.parameters()) + list(self.encoder.parameters())
        if self.cfg.modality_embed:
            params += list(self.modality_embed.parameters())
        if self.cfg.cls_token:
            params += list(self.cls_token.parameters())
        return params

    def decoder_parameters(self) -> list[nn.Parameter]:
        return (list(self.decoder_embed.parameters()) + list(self.mask_token.parameters())
                + list(self.decoder.parameters()))

    def stream_parameters(self, modality: str) -> list[nn.Parameter]:
        """Parameters on one modality's path through the encoder (its ViT 'stream')."""
        params = list(self.patch_embed[modality].parameters())
        if self.cfg.cls_token:
            params.append(self.cls_token[modality])
        for module in self.encoder.stream_modules(modality):
            params += list(module.parameters())
        return params
