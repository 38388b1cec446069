"""Analytic FLOP count of one pretraining or finetuning step (forward + backward), per clip.

A multiply-add counts as 2 FLOPs. A linear layer of n tokens, d_in -> d_out costs 2 n d_in d_out;
attention over n tokens of width d adds 2 n^2 d (Q K^T) + 2 n^2 d (attention x V). Backward costs
twice the forward (gradients w.r.t. inputs and weights), so a training step is 3x the forward,
except for the patch embedding, whose input (the clip) needs no gradient: 2x.
Norms, softmax, GELU and the loss are ignored (< 1 % at ViT sizes). These are model FLOPs (what
MFU divides by): activation checkpointing's recomputed forward is not counted.
"""

from __future__ import annotations

from avmae.config import Config
from avmae.models.masking import num_visible
from avmae.models.avmae import INPAINT_TARGETS, OTHER, model_modalities


def token_grid(cfg: Config) -> dict[str, tuple[int, ...]]:
    m, d = cfg.model, cfg.data
    grids = {}
    if m.has_audio:
        grids["audio"] = (d.audio_frames // m.patch_size, d.mel_bins // m.patch_size)
    if m.has_video:
        s = d.crop_size // m.patch_size
        grids["video"] = (d.num_frames // m.tubelet_frames, s, s)
    return grids


def token_counts(cfg: Config) -> tuple[dict[str, int], dict[str, int]]:
    """(all tokens, visible tokens) per modality."""
    ratio = {"audio": cfg.model.mask_ratio_audio, "video": cfg.model.mask_ratio_video}
    total = {k: _prod(g) for k, g in token_grid(cfg).items()}
    visible = {k: num_visible(n, ratio[k]) for k, n in total.items()}
    return total, visible


def _prod(xs) -> int:
    out = 1
    for x in xs:
        out *= x
    return out


def block_flops(n: int, d: int, mlp: int) -> int:
    """One pre-norm transformer block over n tokens: qkv, proj, fc1, fc2 and attention."""
    return 2 * n * (3 * d * d + d * d + 2 * d * mlp) + 4 * n * n * d


def stack_flops(seqs: list[int], depth: int, d: int, mlp: int) -> int:
    """`depth` blocks applied to each sequence length in `seqs` (separately)."""
    return depth * sum(block_flops(n, d, mlp) for n in seqs)


def _patch_dims(cfg: Config) -> dict[str, int]:
    m = cfg.model
    return {"audio": m.patch_size ** 2, "video": m.tubelet_frames * m.patch_size ** 2 * 3}


def encoder_flops(cfg: Config, seqs: list[int]) -> int:
    """The AV-MAE encoder (model.encoder's strategy) over one sequence length per modality."""
    m = cfg.model
    D, mlp = m.embed_dim, int(m.embed_dim * m.mlp_ratio)
    if m.encoder == "early":
        return stack_flops([sum(seqs)], m.depth, D, mlp)
    if m.encoder in ("separate", "shared"):
        return stack_flops(seqs, m.depth, D, mlp)
    return (stack_flops(seqs, m.depth - m.fusion_layers, D, mlp)      # mid
            + stack_flops([sum(seqs)], m.fusion_layers, D, mlp))


def finetune_flops(cfg: Config, num_classes: int = 0) -> dict[str, float]:
    """GFLOPs of one clip's finetuning step for finetune.architecture / finetune.modality, at the
    config's input (the finetuning input: 32 frames in Table 16). MBT: each stream over its own
    tokens, plus `bottlenecks` tokens in the layers from fusion_layer on; the pretraining encoder
    architecture: the encoder over all tokens. The head(s): 2 D C per modality."""
    from avmae.models.classifier import FINETUNE_MODALITIES
    m, f = cfg.model, cfg.finetune
    mods = FINETUNE_MODALITIES[f.modality]
    total, _ = token_counts(cfg)
    D, mlp = m.embed_dim, int(m.embed_dim * m.mlp_ratio)
    patch = sum(2 * total[k] * _patch_dims(cfg)[k] * D for k in mods)
    if f.architecture == "mbt":
        fused = len(mods) > 1 and f.fusion_layer < m.depth
        unimodal = f.fusion_layer if fused else m.depth
        enc = sum(stack_flops([total[k]], unimodal, D, mlp)
                  + stack_flops([total[k] + f.bottlenecks], m.depth - unimodal, D, mlp) for k in mods)
    else:
        enc = encoder_flops(cfg, [total[k] for k in mods])
    head = sum(2 * D * num_classes for _ in mods)
    forward = patch + enc + head
    return {"patch_embed_gflops": patch / 1e9, "encoder_gflops": enc / 1e9,
            "forward_gflops": forward / 1e9, "train_gflops_per_clip": (3 * (enc + head) + 2 * patch) / 1e9}


def pretrain_flops(cfg: Config) -> dict[str, float]:
    """GFLOPs of one clip's pretraining step, split by part."""
    m = cfg.model
    mods = model_modalities(m)
    total, visible = token_counts(cfg)
    patch_dim = _patch_dims(cfg)
    D = m.embed_dim
    Dd, dmlp = m.decoder_embed_dim, m.decoder_mlp_dim

    patch = sum(2 * total[k] * patch_dim[k] * D for k in mods)
    enc = encoder_flops(cfg, [visible[k] for k in mods])

    def decode(lengths: dict[str, int]) -> int:
        seqs = [sum(lengths.values())] if m.decoder == "joint" else list(lengths.values())
        heads = sum(2 * n * Dd * patch_dim[k] for k, n in lengths.items())
        return stack_flops(seqs, m.decoder_depth, Dd, dmlp) + heads

    targets = INPAINT_TARGETS.get(m.objective, [])
    projected = mods if m.objective in ("joint", "joint_and_inpaint", "inpaint_both") \
        else [OTHER[k] for k in targets]
    dec = sum(2 * visible[k] * D * Dd for k in projected)  # decoder_embed, once per modality
    if m.objective in ("joint", "joint_and_inpaint"):
        dec += decode({k: total[k] for k in mods})
    if m.objective != "joint":
        dec += decode({k: total[k] for k in targets})
    forward = patch + enc + dec
    return {"patch_embed_gflops": patch / 1e9, "encoder_gflops": enc / 1e9,
            "decoder_gflops": dec / 1e9, "forward_gflops": forward / 1e9,
            "train_gflops_per_clip": (3 * (enc + dec) + 2 * patch) / 1e9}
