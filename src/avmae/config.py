"""Typed configuration: one dataclass per section, presets, and `--set key=value` overrides.

A run is described by `Config` (sections `model`, `data`, `train`, `finetune`). Presets are plain
dicts of dotted overrides (see `PRESETS`); `--set` applies more overrides on top, type-checked.
Every problem a user can cause raises `ConfigError` with one line that says how to fix it; the
command line turns it into exit status 2.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any



def plural(n: int, word: str, many: str | None = None) -> str:
    """'1 step', '2 steps' (the messages count things)."""
    return f"{n} {word if n == 1 else (many or word + 's')}"


def a_or_an(word: str) -> str:
    """'a pretraining', 'an avmae_finetune' (the article for a word spelt out in a message)."""
    return ("an " if str(word)[:1].lower() in "aeiou" else "a ") + str(word)


class ConfigError(ValueError):
    """A user-facing configuration problem (bad key, bad value, impossible combination)."""


class RunError(RuntimeError):
    """A run that had to stop (a non-finite loss); the message names the step and what is kept."""


class Interrupted(RunError):
    """A run stopped by SIGINT / SIGTERM after saving its checkpoint: the command exits with
    128 + the signal's number (130, 143), as a process ended by that signal does, so that
    `avmae pretrain ... && avmae finetune ...` does not go on with an unfinished run."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.status = 128 + signum


ENCODERS = ("early", "separate", "mid", "shared")
DECODERS = ("shared", "separate", "joint")
OBJECTIVES = ("joint", "inpaint_video_from_audio", "inpaint_audio_from_video", "inpaint_both",
              "joint_and_inpaint")
MODALITIES = ("audio_video", "audio", "video")
POS_EMBEDS = ("sincos_1d", "sincos_factorised", "sincos_2d", "sincos_2d_audiomae")  # models/pos_embed.py


@dataclass
class ModelConfig:
    """The AV-MAE pretraining model (paper Sec. 3). Input sizes live in `DataConfig`."""

    modalities: str = "audio_video"      # audio_video | audio (AudioMAE) | video (VideoMAE), Table 3
    encoder: str = "mid"                 # early | separate | mid | shared (Sec. 3.2, Table 1)
    decoder: str = "shared"              # shared | separate | joint (Sec. 3.3, Table 1)
    objective: str = "joint"             # Sec. 3.4, Table 2; joint_and_inpaint is the paper's future work
    fusion_layers: int = 2               # S joint layers of mid-fusion (Table 13: S=2 best)
    # Encoder (ViT sizes, DESIGN)
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    drop_path: float = 0.0               # stochastic depth; pretraining uses none (Table 14)
    # Decoder (Table 15)
    decoder_embed_dim: int = 384
    decoder_depth: int = 4
    decoder_num_heads: int = 6
    decoder_mlp_dim: int = 1536
    # Tokenisers (Sec. 4.1): video tubelets 2x16x16, spectrogram patches 16x16
    tubelet_frames: int = 2
    patch_size: int = 16
    # Masking (Sec. 4.1): 0.9 of video and 0.5 of audio tokens are removed
    mask_ratio_video: float = 0.9
    mask_ratio_audio: float = 0.5
    # Position and modality embeddings (official release: fixed 1-D sin-cos, no modality embedding)
    pos_embed: str = "sincos_1d"
    sincos_layout: str = "halves"        # halves [sin | cos] (MAE) | interleaved (official release)
    modality_embed: bool = False
    cls_token: bool = False              # a learned [CLS] token per modality put before the visible
                                         # tokens in the encoder and taken off after it (MAE,
                                         # AudioMAE; set by `avmae init-from mae|audiomae`)
    # Transformer details where the official release differs from PyTorch's defaults
    gelu: str = "exact"                  # exact (torch, timm) | tanh (flax nn.gelu, official release)
    layer_norm_eps: float = 1e-6         # timm's ViT and flax's LayerNorm both use 1e-6
    # Objective details
    norm_targets: bool = False           # per-patch normalised targets (MAE); raw is the paper's default
    loss_weight_audio: float = 0.5       # equal modality weights (Sec. 3.4; official 0.5 / 0.5)
    loss_weight_video: float = 0.5
    joint_weight: float = 1.0            # joint_and_inpaint: weight of the joint reconstruction loss
    inpaint_weight: float = 1.0          # joint_and_inpaint: weight of the inpainting loss

    @property
    def has_audio(self) -> bool:
        return self.modalities in ("audio_video", "audio")

    @property
    def has_video(self) -> bool:
        return self.modalities in ("audio_video", "video")


