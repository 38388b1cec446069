"""`avmae import-scenic CHECKPOINT --out RUN`: an official AV-MAE / MBT checkpoint as an avmae run.

The official release (google-research/scenic, `projects/av_mae`) published Flax checkpoints of its
ViT-L models: AV-MAE pretrained on AudioSet and VGGSound (`ViViTMultiMaskedAutoencoder`) and the
MBT classifiers finetuned from them. This module reads one (`flax_checkpoint.read_params`: msgpack
and numpy, no JAX), infers the architecture from the parameter tree, converts every tensor, and
writes an ordinary run folder that `finetune --init`, `pretrain --init`, `evaluate`, `embed` and
`visualize` accept.

Official name (Flax)                                  avmae name
pretraining model (`AVMAE`)
  embedding_rgb / embedding_spectrogram                 patch_embed.video / patch_embed.audio .proj
  Transformer_rgb / Transformer_spectrogram            encoder.streams.video / .audio  (separate, mid)
  Transformer_concat                                   encoder.joint                    (mid, S layers)
  Transformer                                          encoder.transformer              (early; shared)
  Encoder_modality_token_{rgb,spectrogram}             modality_embed.{video,audio}
  decoder_projection_{rgb,spectrogram}                 decoder_embed.{video,audio}
  mask_token_{rgb,spectrogram}                         mask_token.{video,audio}
  Decoder / Decoder_{rgb,spectrogram}                  decoder.transformer (shared; joint) / decoder.streams.*
  output_projection_{rgb,spectrogram}                  decoder.pred.{video,audio}
MBT classifier (`StreamClassifier`, finetune.shared_norm)
  embedding / embedding_spectrogram                    patch_embed.video / patch_embed.audio .proj
  Transformer/encoderblock_i                           streams.<first of modality_fusion>.blocks.i
  Transformer/encoderblock_i_spec / _rgb               streams.audio / streams.video .blocks.i
  Transformer/encoder_norm                             norm  (one norm for both streams)
  bottleneck                                           bottleneck
  ProjectionHeadAndClassifier_0/output_projection      head
inside every Transformer / Decoder (timm ViT names)
  encoderblock_i/LayerNorm_0, LayerNorm_1              blocks.i.norm1, blocks.i.norm2   (scale -> weight)
  encoderblock_i/MultiHeadDotProductAttention_0/{query,key,value}
                                                       blocks.i.attn.qkv (fused q, k, v)
  encoderblock_i/MultiHeadDotProductAttention_0/out    blocks.i.attn.proj
  encoderblock_i/MlpBlock_0/Dense_0, Dense_1           blocks.i.mlp.fc1, blocks.i.mlp.fc2
  encoder_norm                                         norm

What the tree cannot say (input lengths, mask ratios, MBT fusion layer, single- or multi-label)
comes from `--preset` (audioset-large, vggsound-large), chosen from the tree when not given: mid
fusion or an audio-only model or 527 classes -> AudioSet, otherwise VGGSound. Official models
differ from avmae's defaults in details the preset switches on: tanh GELU, interleaved sin-cos
tables, MBT's one final norm. A model narrower or shallower than ViT-L (the test vectors) keeps the
preset's input and takes the MBT fusion layer at the same fraction of its depth (18 of 24 -> 3 of 4).
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from avmae.checkpoint import FINETUNE_KIND, PRETRAIN_KIND, save_checkpoint, warn, writing
from avmae.config import FINETUNE_INPUT, PRESETS, Config, ConfigError, build_config, set_value
from avmae.data.manifest import save_vocab
from avmae.run_dir import claim_run_dir

MODALITY = {"rgb": "video", "spectrogram": "audio"}
# Fields the parameter tree fixes: a --set of one of them cannot fit the checkpoint's weights.
ARCHITECTURE_FIELDS = {f"model.{k}" for k in ("embed_dim", "depth", "num_heads", "mlp_ratio", "patch_size",
                                              "tubelet_frames", "encoder", "fusion_layers", "decoder",
                                              "decoder_embed_dim", "decoder_depth", "decoder_num_heads",
                                              "modalities", "modality_embed")}
MBT_SUFFIX = {"spec": "audio", "rgb": "video"}   # encoderblock_i_<suffix> in MBT
OFFICIAL_DEPTH = 24                              # both released models are ViT-L
HEAD = "ProjectionHeadAndClassifier_0/output_projection"


# --- One function per tensor kind -----------------------------------------------------------------
def dense_kernel(kernel: np.ndarray) -> torch.Tensor:
    """Flax Dense kernel (in, out) -> nn.Linear weight (out, in)."""
    return torch.from_numpy(np.ascontiguousarray(kernel.T))


def attention_qkv(query: np.ndarray, key: np.ndarray, value: np.ndarray) -> torch.Tensor:
    """Flax query/key/value kernels (D, heads, head_dim) -> the fused qkv weight (3D, D)."""
    return torch.from_numpy(np.concatenate([k.reshape(k.shape[0], -1).T for k in (query, key, value)]))


def attention_qkv_bias(query: np.ndarray, key: np.ndarray, value: np.ndarray) -> torch.Tensor:
    """Flax query/key/value biases (heads, head_dim) -> the fused qkv bias (3D,)."""
    return torch.from_numpy(np.concatenate([b.reshape(-1) for b in (query, key, value)]))


def attention_out(kernel: np.ndarray) -> torch.Tensor:
    """Flax out kernel (heads, head_dim, D) -> the projection weight (D, D); heads stay in order."""
    return torch.from_numpy(np.ascontiguousarray(kernel.reshape(-1, kernel.shape[-1]).T))


def video_patch_kernel(kernel: np.ndarray) -> torch.Tensor:
    """Flax Conv3D kernel (pt, ph, pw, C, D) over (B, T, H, W, C) -> Conv3d weight (D, C, pt, ph, pw)."""
    return torch.from_numpy(np.ascontiguousarray(kernel.transpose(4, 3, 0, 1, 2)))


def audio_patch_kernel(kernel: np.ndarray) -> torch.Tensor:
    """Flax Conv kernel (time, mel, 1, D) over (B, time, mel, 1) -> Conv2d weight (D, 1, time, mel)."""
    return torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)))


def vector(x: np.ndarray) -> torch.Tensor:
    """Biases, LayerNorm scales, tokens: the same values (mask tokens keep their (1, 1, D) shape)."""
    return torch.from_numpy(np.array(x, dtype=np.float32))


# --- Tree walking ---------------------------------------------------------------------------------
class Tree:
    """The flat official parameters; every converted tensor is taken out, so what is left over at
    the end was not understood (and the import refuses it)."""

    def __init__(self, flat: dict[str, np.ndarray], source: str):
        self.flat, self.source = flat, source  # owned: taking a tensor out frees the original

    def has(self, name: str) -> bool:
        return name in self.flat

    def take(self, name: str) -> np.ndarray:
        if name not in self.flat:
            raise ConfigError(f"'{self.source}' has no parameter '{name}': the parameter tree is not "
                              "an official AV-MAE / MBT model")
        return np.asarray(self.flat.pop(name), dtype=np.float32)

    def blocks(self, prefix: str, suffix: str = "") -> list[int]:
        """Indices i of `{prefix}/encoderblock_i{suffix}/...` (exactly that suffix)."""
        pattern = re.compile(rf"^{re.escape(prefix)}/encoderblock_(\d+){re.escape(suffix)}/")
        found = {int(m.group(1)) for m in map(pattern.match, self.flat) if m}
        return sorted(found)


def convert_block(tree: Tree, src: str, dst: str) -> dict[str, torch.Tensor]:
    """One encoder block `src` (e.g. 'Transformer_rgb/encoderblock_3') -> `dst.*` (timm names)."""
    att = f"{src}/MultiHeadDotProductAttention_0"
    out = {f"{dst}.norm1.weight": vector(tree.take(f"{src}/LayerNorm_0/scale")),
           f"{dst}.norm1.bias": vector(tree.take(f"{src}/LayerNorm_0/bias")),
           f"{dst}.norm2.weight": vector(tree.take(f"{src}/LayerNorm_1/scale")),
           f"{dst}.norm2.bias": vector(tree.take(f"{src}/LayerNorm_1/bias"))}
    qkv = [tree.take(f"{att}/{p}/kernel") for p in ("query", "key", "value")]
    qkv_bias = [tree.take(f"{att}/{p}/bias") for p in ("query", "key", "value")]
    out[f"{dst}.attn.qkv.weight"] = attention_qkv(*qkv)
    out[f"{dst}.attn.qkv.bias"] = attention_qkv_bias(*qkv_bias)
    out[f"{dst}.attn.proj.weight"] = attention_out(tree.take(f"{att}/out/kernel"))
    out[f"{dst}.attn.proj.bias"] = vector(tree.take(f"{att}/out/bias"))
    for i, fc in ((0, "fc1"), (1, "fc2")):
        out[f"{dst}.mlp.{fc}.weight"] = dense_kernel(tree.take(f"{src}/MlpBlock_0/Dense_{i}/kernel"))
        out[f"{dst}.mlp.{fc}.bias"] = vector(tree.take(f"{src}/MlpBlock_0/Dense_{i}/bias"))
    return out


def convert_norm(tree: Tree, src: str, dst: str) -> dict[str, torch.Tensor]:
    return {f"{dst}.weight": vector(tree.take(f"{src}/scale")), f"{dst}.bias": vector(tree.take(f"{src}/bias"))}


def convert_dense(tree: Tree, src: str, dst: str) -> dict[str, torch.Tensor]:
    return {f"{dst}.weight": dense_kernel(tree.take(f"{src}/kernel")), f"{dst}.bias": vector(tree.take(f"{src}/bias"))}


def convert_patch_embed(tree: Tree, src: str, modality: str) -> dict[str, torch.Tensor]:
    kernel = video_patch_kernel if modality == "video" else audio_patch_kernel
    return {f"patch_embed.{modality}.proj.weight": kernel(tree.take(f"{src}/kernel")),
            f"patch_embed.{modality}.proj.bias": vector(tree.take(f"{src}/bias"))}


def convert_transformer(tree: Tree, src: str, dst: str) -> dict[str, torch.Tensor]:
    """A whole `vivit.Encoder` (blocks and `encoder_norm`) -> a `Transformer` at `dst`."""
    out = {}
    for i in tree.blocks(src):
        out.update(convert_block(tree, f"{src}/encoderblock_{i}", f"{dst}.blocks.{i}"))
    out.update(convert_norm(tree, f"{src}/encoder_norm", f"{dst}.norm"))
    return out


# --- What the tree says ---------------------------------------------------------------------------
@dataclass
class Architecture:
    """Everything read off the parameter tree."""

    kind: str                    # avmae_pretrain | avmae_finetune
    modalities: list[str]        # avmae names, e.g. ["audio", "video"]
    embed_dim: int
    depth: int
    num_heads: int
    mlp_dim: int
    patch_size: int
    tubelet_frames: int
    encoder: str = ""            # pretraining: early | separate | mid
    fusion_layers: int = 0       # mid fusion: S joint layers
    decoder: str = ""            # shared | separate
    decoder_dims: tuple[int, int, int, int] = (0, 0, 0, 0)  # width, depth, heads, MLP
    modality_embed: bool = False
    num_classes: int = 0         # classifier
    bottlenecks: int = 0
    first: str = ""              # MBT: the modality whose blocks carry no suffix
    notes: list[str] = field(default_factory=list)


def _block_dims(tree: Tree, block: str) -> tuple[int, int, int]:
    q = tree.flat[f"{block}/MultiHeadDotProductAttention_0/query/kernel"]
    return q.shape[0], q.shape[1], tree.flat[f"{block}/MlpBlock_0/Dense_0/kernel"].shape[1]


def infer_architecture(tree: Tree) -> Architecture:
    flat = tree.flat
    if f"{HEAD}/kernel" in flat:
        return _infer_classifier(tree)
    if any(k.startswith(("embedding_rgb/", "embedding_spectrogram/")) for k in flat) and \
            any(k.startswith(("Transformer", "Decoder", "mask_token_")) for k in flat):
        return _infer_pretraining(tree)
    raise ConfigError(f"'{tree.source}' is a Flax checkpoint but not an AV-MAE or MBT model "
                      "(no embedding_rgb / embedding_spectrogram with encoders, and no MBT head)")


def _patch_sizes(tree: Tree, video_embed: str, audio_embed: str) -> tuple[int, int]:
    if f"{video_embed}/kernel" in tree.flat:
        pt, ph, pw = tree.flat[f"{video_embed}/kernel"].shape[:3]
        if ph != pw:
            raise ConfigError(f"'{tree.source}': video patches {ph}x{pw} are not square; avmae's "
                              "tubelets are square")
        return ph, pt
    return tree.flat[f"{audio_embed}/kernel"].shape[0], 2


def _infer_pretraining(tree: Tree) -> Architecture:
    flat = tree.flat
    modalities = [MODALITY[k] for k in ("spectrogram", "rgb") if f"embedding_{k}/kernel" in flat]
    if tree.blocks("Transformer_concat"):
        encoder, streams = "mid", "Transformer_" + ("rgb" if "video" in modalities else "spectrogram")
    elif tree.blocks("Transformer_rgb") or tree.blocks("Transformer_spectrogram"):
        encoder, streams = "separate", "Transformer_" + ("rgb" if "video" in modalities else "spectrogram")
    elif tree.blocks("Transformer"):
        # concat_and_encode and same_encoder write the same names; the official configs use neither.
        encoder, streams = "early", "Transformer"
    else:
        raise ConfigError(f"'{tree.source}' has patch embeddings but no encoder blocks")
    n_sep = len(tree.blocks(streams))
    S = len(tree.blocks("Transformer_concat"))
    D, H, mlp = _block_dims(tree, f"{streams}/encoderblock_0")
    if "Decoder/encoder_norm/scale" in flat:
        decoder, dec = "shared", "Decoder"
    else:
        decoder, dec = "separate", "Decoder_" + ("rgb" if "video" in modalities else "spectrogram")
    if not tree.blocks(dec):
        raise ConfigError(f"'{tree.source}' has no decoder blocks ({dec}/encoderblock_0): the import "
                          "needs the full pretraining model")
    dD, dH, dmlp = _block_dims(tree, f"{dec}/encoderblock_0")
    if any(k.startswith("Decoder_modality_token_") for k in flat):
        raise ConfigError(f"'{tree.source}' uses decoder modality tokens, which avmae does not "
                          "implement (the official configs leave them off)")
    patch, tubelet = _patch_sizes(tree, "embedding_rgb", "embedding_spectrogram")
    return Architecture(PRETRAIN_KIND, modalities, D, n_sep + S, H, mlp, patch, tubelet,
                        encoder=encoder, fusion_layers=S, decoder=decoder,
                        decoder_dims=(dD, len(tree.blocks(dec)), dH, dmlp),
                        modality_embed=any(k.startswith("Encoder_modality_token_") for k in flat))


def _infer_classifier(tree: Tree) -> Architecture:
    flat = tree.flat
    modalities = [m for m, name in (("audio", "embedding_spectrogram"), ("video", "embedding"))
                  if f"{name}/kernel" in flat]
    suffixed = [MBT_SUFFIX[s] for s in MBT_SUFFIX if tree.blocks("Transformer", f"_{s}")]
    first = [m for m in modalities if m not in suffixed]
    if len(first) != 1 or not tree.blocks("Transformer"):
        raise ConfigError(f"'{tree.source}': MBT blocks do not match its embeddings ({modalities})")
    if f"{HEAD.rsplit('/', 1)[0]}/pre_logits/kernel" in flat:
        raise ConfigError(f"'{tree.source}' has a representation layer (pre_logits), which avmae's "
                          "MBT does not implement (the official configs leave it off)")
    D, H, mlp = _block_dims(tree, "Transformer/encoderblock_0")
    patch, tubelet = _patch_sizes(tree, "embedding", "embedding_spectrogram")
    bottleneck = flat.get("bottleneck")
    return Architecture(FINETUNE_KIND, modalities, D, len(tree.blocks("Transformer")), H, mlp,
                        patch, tubelet, num_classes=flat[f"{HEAD}/kernel"].shape[1],
                        bottlenecks=0 if bottleneck is None else bottleneck.shape[1], first=first[0],
                        modality_embed=any(k.startswith("Encoder_modality_token_") for k in flat))


# --- Conversion -----------------------------------------------------------------------------------
def convert_pretraining(tree: Tree, arch: Architecture) -> dict[str, torch.Tensor]:
    out = {}
    for official, m in MODALITY.items():
        if m not in arch.modalities:
            continue
        out.update(convert_patch_embed(tree, f"embedding_{official}", m))
        if arch.modality_embed:
            out[f"modality_embed.{m}"] = vector(tree.take(f"Encoder_modality_token_{official}"))
        if arch.encoder in ("separate", "mid"):
            out.update(convert_transformer(tree, f"Transformer_{official}", f"encoder.streams.{m}"))
        out.update(convert_dense(tree, f"decoder_projection_{official}", f"decoder_embed.{m}"))
        out[f"mask_token.{m}"] = vector(tree.take(f"mask_token_{official}"))
        out.update(convert_dense(tree, f"output_projection_{official}", f"decoder.pred.{m}"))
        if arch.decoder == "separate":
            out.update(convert_transformer(tree, f"Decoder_{official}", f"decoder.streams.{m}"))
    if arch.encoder == "mid":
        out.update(convert_transformer(tree, "Transformer_concat", "encoder.joint"))
    if arch.encoder == "early":
        out.update(convert_transformer(tree, "Transformer", "encoder.transformer"))
    if arch.decoder == "shared":
        out.update(convert_transformer(tree, "Decoder", "decoder.transformer"))
    return out


def convert_classifier(tree: Tree, arch: Architecture, fused: bool) -> dict[str, torch.Tensor]:
    out = {}
    for m in arch.modalities:
        out.update(convert_patch_embed(tree, "embedding" if m == "video" else "embedding_spectrogram", m))
        suffix = "" if m == arch.first else "_" + {v: k for k, v in MBT_SUFFIX.items()}[m]
        for i in tree.blocks("Transformer", suffix):
            out.update(convert_block(tree, f"Transformer/encoderblock_{i}{suffix}", f"streams.{m}.blocks.{i}"))
        if arch.modality_embed:
            official = {v: k for k, v in MODALITY.items()}[m]
            out[f"modality_embed.{m}"] = vector(tree.take(f"Encoder_modality_token_{official}"))
    out.update(convert_norm(tree, "Transformer/encoder_norm", "norm"))
    out.update(convert_dense(tree, HEAD, "head"))
    if tree.has("bottleneck"):
        b = vector(tree.take("bottleneck"))
        if fused:
            out["bottleneck"] = b
        else:
            arch.notes.append("the bottleneck tokens are unused by a unimodal MBT and were left out")
    return out


# --- Config ---------------------------------------------------------------------------------------
def choose_preset(arch: Architecture) -> str:
    """The official setup a tree belongs to, when --preset is not given."""
    if arch.kind == FINETUNE_KIND:
        return "audioset-large" if arch.num_classes == 527 else "vggsound-large"
    if arch.encoder == "mid" or arch.modalities == ["audio"]:
        return "audioset-large"
    return "vggsound-large"


def build_import_config(arch: Architecture, preset: str | None, overrides: list[str] | None) -> tuple[Config, str]:
    chosen = preset or choose_preset(arch)
    if chosen not in PRESETS:
        raise ConfigError(f"unknown preset '{chosen}'; choose one of: {', '.join(PRESETS)}")
    cfg = build_config(chosen)
    preset_encoder = cfg.model.encoder
    if preset is not None and arch.kind == PRETRAIN_KIND and arch.encoder != preset_encoder:
        raise ConfigError(f"--preset {preset} has model.encoder={preset_encoder}, but the checkpoint's "
                          f"tree is a {arch.encoder} encoder: use --preset {choose_preset(arch)} or none")
    official_fusion = cfg.finetune.fusion_layer
    m = cfg.model
    m.modalities = "audio_video" if len(arch.modalities) == 2 else arch.modalities[0]
    m.embed_dim, m.depth, m.num_heads = arch.embed_dim, arch.depth, arch.num_heads
    if int(arch.embed_dim * (arch.mlp_dim / arch.embed_dim)) != arch.mlp_dim:
        raise ConfigError(f"MLP width {arch.mlp_dim} is not a ratio avmae can express of width {arch.embed_dim}")
    m.mlp_ratio = arch.mlp_dim / arch.embed_dim
    m.patch_size, m.tubelet_frames = arch.patch_size, arch.tubelet_frames
    m.modality_embed = arch.modality_embed
    if arch.kind == PRETRAIN_KIND:
        m.encoder, m.decoder = arch.encoder, arch.decoder
        m.fusion_layers = arch.fusion_layers if arch.encoder == "mid" else m.fusion_layers
        (m.decoder_embed_dim, m.decoder_depth, m.decoder_num_heads, m.decoder_mlp_dim) = arch.decoder_dims
    else:
        f = cfg.finetune
        f.modality = "av" if len(arch.modalities) == 2 else arch.modalities[0]
        f.architecture, f.shared_norm = "mbt", True
        f.bottlenecks = arch.bottlenecks or f.bottlenecks
        # The official fusion layer at the same fraction of the depth (identity at ViT-L's 24).
        f.fusion_layer = official_fusion * arch.depth // OFFICIAL_DEPTH
        for k, v in FINETUNE_INPUT.items():
            set_value(cfg, k, v)
    if m.encoder == "mid" and not 1 <= m.fusion_layers < m.depth:
        m.fusion_layers = 1  # unused by a non-mid tree; keep the config valid
    cfg = build_config(None, overrides, base=cfg)
    return cfg, chosen


def read_labels(path: str | None, count: int, column: str = "label") -> list[str]:
    """Class names in head order, from one of:
      - avmae's vocab.json ({"vocab": {column: [names]}}, what `avmae manifest` and a finetune run
        write): the `column` list, or the only one;
      - a CSV with a `display_name` column (AudioSet's class_labels_indices.csv: index,mid,
        display_name), ordered by its `index` column where it has one;
      - a text file, one name per line.
    Without a file: class_000, class_001, ..."""
    if path is None:
        return [f"class_{i:03d}" for i in range(count)]
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"--labels '{path}' not found")
    try:
        text = p.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise ConfigError(f"--labels '{path}' is not UTF-8 text: give vocab.json, "
                          "class_labels_indices.csv or a text file of names") from None
    if text.lstrip().startswith("{"):
        names = _vocab_json_names(path, text, column)
    else:
        rows = list(csv.reader(text.splitlines()))
        header = [c.strip() for c in rows[0]] if rows else []
        if "display_name" in header:
            col = header.index("display_name")
            body = [r for r in rows[1:] if r]
            if "index" in header:
                i = header.index("index")
                try:
                    body.sort(key=lambda r: int(r[i]))
                except (ValueError, IndexError):
                    raise ConfigError(f"--labels '{path}': its index column is not whole numbers") from None
            try:
                names = [r[col].strip() for r in body]
            except IndexError:
                raise ConfigError(f"--labels '{path}': a row has no display_name") from None
        else:
            names = [line.strip() for line in text.splitlines() if line.strip()]
    if len(names) != count:
        raise ConfigError(f"--labels '{path}' names {len(names)} classes but the checkpoint's head has "
                          f"{count}: give one name per class, in the head's order")
    if len(set(names)) != len(names):
        raise ConfigError(f"--labels '{path}' repeats a class name")
    return names


def _vocab_json_names(path, text: str, column: str) -> list[str]:
    try:
        vocab = json.loads(text)["vocab"]
        if not isinstance(vocab, dict) or not all(
                isinstance(v, list) and all(isinstance(n, str) for n in v) for v in vocab.values()):
            raise ValueError
    except (ValueError, KeyError, TypeError):
        raise ConfigError(f"--labels '{path}' is JSON but not avmae's vocab.json "
                          '({"vocab": {"column": ["class", ...]}})') from None
    if column in vocab:
        return list(vocab[column])
    if len(vocab) == 1:
        return list(next(iter(vocab.values())))
    raise ConfigError(f"--labels '{path}' has no '{column}' column (it has: {', '.join(vocab)})")


def import_scenic(checkpoint: str | Path, out: str | Path, *, preset: str | None = None,
                  labels: str | None = None, overrides: list[str] | None = None,
                  overwrite: bool = False, source: str | None = None, log=print) -> Path:
    """Convert CHECKPOINT into the run folder OUT; returns the checkpoint directory written. A run
    already in OUT is refused unless overwrite=True; OUT is locked while it is written. `source`:
    what the user named instead of the file (an official weights name, `avmae weights`), for the
    messages and the run's record."""

    out = Path(out)
    with claim_run_dir(out, resume=False, overwrite=overwrite, resume_flag=False):
        return _import(Path(checkpoint), out, preset, labels, overrides, log, source or str(checkpoint))


