"""`avmae init-from {videomae,mae,audiomae} CHECKPOINT`: public unimodal MAEs into avmae's encoders.

A pretraining run starts from a public PyTorch checkpoint of VideoMAE (video encoder), ImageNet
MAE (both encoders, inflated) or AudioMAE (audio encoder); the rest of the model (the other
encoder, the decoder) is initialised as a pretraining run from scratch initialises it. The run
folder written is an ordinary one: `avmae pretrain --init RUN` continues from it on your data.

Every accepted layout is first read into one plain ViT (timm's names, which are also avmae's
`Transformer` names), then placed into the encoder. The tables below are the whole mapping.

Layouts and their names (N = block index; "<p>" an optional prefix)
  VideoMAE, original repository (MCG-NJU/VideoMAE, `.pth`; pretraining `encoder.` prefix)
    <p>patch_embed.proj                 patch_embed.proj   (Conv3d, tubelets)
    <p>blocks.N.attn.qkv.weight         blocks.N.attn.qkv.weight (fused, no bias)
    <p>blocks.N.attn.q_bias, v_bias     blocks.N.attn.qkv.bias = [q_bias | 0 | v_bias]
    <p>blocks.N.{norm1,attn.proj,norm2,mlp.fc1,mlp.fc2}, <p>norm    the same names
    (no position table stored: the fixed 1-D sin-cos table, sin on even channels)
  VideoMAE, transformers (`VideoMAEModel`, `VideoMAEForPreTraining`: <p> = `videomae.`)
    <p>embeddings.patch_embeddings.projection                     patch_embed.proj
    <p>encoder.layer.N.attention.attention.{query,key,value}.weight   blocks.N.attn.qkv.weight
    <p>encoder.layer.N.attention.attention.{q_bias,v_bias}
        (transformers >= 5 writes them as query.bias, value.bias)    blocks.N.attn.qkv.bias
    <p>encoder.layer.N.<HF_BLOCK names below>, <p>layernorm         as HF_BLOCK, norm
  MAE / AudioMAE, original repositories (facebookresearch/mae, facebookresearch/AudioMAE, `.pth`)
    cls_token, pos_embed (1, 1 + N_tokens, D: row 0 for [CLS]), patch_embed.proj,
    blocks.N.* (timm names, fused qkv with its full bias), norm
  MAE, transformers (`ViTMAEModel`; `ViTMAEForPreTraining`: <p> = `vit.`)
    <p>embeddings.cls_token, <p>embeddings.position_embeddings     cls_token, pos_embed
    <p>embeddings.patch_embeddings.projection                      patch_embed.proj
    <p>encoder.layer.N.attention.attention.{query,key,value}       blocks.N.attn.qkv (weight, bias)
    <p>encoder.layer.N.<HF_BLOCK names>, <p>layernorm              as HF_BLOCK, norm
    transformers >= 5: <p>layers.N.attention.{q,k,v,o}_proj, <p>layers.N.mlp.fc1/fc2,
    <p>layers.N.layernorm_before/after
A finetuned checkpoint's head, fc_norm (the norm after pooling) and every decoder tensor are not
loaded (listed as unused). Without a final `norm` (finetuned with mean pooling) the encoder's final
norm starts fresh (listed).

Into avmae (model.encoder separate: each modality's own stream; shared or early: the one
transformer; mid fusion is refused, its LayerNorm before the joint layers has no counterpart):
  patch_embed.proj -> patch_embed.<m>.proj, blocks / norm -> the stream's blocks / norm,
  cls_token (+ its position row, zero for sin-cos) -> cls_token.<m> (model.cls_token).

Tensor kinds converted exactly (one function each, below):
  q/v-only biases: the key bias is zero. A key bias adds q.b_k to every logit of a query, which the
    softmax cancels, so its gradient is zero too: a full qkv bias with b_k = 0 is the same model.
  image kernel -> spectrogram: the mean over R, G, B (CAV-MAE's inflation; AudioMAE's own image ->
    audio code sums instead, 3x the mean). A spectrogram x then gets the embedding the image model
    gives the grey image with every channel x / 3.
  image kernel -> tubelet: repeated over the tubelet's pt frames and divided by pt (I3D), so a clip
    of repeated frames gets the image's embedding.
  pixel normalisation (video): VideoMAE and MAE were trained on ImageNet-normalised RGB in [0, 1];
    avmae feeds RGB in [-1, 1]. x_src = (x + 1) / 2 - mean) / std is affine per channel, so it is
    folded into the patch kernel and bias (fold_pixel_norm): avmae's input then gives exactly the
    source's embedding of the normalised frames. pixel_norm="none" keeps the kernel as it is.
Position tables: VideoMAE's is avmae's `sincos_1d` with the `interleaved` layout; MAE's stored table
is checked against `sincos_2d` and AudioMAE's against `sincos_2d_audiomae` (models/pos_embed.py), at
the checkpoint's own grid; the importer sets model.pos_embed (and sincos_layout, cls_token,
layer_norm_eps) so that avmae computes the same table at its own input's grid. A stored table that
is not the sin-cos one (learned while finetuning) cannot be carried over: a warning says so.
"""