@dataclass
class DataConfig:
    """Decoding, log-mel front end and input sizes (Sec. 4.1)."""

    num_frames: int = 16                 # video frames per clip (16 pretraining, 32 finetuning)
    frame_stride: int = 4                # in frames of the source's own rate
    short_side: int = 256                # resize the short side, then crop
    crop_size: int = 224
    scale_jitter: bool = False           # training crops from a randomly rescaled frame: finetuning
                                         # only (official configs); pretraining has no augmentation
                                         # (Table 14) but a random crop_size crop and the flip
    scale_jitter_min: float = 0.9        # the rescaling range with scale_jitter (official finetuning
    scale_jitter_max: float = 1.33       # configs: 0.9-1.33)
    flip: bool = True                    # horizontal flips in training (official pretraining and
                                         # finetuning configs)
    color_augment: float = 0.0           # probability of colour jitter per training clip (official
    color_drop: float = 0.0              # finetuning configs: 0.8) and of greyscale (0.1)
    sample_rate: int = 16000             # mono 16 kHz (Sec. 4.1)
    audio_seconds: float = 8.0           # 8 s -> 800 frames -> 400 patches (Sec. 4.1)
    mel_bins: int = 128
    window: str = "hamming"              # Sec. 4.1; "hanning" matches AST / AudioMAE / CAV-MAE
    audio_mean: float = -4.2677          # dataset log-mel statistics (AST's AudioSet values by default;
    audio_std: float = 4.5690            # `avmae stats DATA` computes your own)
    normalize_audio: bool = True         # (x - mean) / (2 * std), as AST / AudioMAE
    missing_modality: str = "fill"       # fill (zeros, flagged) | skip
    num_workers: int = 2
    prefetch_factor: int = 4             # batches each worker loads ahead (with num_workers > 0)
    shuffle: bool = True
    jpeg_decode: str = "cpu"             # cpu | cuda: where shards format 2's JPEG frames are decoded;
                                         # cuda = nvJPEG after the batch (avmae.data.gpu_jpeg), the
                                         # cpu path where CUDA or torchvision is missing

    @property
    def audio_frames(self) -> int:
        return int(round(self.audio_seconds * 100))  # 10 ms hop

    @property
    def audio_fill(self) -> float:
        """The value of a missing soundtrack, of SpecAugment's masks and of padding: the dataset's
        mean log-mel, i.e. 0 after normalisation and data.audio_mean (`avmae stats`, or the
        preset's) where normalisation is off (the official presets: raw log-mels)."""
        return 0.0 if self.normalize_audio else float(self.audio_mean)