def _import(checkpoint: Path, out: Path, preset, labels, overrides, log, source: str) -> Path:
    from avmae.evaluation.evaluate import label_task
    from avmae.models.loading import build_model, fit_weights
    from avmae.interop.flax_checkpoint import read_params

    flat, layout, step = read_params(checkpoint)
    log(f"read {len(flat)} parameter tensors from '{checkpoint}' ({layout} layout, step {step}); "
        "optimizer state skipped")
    tree = Tree(flat, str(checkpoint))
    del flat  # the tree owns the arrays: each is freed once converted (peak ~ parameters + one tensor)
    arch = infer_architecture(tree)
    cfg, chosen = build_import_config(arch, preset, overrides)
    fused = arch.kind == FINETUNE_KIND and len(arch.modalities) == 2 and cfg.finetune.fusion_layer < arch.depth
    if arch.kind == PRETRAIN_KIND:
        state = convert_pretraining(tree, arch)
    else:
        state = convert_classifier(tree, arch, fused)
    if tree.flat:
        raise ConfigError(f"'{checkpoint}' has parameters avmae does not understand: "
                          f"{', '.join(sorted(tree.flat)[:5])}")
    # Build on the meta device: checks every name and shape without a second copy of the weights.
    with torch.device("meta"):
        model = build_model(cfg, arch.kind, arch.num_classes)
    arch_fields = [o.split("=", 1)[0].strip() for o in overrides or []
                   if o.split("=", 1)[0].strip() in ARCHITECTURE_FIELDS]
    fit_weights(model, state, "the checkpoint's weights do not fit the model"
                + (f" after --set {', '.join(arch_fields)} (the architecture is read off the "
                   "checkpoint; drop that --set)" if arch_fields else ""), assign=True)
    what = (f"{arch.encoder} encoder, {arch.decoder} decoder" if arch.kind == PRETRAIN_KIND
            else f"MBT {cfg.finetune.modality}, fusion layer {cfg.finetune.fusion_layer}, "
                 f"{arch.num_classes} classes ({cfg.finetune.label_column})")
    log(f"inferred {arch.kind}: {'+'.join(arch.modalities)}, width {arch.embed_dim}, depth {arch.depth}, "
        f"{arch.num_heads} heads, MLP {arch.mlp_dim}, {what}; input and ratios from preset {chosen}")
    for note in arch.notes:
        log(f"note: {note}")
    record = {"checkpoint": str(checkpoint), "layout": layout, "step": step, "preset": chosen}
    if source != str(checkpoint):
        record["name"] = source
    metadata = {"source": json.dumps(record)}
    if arch.kind == FINETUNE_KIND:
        column = cfg.finetune.label_column
        vocab = {column: read_labels(labels, arch.num_classes, column)}
        if labels is None:
            warn(f"no class names given: the classes are named class_000 ... class_{arch.num_classes - 1:03d}; "
                 f"add the real ones with `avmae import-scenic {source} --labels FILE --out {out} "
                 "--overwrite` (vocab.json, class_labels_indices.csv or one name per line)")
        metadata.update({"label_column": column, "task": label_task(column),
                         "num_classes": json.dumps([arch.num_classes]), "vocab": json.dumps(vocab),
                         "init": f"scenic:{source}"})
    elif labels is not None:
        raise ConfigError("--labels is for a finetuned classifier; this checkpoint is a pretraining model")
    out.mkdir(parents=True, exist_ok=True)
    with writing(out / "config.json", out):
        (out / "config.json").write_text(cfg.to_json() + "\n")
        if arch.kind == FINETUNE_KIND:
            save_vocab(vocab, out / "vocab.json")
    n = sum(t.numel() for t in state.values())
    ckpt = save_checkpoint(out, step, state, cfg, arch.kind, keep=1, extra_metadata=metadata)
    log(f"wrote {ckpt} ({n / 1e6:.1f} M parameters, {arch.kind})")
    return ckpt