from __future__ import annotations

import argparse
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from avmae.checkpoint import PRETRAIN_KIND, save_checkpoint, warn, writing
from avmae.config import PRESETS, Config, ConfigError, build_config, parse_overrides
from avmae.run_dir import claim_run_dir
from avmae.models.init_from_pretrained import strip_prefixes

SOURCES = ("videomae", "mae", "audiomae")
INTO = {"videomae": ("video",), "mae": ("audio", "video"), "audiomae": ("audio",)}
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
PIXEL_NORMS = {"imagenet": (IMAGENET_MEAN, IMAGENET_STD), "none": None}
WRAPPERS = ("model", "module", "state_dict", "model_state")  # dict keys a .pth may nest weights in
PREFIX_WRAPPERS = ("module.", "_orig_mod.")                    # DDP, torch.compile
# transformers' per-block names (both generations) -> timm names
HF_BLOCK = {"layernorm_before": "norm1", "layernorm_after": "norm2",
            "attention.output.dense": "attn.proj", "intermediate.dense": "mlp.fc1",
            "output.dense": "mlp.fc2",
            "attention.o_proj": "attn.proj", "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"}
TIMM_BLOCK = ("norm1", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2")
TABLE_TOLERANCE = 1e-4  # a stored sin-cos table vs ours (float32 numpy vs float64 torch: ~1e-7)


# --- One function per tensor kind -----------------------------------------------------------------
def fuse_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Separate query/key/value weights (D, D) or biases (D,) -> the fused qkv (3D, D) / (3D,)."""
    return torch.cat([q, k, v], dim=0)


def qv_bias(q_bias: torch.Tensor, v_bias: torch.Tensor) -> torch.Tensor:
    """VideoMAE's q/v-only biases -> the fused qkv bias [q | 0 | v] (module docstring: why exact)."""
    return torch.cat([q_bias, torch.zeros_like(q_bias), v_bias])


def image_kernel_to_spectrogram(weight: torch.Tensor) -> torch.Tensor:
    """Conv2d (D, 3, p, p) over RGB -> (D, 1, p, p) over a spectrogram: the mean over R, G, B."""
    return weight.mean(dim=1, keepdim=True)


def image_kernel_to_tubelet(weight: torch.Tensor, frames: int) -> torch.Tensor:
    """Conv2d (D, C, p, p) -> Conv3d (D, C, pt, p, p): repeated over pt frames, divided by pt."""
    return weight[:, :, None].repeat(1, 1, frames, 1, 1) / frames


def fold_pixel_norm(weight: torch.Tensor, bias: torch.Tensor, mean, std) -> tuple[torch.Tensor, torch.Tensor]:
    """A patch kernel trained on x_src = ((x + 1) / 2 - mean) / std (per channel, x in [-1, 1]) ->
    the kernel and bias that give the same output on x itself: x_src = a x + b with a = 1 / (2 std),
    b = (0.5 - mean) / std, so W x_src + c = (W a) x + (c + sum W b)."""
    shape = (1, -1) + (1,) * (weight.ndim - 2)
    std_t = torch.tensor(std, dtype=torch.float64)
    a = (1.0 / (2.0 * std_t)).view(shape)
    b = ((0.5 - torch.tensor(mean, dtype=torch.float64)) / std_t).view(shape)
    w = weight.double()
    return (w * a).to(weight.dtype), (bias.double() + (w * b).flatten(1).sum(1)).to(bias.dtype)


# --- Reading a file -------------------------------------------------------------------------------
def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """(state dict, transformers config or {}) of CHECKPOINT: a transformers folder (config.json and
    model.safetensors or pytorch_model.bin), a .safetensors file, or a .pth / .bin / .pt file read
    with torch.load(weights_only=True) (argparse.Namespace allowed: the original repositories store
    their arguments beside the weights). Weights nested under model / module / state_dict are
    unwrapped; module. and _orig_mod. prefixes are stripped. A config.json beside a file is read."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"checkpoint '{path}' not found")
    folder = p if p.is_dir() else p.parent
    if p.is_dir():
        files = [p / n for n in ("model.safetensors", "pytorch_model.bin") if (p / n).is_file()]
        if not files:
            raise ConfigError(f"'{path}' is a folder without model.safetensors or pytorch_model.bin: "
                              "give the checkpoint file")
        p = files[0]
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file
        try:
            state = load_file(str(p))
        except Exception as err:  # safetensors raises its own error types
            raise ConfigError(f"cannot read '{p}' as safetensors: {str(err).splitlines()[0]}") from None
    else:
        try:
            with torch.serialization.safe_globals([argparse.Namespace]):
                state = torch.load(p, map_location="cpu", weights_only=True)
        except Exception as err:
            raise ConfigError(f"cannot read '{p}' with torch.load(weights_only=True): "
                              f"{str(err).splitlines()[0][:200]} (avmae never unpickles code; "
                              "re-save the state dict alone, or as safetensors)") from None
    for key in WRAPPERS:
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"'{p}' holds no state dict of tensors (looked at the top level and under "
                          f"{', '.join(WRAPPERS)})")
    config = {}
    if (folder / "config.json").is_file():
        try:
            config = json.loads((folder / "config.json").read_text())
        except ValueError:
            raise ConfigError(f"'{folder / 'config.json'}' is not JSON") from None
    return {_strip(k): v for k, v in state.items()}, config


def _strip(key: str) -> str:
    return strip_prefixes(key, PREFIX_WRAPPERS)


# --- Any layout -> one plain ViT (timm names) ------------------------------------------------------
@dataclass
class ViT:
    """A plain ViT read from a checkpoint: tensors under timm names, and what the layout says."""

    tensors: dict[str, torch.Tensor]
    layout: str                  # e.g. "VideoMAE (transformers)"
    depth: int
    used: set[str] = field(default_factory=set)  # checkpoint keys converted


class _Keys:
    """The checkpoint's keys; each one read is recorded, so the rest can be listed as unused."""

    def __init__(self, state: dict[str, torch.Tensor], path: str):
        self.state, self.path, self.used = state, path, set()

    def has(self, key: str) -> bool:
        return key in self.state

    def take(self, key: str) -> torch.Tensor:
        if key not in self.state:
            raise ConfigError(f"'{self.path}' has no '{key}': it is not the layout its other keys "
                              "suggest (a truncated or foreign checkpoint?)")
        self.used.add(key)
        return self.state[key].float()

    def blocks(self, pattern: str) -> int:
        found = {int(m.group(1)) for m in map(re.compile(pattern).match, self.state) if m}
        if found != set(range(len(found))):
            raise ConfigError(f"'{self.path}': blocks {sorted(found)} are not numbered 0..N-1")
        return len(found)


def _prefix(state: dict, candidates: tuple[str, ...], probe: str) -> str | None:
    return next((p for p in candidates if f"{p}{probe}" in state), None)


def read_vit(state: dict[str, torch.Tensor], source: str, path: str = "checkpoint") -> ViT:
    """The plain ViT (timm names) in `state`, whichever accepted layout it is (module docstring)."""
    keys = _Keys(state, path)
    hf = _prefix(state, ("videomae.", "vit.", ""), "embeddings.patch_embeddings.projection.weight")
    if hf is not None:
        return _read_hf(keys, hf, path)
    orig = _prefix(state, ("encoder.", ""), "patch_embed.proj.weight")
    if orig is not None:
        return _read_timm(keys, orig, path)
    raise ConfigError(f"'{path}' is not a {source} checkpoint avmae knows: no patch embedding under "
                      "patch_embed.proj (original repositories) or embeddings.patch_embeddings.projection "
                      "(transformers)")


def _read_timm(keys: _Keys, p: str, path: str) -> ViT:
    """Original repositories: timm names under prefix p (VideoMAE's pretraining model: `encoder.`)."""
    depth = keys.blocks(rf"^{re.escape(p)}blocks\.(\d+)\.")
    out = {"patch_embed.proj.weight": keys.take(f"{p}patch_embed.proj.weight"),
           "patch_embed.proj.bias": keys.take(f"{p}patch_embed.proj.bias")}
    for name in ("cls_token", "pos_embed"):
        if keys.has(f"{p}{name}"):
            out[name] = keys.take(f"{p}{name}")
    for i in range(depth):
        src, dst = f"{p}blocks.{i}", f"blocks.{i}"
        if keys.has(f"{src}.gamma_1"):
            raise ConfigError(f"'{path}' uses layer scale ({src}.gamma_1), which avmae's blocks do not "
                              "have")
        out[f"{dst}.attn.qkv.weight"] = keys.take(f"{src}.attn.qkv.weight")
        if keys.has(f"{src}.attn.q_bias"):                     # VideoMAE
            out[f"{dst}.attn.qkv.bias"] = qv_bias(keys.take(f"{src}.attn.q_bias"), keys.take(f"{src}.attn.v_bias"))
        elif keys.has(f"{src}.attn.qkv.bias"):                 # MAE, AudioMAE (timm)
            out[f"{dst}.attn.qkv.bias"] = keys.take(f"{src}.attn.qkv.bias")
        else:                                                  # qkv_bias=False
            out[f"{dst}.attn.qkv.bias"] = torch.zeros(out[f"{dst}.attn.qkv.weight"].shape[0])
        for name in TIMM_BLOCK:
            for t in ("weight", "bias"):
                out[f"{dst}.{name}.{t}"] = keys.take(f"{src}.{name}.{t}")
    if keys.has(f"{p}norm.weight"):
        out["norm.weight"], out["norm.bias"] = keys.take(f"{p}norm.weight"), keys.take(f"{p}norm.bias")
    layout = "VideoMAE pretraining (original)" if p == "encoder." else "timm / original repository"
    return ViT(out, layout, depth, keys.used)


def _read_hf(keys: _Keys, p: str, path: str) -> ViT:
    """transformers' VideoMAE / ViTMAE (both key generations) under prefix p."""
    emb = f"{p}embeddings."
    out = {"patch_embed.proj.weight": keys.take(f"{emb}patch_embeddings.projection.weight"),
           "patch_embed.proj.bias": keys.take(f"{emb}patch_embeddings.projection.bias")}
    if keys.has(f"{emb}cls_token"):
        out["cls_token"] = keys.take(f"{emb}cls_token")
    if keys.has(f"{emb}position_embeddings"):
        out["pos_embed"] = keys.take(f"{emb}position_embeddings")
    new = keys.blocks(rf"^{re.escape(p)}layers\.(\d+)\.")           # transformers >= 5 ViTMAE
    depth = new or keys.blocks(rf"^{re.escape(p)}encoder\.layer\.(\d+)\.")
    for i in range(depth):
        src, dst = (f"{p}layers.{i}", f"blocks.{i}") if new else (f"{p}encoder.layer.{i}", f"blocks.{i}")
        att = f"{src}.attention" if new else f"{src}.attention.attention"
        names = ("q_proj", "k_proj", "v_proj") if new else ("query", "key", "value")
        q, k, v = (f"{att}.{n}" for n in names)
        out[f"{dst}.attn.qkv.weight"] = fuse_qkv(*(keys.take(f"{n}.weight") for n in (q, k, v)))
        if keys.has(f"{att}.q_bias"):                               # VideoMAE, hub layout
            bias = qv_bias(keys.take(f"{att}.q_bias"), keys.take(f"{att}.v_bias"))
        elif keys.has(f"{q}.bias") and not keys.has(f"{k}.bias"):   # VideoMAE, transformers >= 5
            bias = qv_bias(keys.take(f"{q}.bias"), keys.take(f"{v}.bias"))
        elif keys.has(f"{q}.bias"):                                 # ViTMAE
            bias = fuse_qkv(*(keys.take(f"{n}.bias") for n in (q, k, v)))
        else:
            bias = torch.zeros(out[f"{dst}.attn.qkv.weight"].shape[0])
        out[f"{dst}.attn.qkv.bias"] = bias
        for theirs, ours in HF_BLOCK.items():
            if keys.has(f"{src}.{theirs}.weight"):
                for t in ("weight", "bias"):
                    out[f"{dst}.{ours}.{t}"] = keys.take(f"{src}.{theirs}.{t}")
        missing = [n for n in TIMM_BLOCK if f"{dst}.{n}.weight" not in out]
        if missing:
            raise ConfigError(f"'{path}': block {i} has no {', '.join(missing)} under transformers' names")
    if keys.has(f"{p}layernorm.weight"):
        out["norm.weight"], out["norm.bias"] = keys.take(f"{p}layernorm.weight"), keys.take(f"{p}layernorm.bias")
    return ViT(out, "transformers", depth, keys.used)


# --- Position tables ------------------------------------------------------------------------------
def match_stored_table(table: torch.Tensor) -> tuple[str | None, tuple[int, int]]:
    """Which avmae table a stored MAE / AudioMAE table (1, 1 + N, D) is, at the checkpoint's grid:
    ("sincos_2d" | "sincos_2d_audiomae" | None, grid). Every (rows, cols) grid of N tokens is tried,
    the square one first (ImageNet MAE), then the spectrogram shapes (time first)."""
    from avmae.models.pos_embed import sincos_pos_embed
    rows = table[0, 1:]
    n, dim = rows.shape
    grids = sorted(((n // f, f) for f in range(1, n + 1) if n % f == 0),
                   key=lambda g: (g[0] != g[1], -g[0]))
    for grid in grids:
        for kind in ("sincos_2d", "sincos_2d_audiomae"):
            ours = sincos_pos_embed(grid, dim, kind)[0]
            if torch.allclose(rows, ours, atol=TABLE_TOLERANCE, rtol=0):
                return kind, grid
    return None, grids[0]


# --- Into avmae -----------------------------------------------------------------------------------
def stream_prefix(cfg_encoder: str, modality: str) -> str:
    """Where a plain ViT's blocks and norm go in avmae's encoder for `modality`."""
    if cfg_encoder == "separate":
        return f"encoder.streams.{modality}"
    if cfg_encoder in ("shared", "early"):
        return "encoder.transformer"
    raise ConfigError(f"model.encoder={cfg_encoder}: a plain ViT has no LayerNorm before mid fusion's "
                      "joint layers; init-from loads into model.encoder=separate (the default here), "
                      "shared or early")


def place(vit: ViT, modality: str, encoder: str, tubelet_frames: int, pixel_norm) -> dict[str, torch.Tensor]:
    """The plain ViT's tensors under avmae's names for one modality (the module docstring's table)."""
    w, b = vit.tensors["patch_embed.proj.weight"], vit.tensors["patch_embed.proj.bias"]
    if modality == "audio" and w.ndim == 4 and w.shape[1] == 3:
        w = image_kernel_to_spectrogram(w)
    elif modality == "video" and w.ndim == 4:
        w = image_kernel_to_tubelet(w, tubelet_frames)
    if modality == "video" and pixel_norm is not None:
        w, b = fold_pixel_norm(w, b, *pixel_norm)
    out = {f"patch_embed.{modality}.proj.weight": w, f"patch_embed.{modality}.proj.bias": b}
    if "cls_token" in vit.tensors:
        cls = vit.tensors["cls_token"]
        if "pos_embed" in vit.tensors:  # [CLS]'s own position row (zero in a sin-cos table) folded in
            cls = cls + vit.tensors["pos_embed"][:, :1]
        out[f"cls_token.{modality}"] = cls
    prefix = stream_prefix(encoder, modality)
    for k, t in vit.tensors.items():
        if k.startswith(("blocks.", "norm.")):
            out[f"{prefix}.{k}"] = t
    return out


@dataclass
class InitFromReport:
    source: str
    checkpoint: str
    layout: str
    loaded: list[str]        # avmae keys taken from the checkpoint
    fresh: list[str]         # avmae keys initialised as from scratch
    unused: list[str]        # checkpoint keys not loaded
    notes: list[str] = field(default_factory=list)

    def record(self) -> dict:
        return {"event": "init_from", "source": self.source, "checkpoint": self.checkpoint,
                "layout": self.layout, "loaded": self.loaded, "not_loaded": self.fresh,
                "unused_checkpoint_keys": self.unused, "notes": self.notes}

    def lines(self) -> list[str]:
        return [f"loaded {len(self.loaded)} tensors from {self.source} ({self.layout})",
                f"not loaded (initialised as from scratch): {', '.join(_compact(self.fresh)) or 'none'}",
                f"unused checkpoint tensors: {', '.join(_compact(self.unused)) or 'none'}"]


def _compact(keys: list[str]) -> list[str]:
    """Names shortened: weight/bias folded, block indices collapsed (blocks.*)."""
    out: list[str] = []
    for k in keys:
        short = re.sub(r"\.\d+\.", ".*.", re.sub(r"\.(weight|bias)$", "", k))
        if short not in out:
            out.append(short)
    return out


def init_from_config(source: str, vit: ViT, hf_config: dict, preset: str,
                     overrides: list[str] | None) -> tuple[Config, list[str]]:
    """The run's config: the preset, with what the checkpoint fixes (width, depth, MLP, patch and
    tubelet sizes, heads, LayerNorm epsilon, position table, [CLS]) set, then --set. Returns notes."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset '{preset}'; choose one of: {', '.join(PRESETS)}")
    cfg = build_config(preset)
    notes = []
    t = vit.tensors
    w = t["patch_embed.proj.weight"]
    dim, mlp = w.shape[0], t["blocks.0.mlp.fc1.weight"].shape[0]
    m = cfg.model
    if m.encoder == "mid":
        m.encoder = "separate"
        notes.append("model.encoder=separate (the preset's mid fusion has a LayerNorm before its joint "
                     "layers that a plain ViT does not have)")
    heads = hf_config.get("num_attention_heads")
    if heads is None:
        heads = m.num_heads if m.embed_dim == dim else {384: 6, 768: 12, 1024: 16, 1280: 16}.get(dim)
    given = [v for k, v in parse_overrides(overrides) if k == "model.num_heads"]
    if given:
        heads = given[-1]
    if heads is None:
        raise ConfigError(f"the checkpoint is {dim} wide and its file does not say how many attention "
                          "heads it has: add --set model.num_heads=H")
    m.embed_dim, m.depth, m.num_heads, m.mlp_ratio = dim, vit.depth, int(heads), mlp / dim
    m.patch_size = w.shape[-1]
    if w.ndim == 5:
        m.tubelet_frames = w.shape[2]
    m.gelu = "exact"
    hf_eps = hf_config.get("layer_norm_eps")
    m.layer_norm_eps = float(hf_eps) if hf_eps is not None else 1e-6  # the original repositories: 1e-6
    act = hf_config.get("hidden_act", "gelu")
    if act != "gelu":
        raise ConfigError(f"the checkpoint's activation is {act}; avmae's blocks use exact GELU")
    if source == "videomae":
        m.pos_embed, m.sincos_layout, m.cls_token = "sincos_1d", "interleaved", False
    else:
        m.cls_token = "cls_token" in t
        kind = None
        if "pos_embed" in t:
            kind, grid = match_stored_table(t["pos_embed"])
            if kind is None:
                notes.append(f"the stored position table ({tuple(t['pos_embed'].shape)}) is not a sin-cos "
                             "table (learned while finetuning?): avmae's fixed sincos_2d table is used "
                             "instead, so the outputs differ from the source's")
        m.pos_embed = kind or ("sincos_2d_audiomae" if source == "audiomae" else "sincos_2d")
    cfg = build_config(None, overrides, base=cfg)
    stream_prefix(cfg.model.encoder, INTO[source][0])  # refuses mid fusion set by --set
    wanted = [x for x in INTO[source] if getattr(cfg.model, f"has_{x}")]
    if not wanted:
        raise ConfigError(f"model.modalities={cfg.model.modalities} has no "
                          f"{' or '.join(INTO[source])} encoder to initialise from {source}")
    return cfg, notes


def init_from(source: str, checkpoint: str | Path, out: str | Path, *, preset: str = "base",
              overrides: list[str] | None = None, pixel_norm: str = "imagenet", overwrite: bool = False,
              log=print) -> Path:
    """Write the pretraining run OUT whose encoder(s) come from CHECKPOINT; returns the checkpoint
    folder written. Raises ConfigError (one line) for anything it cannot convert exactly."""
    if source not in SOURCES:
        raise ConfigError(f"unknown source '{source}': one of {', '.join(SOURCES)}")
    if pixel_norm not in PIXEL_NORMS:
        raise ConfigError(f"--pixel-norm {pixel_norm}: one of {', '.join(PIXEL_NORMS)}")
    out = Path(out)
    with claim_run_dir(out, resume=False, overwrite=overwrite, resume_flag=False):
        state, hf_config = read_checkpoint(checkpoint)
        vit = read_vit(state, source, str(checkpoint))
        w = vit.tensors["patch_embed.proj.weight"]
        expected = {"videomae": (5, 3), "mae": (4, 3), "audiomae": (4, 1)}[source]
        if (w.ndim, w.shape[1]) != expected:
            raise ConfigError(f"'{checkpoint}' has a {w.ndim - 2}-D patch embedding over {w.shape[1]} "
                              f"channel(s), not a {source} checkpoint: pick the source that matches")
        cfg, notes = init_from_config(source, vit, hf_config, preset, overrides)
        modalities = [x for x in INTO[source] if getattr(cfg.model, f"has_{x}")]
        converted: dict[str, torch.Tensor] = {}
        for x in modalities:
            converted.update(place(vit, x, cfg.model.encoder, cfg.model.tubelet_frames,
                                   PIXEL_NORMS[pixel_norm] if x == "video" else None))
        from avmae.models.loading import build_model
        torch.manual_seed(cfg.train.seed)  # the rest as a pretraining run from scratch starts
        model = build_model(cfg, PRETRAIN_KIND)
        own = model.state_dict()
        wrong = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in converted.items()
                 if k in own and own[k].shape != v.shape]
        if wrong or any(k not in own for k in converted):
            raise ConfigError("the converted weights do not fit the model (--set of an architecture "
                              f"field?): {(wrong or [k for k in converted if k not in own])[0]}")
        own.update(converted)
        model.load_state_dict(own)
        report = InitFromReport(source, str(checkpoint), vit.layout, sorted(converted),
                                [k for k in own if k not in converted],
                                sorted(k for k in state if k not in vit.used), notes)
        if "norm.weight" not in vit.tensors:
            report.notes.append("the checkpoint has no final norm (finetuned with mean pooling?): the "
                                "encoder's final LayerNorm starts fresh")
        if "video" in modalities and pixel_norm != "none":
            report.notes.append(f"the video patch kernel takes avmae's RGB in [-1, 1]: the source's "
                                f"{pixel_norm} pixel normalisation is folded into it")
        for line in report.lines():
            log(line)
        for note in report.notes:
            warn(note) if "differ" in note else log(f"note: {note}")
        out.mkdir(parents=True, exist_ok=True)
        with writing(out / "config.json", out):
            (out / "config.json").write_text(cfg.to_json() + "\n")
        with writing(out / "metrics.jsonl", out):
            with open(out / "metrics.jsonl", "a") as f:
                f.write(json.dumps(report.record()) + "\n")
        metadata = {"init": json.dumps({"source": source, "checkpoint": str(checkpoint),
                                        "layout": vit.layout, "pixel_norm": pixel_norm})}
        ckpt = save_checkpoint(out, 0, model.state_dict(), cfg, PRETRAIN_KIND, keep=1,
                               extra_metadata=metadata)
        log(f"wrote {ckpt}")
        return ckpt