@dataclass
class TrainConfig:
    """Optimisation (pretraining Table 14; finetuning Tables 16-18 via `finetune` defaults)."""

    batch_size: int = 8                  # per step and per process, before accumulation
    accum_steps: int = 1                 # gradient accumulation (global batch = batch x accum x world)
    global_batch: int = 0                # > 0: the global batch to reach (finetuning: the paper's 64 /
                                         # 128); batch_size is then the most clips per process per
                                         # micro-batch and accum_steps fills the rest (run time,
                                         # training.loop.fit_global_batch)
    epochs: int = 400
    steps: int = 0                       # > 0: a step budget that overrides epochs
    optimizer: str = "adamw"             # adamw (pretraining) | sgd (finetuning)
    base_lr: float = 3e-4                # the lr at a global batch of lr_batch (Table 14: 3e-4 at 512)
    lr_batch: int = 512                  # lr = base_lr x global_batch / lr_batch (linear scaling, B.1)
    min_lr: float = 0.0
    warmup_epochs: float = 40.0          # Table 14
    warmup_steps: int = -1               # >= 0 overrides warmup_epochs
    weight_decay: float = 0.0            # 0 in the paper, 0.05 in the official release
    beta1: float = 0.9
    beta2: float = 0.95
    momentum: float = 0.9                # SGD
    clip_grad: float = 0.0               # 0 = off; finetuning uses 1.0
    amp: str = "auto"                    # auto (bf16 where supported) | bf16 | off
    compile: bool = False                # torch.compile the model (BENCHMARKS.md: why off by default)
    grad_checkpointing: bool = False     # recompute each block in the backward: ViT-L MBT at the
                                         # finetuning input fits a larger batch per GPU
    seed: int = 0
    checkpoint_every: int = 500          # steps
    keep_checkpoints: int = 2
    log_every: int = 10
    figure_clips: int = 2                # clips in the reconstruction figure at each checkpoint


@dataclass
class FinetuneConfig:
    """Finetuning with AST / ViViT / MBT (Sec. 4.1, Tables 12, 16-18)."""

    modality: str = "av"                 # audio | video | av
    architecture: str = "mbt"            # mbt | pretraining_encoder (Table 12)
    fusion_layer: int = 8                # MBT: first layer with bottleneck fusion (8 of 12 in ViT-B MBT)
    bottlenecks: int = 4
    shared_norm: bool = False            # MBT: one final LayerNorm for both streams (official MBT)
    label_column: str = "label"          # label | labels | verb,noun
    layer_decay: float = 0.75
    drop_path: float = 0.3
    label_smoothing: float = 0.3
    mixup_alpha: float = 0.5             # Tables 16-18 (per modality, official `mixmod`)
    mixup_alpha_audio: float = 1.25      # replaces mixup_alpha for audio-only finetuning (Tables 17,
                                         # 18: 1.25; Table 16, VGGSound: 0.5) unless --set gives one
    specaugment: bool = True
    freq_masks: int = 2
    freq_mask_width: int = 36
    time_masks: int = 4
    time_mask_width: int = 48
    time_shift: bool = True              # random circular time shift of the spectrogram
    views: int = 4                       # temporal views at evaluation


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> "Config":
        cfg = cls()
        for section, values in d.items():
            if not hasattr(cfg, section):
                raise ConfigError(f"unknown config section '{section}'")
            sub = getattr(cfg, section)
            names = {f.name for f in dataclasses.fields(sub)}
            for k, v in values.items():
                if k not in names:
                    raise ConfigError(f"unknown config key '{section}.{k}'")
                setattr(sub, k, v)
        return cfg


# Presets: dotted overrides on top of the defaults above. The encoder sizes are ViT's; the
# decoders follow Table 15 (base, large) and MAE/VideoMAE practice for the smaller ones.
_VIT = {
    "tiny": dict(embed_dim=192, depth=12, num_heads=3, decoder_embed_dim=128, decoder_depth=4,
                 decoder_num_heads=4, decoder_mlp_dim=512),
    "small": dict(embed_dim=384, depth=12, num_heads=6, decoder_embed_dim=256, decoder_depth=4,
                  decoder_num_heads=8, decoder_mlp_dim=1024),
    "base": dict(embed_dim=768, depth=12, num_heads=12, decoder_embed_dim=384, decoder_depth=4,
                 decoder_num_heads=6, decoder_mlp_dim=1536),                    # Table 15
    "large": dict(embed_dim=1024, depth=24, num_heads=16, decoder_embed_dim=512, decoder_depth=4,
                  decoder_num_heads=8, decoder_mlp_dim=2048),                   # Table 15
}

PRESETS: dict[str, dict[str, Any]] = {
    name: {f"model.{k}": v for k, v in sizes.items()} for name, sizes in _VIT.items()
}
# ViT-L mid-fusion fuses later in absolute terms but keeps S=2 joint layers (official AudioSet config).
PRESETS["large"]["finetune.fusion_layer"] = 16           # 16 of 24 (official VGGSound MBT)
# The official release's setups (google-research/scenic, av_mae/configs/{audioset,vggsound}/
# {pretrain,finetune}.py), for the released ViT-L checkpoints: `avmae import-scenic` picks the one
# that fits a checkpoint's parameter tree. Besides the sizes, they switch on what the official code
# computes differently (tanh GELU, interleaved sin-cos, one MBT norm for both streams). The data
# fields give the pretraining input; a finetuned classifier is imported with 32 frames at stride 2
# (`FINETUNE_INPUT`). No spectrogram normalisation: the official pretraining feeds raw log-mels.
_OFFICIAL = {
    **{f"model.{k}": v for k, v in _VIT["large"].items()},
    "model.gelu": "tanh", "model.sincos_layout": "interleaved", "model.layer_norm_eps": 1e-6,
    "model.decoder": "shared", "model.mask_ratio_video": 0.9,
    "data.num_frames": 16, "data.frame_stride": 4, "data.short_side": 256, "data.crop_size": 224,
    "data.normalize_audio": False,
    "finetune.shared_norm": True, "finetune.bottlenecks": 4,
}
PRESETS["audioset-large"] = {
    **_OFFICIAL,
    "model.encoder": "mid", "model.fusion_layers": 2,    # separate_encoders_and_concat, S = 2
    "model.mask_ratio_audio": 0.7,
    "data.audio_seconds": 10.0,                          # 1000 frames -> 62 x 8 = 496 patches
    "finetune.fusion_layer": 18,                         # of 24
    "finetune.label_column": "labels",                   # multi-label, mAP
}
PRESETS["vggsound-large"] = {
    **_OFFICIAL,
    "model.encoder": "separate",                         # separate_encoders
    "model.mask_ratio_audio": 0.5,
    "data.audio_seconds": 8.0,                           # 800 frames -> 50 x 8 = 400 patches
    "finetune.fusion_layer": 16,                         # of 24
    "finetune.label_column": "label",                    # single-label, top-1
}
FINETUNE_INPUT = {"data.num_frames": 32, "data.frame_stride": 2}  # Table 16, official finetune configs

# CPU presets: fewer layers (in the name) and a small input, for laptops and the quickstart.
PRESETS["tiny-4l-cpu"] = {
    **{f"model.{k}": v for k, v in _VIT["tiny"].items()},
    "model.depth": 4, "model.decoder_depth": 2, "model.fusion_layers": 1,
    "finetune.fusion_layer": 2,
    "data.num_frames": 8, "data.frame_stride": 2, "data.short_side": 72, "data.crop_size": 64,
    "data.audio_seconds": 2.56, "data.scale_jitter_min": 1.0, "data.scale_jitter_max": 1.15,
    "train.batch_size": 16, "train.base_lr": 5e-3, "train.lr_batch": 256, "train.warmup_epochs": 1.0,
    "train.checkpoint_every": 100,
}

PRESET_DOCS = {
    "tiny": "ViT-Ti encoder (192 wide, 12 layers), paper input (16x224x224 video, 8 s audio)",
    "small": "ViT-S encoder (384 wide, 12 layers), paper input",
    "base": "ViT-B encoder (768 wide, 12 layers), Table 15 base decoder, paper input",
    "large": "ViT-L encoder (1024 wide, 24 layers), Table 15 large decoder, paper input",
    "audioset-large": "official AudioSet AV-MAE: ViT-L, mid fusion (S=2), audio mask 0.7, 10 s audio, "
                      "MBT fusion layer 18, multi-label (the released checkpoints)",
    "vggsound-large": "official VGGSound AV-MAE: ViT-L, separate encoders, audio mask 0.5, 8 s audio, "
                      "MBT fusion layer 16, single-label (the released checkpoints)",
    "tiny-4l-cpu": "ViT-Ti width, 4 encoder / 2 decoder layers, 8x64x64 video and 2.56 s audio: "
                   "CPU smoke runs and the quickstart",
}


def _coerce(key: str, raw: Any, current: Any) -> Any:
    """Parse `raw` (a string from the command line, or a value from a preset) to `current`'s type."""
    typ = type(current)
    if not isinstance(raw, str):
        if typ is float and isinstance(raw, int) and not isinstance(raw, bool):
            return float(raw)
        if isinstance(raw, typ):
            return raw
        raise ConfigError(f"{key} expects {typ.__name__}, got {raw!r}")
    try:
        if typ is bool:
            low = raw.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if typ is int:
            return int(raw)
        if typ is float:
            return float(raw)
        return raw
    except ValueError:
        raise ConfigError(f"{key} expects {typ.__name__}, got '{raw}'") from None


def set_value(cfg: Config, key: str, raw: Any) -> None:
    """Set one dotted key ('model.encoder') on `cfg`, type-checked."""
    parts = key.split(".")
    if len(parts) != 2 or not hasattr(cfg, parts[0]) or parts[0].startswith("_"):
        sections = ", ".join(f.name for f in dataclasses.fields(cfg))
        raise ConfigError(f"unknown config key '{key}': keys look like section.name with section "
                          f"one of {sections}")
    sub = getattr(cfg, parts[0])
    names = [f.name for f in dataclasses.fields(sub)]
    if parts[1] not in names:
        raise ConfigError(f"unknown config key '{key}'; {parts[0]} keys: {', '.join(names)}")
    setattr(sub, parts[1], _coerce(key, raw, getattr(sub, parts[1])))


def parse_overrides(items: list[str] | None) -> list[tuple[str, str]]:
    out = []
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got '{item}'")
        k, v = item.split("=", 1)
        out.append((k.strip(), v.strip()))
    return out


def build_config(preset: str | None = None, overrides: list[str] | None = None,
                 base: Config | None = None, recipe: dict[str, Any] | None = None) -> Config:
    """Defaults <- preset <- recipe (dotted overrides, see recipes.py) <- `--set`, validated."""
    cfg = base if base is not None else Config()
    if preset is not None:
        if preset not in PRESETS:
            raise ConfigError(f"unknown preset '{preset}'; choose one of: {', '.join(PRESETS)}")
        for k, v in PRESETS[preset].items():
            set_value(cfg, k, v)
    for k, v in (recipe or {}).items():
        set_value(cfg, k, v)
    for k, v in parse_overrides(overrides):
        set_value(cfg, k, v)
    validate(cfg)
    return cfg


def _choice(key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{key}='{value}' is not one of: {', '.join(choices)}")


def validate(cfg: Config) -> None:
    """Refuse impossible combinations with one line that says why."""
    m, d = cfg.model, cfg.data
    _choice("model.encoder", m.encoder, ENCODERS)
    _choice("model.decoder", m.decoder, DECODERS)
    _choice("model.objective", m.objective, OBJECTIVES)
    _choice("model.modalities", m.modalities, MODALITIES)
    _choice("model.pos_embed", m.pos_embed, POS_EMBEDS)
    _choice("model.sincos_layout", m.sincos_layout, ("halves", "interleaved"))
    _choice("model.gelu", m.gelu, ("exact", "tanh"))
    _choice("data.window", d.window, ("hamming", "hanning", "povey", "rectangular"))
    _choice("data.missing_modality", d.missing_modality, ("fill", "skip"))
    _choice("data.jpeg_decode", d.jpeg_decode, ("cpu", "cuda"))
    _choice("train.optimizer", cfg.train.optimizer, ("adamw", "sgd"))
    _choice("train.amp", cfg.train.amp, ("auto", "bf16", "off"))
    _choice("finetune.modality", cfg.finetune.modality, ("audio", "video", "av"))
    _choice("finetune.architecture", cfg.finetune.architecture, ("mbt", "pretraining_encoder"))
    for key, ratio in (("model.mask_ratio_video", m.mask_ratio_video),
                       ("model.mask_ratio_audio", m.mask_ratio_audio)):
        if not 0.0 <= ratio < 1.0:
            raise ConfigError(f"{key}={ratio} must be in [0, 1): at least one token must stay visible")
    if m.embed_dim % m.num_heads:
        raise ConfigError(f"model.embed_dim={m.embed_dim} is not divisible by model.num_heads={m.num_heads}")
    if m.decoder_embed_dim % m.decoder_num_heads:
        raise ConfigError(f"model.decoder_embed_dim={m.decoder_embed_dim} is not divisible by "
                          f"model.decoder_num_heads={m.decoder_num_heads}")
    for key, dim in (("model.embed_dim", m.embed_dim), ("model.decoder_embed_dim", m.decoder_embed_dim)):
        if dim % 2:
            raise ConfigError(f"{key}={dim} must be even for sin-cos position embeddings")
    if m.encoder == "mid" and not 1 <= m.fusion_layers < m.depth:
        raise ConfigError(f"model.fusion_layers={m.fusion_layers} must be in [1, model.depth-1="
                          f"{m.depth - 1}] for the mid-fusion encoder (Sec. 3.2: S >= 1)")
    if m.objective != "joint":
        if m.modalities != "audio_video":
            raise ConfigError(f"model.objective={m.objective} reconstructs one modality from the "
                              "other, so it needs model.modalities=audio_video")
        if m.encoder in ("separate", "shared"):
            raise ConfigError(f"model.objective={m.objective} needs cross-modal encoding (Sec. 3.4): "
                              f"with model.encoder={m.encoder} the audio and video tokens never see "
                              "each other; use model.encoder=early or mid")
    if d.num_frames % m.tubelet_frames:
        raise ConfigError(f"data.num_frames={d.num_frames} must be a multiple of "
                          f"model.tubelet_frames={m.tubelet_frames}")
    if d.crop_size % m.patch_size:
        raise ConfigError(f"data.crop_size={d.crop_size} must be a multiple of model.patch_size={m.patch_size}")
    if d.audio_frames < m.patch_size:
        raise ConfigError(f"data.audio_seconds={d.audio_seconds} gives fewer than {m.patch_size} "
                          "spectrogram frames: no audio patch fits")
    if d.mel_bins % m.patch_size:
        raise ConfigError(f"data.mel_bins={d.mel_bins} must be a multiple of model.patch_size={m.patch_size}")
    if d.short_side < d.crop_size:
        raise ConfigError(f"data.short_side={d.short_side} is smaller than data.crop_size={d.crop_size}")
    if cfg.train.batch_size < 1 or cfg.train.accum_steps < 1:
        raise ConfigError("train.batch_size and train.accum_steps must be >= 1")
    if cfg.train.global_batch < 0:
        raise ConfigError(f"train.global_batch={cfg.train.global_batch} must be >= 0 (0: the global "
                          "batch is train.batch_size x train.accum_steps x processes)")
    if cfg.train.lr_batch < 1:
        raise ConfigError(f"train.lr_batch={cfg.train.lr_batch} must be >= 1: it is the global batch "
                          "train.base_lr is given for")
    if d.prefetch_factor < 1:
        raise ConfigError(f"data.prefetch_factor={d.prefetch_factor} must be >= 1 (batches each "
                          "loader worker prepares ahead)")
    for key, p in (("data.color_augment", d.color_augment), ("data.color_drop", d.color_drop)):
        if not 0.0 <= p <= 1.0:
            raise ConfigError(f"{key}={p} is a probability: give a value in [0, 1]")


def describe_pairing(cfg: ModelConfig) -> str | None:
    """A note for `info` about combinations that are allowed but special."""
    if cfg.modalities == "audio_video" and cfg.encoder == "separate" and cfg.decoder == "separate":
        return ("separate encoders with separate decoders are two uncoupled MAEs (the paper's "
                "Table 11 baseline, Sec. 3.3): audio and video never interact")
    return None
