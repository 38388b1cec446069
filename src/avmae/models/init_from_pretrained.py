"""Initialise a finetuning classifier from an AV-MAE pretraining checkpoint (paper Sec. 4.1).

Pure functions on state dicts: the caller reads the checkpoint (`checkpoint.load_weights`) and
prints the report. The decoder (decoder_embed, mask_token, decoder, pred) is dropped (Fig. 1).

MBT / AST / ViViT (`StreamClassifier`), stream m, with L layers and S joint layers:
    separate   streams.m.blocks.i   <- encoder.streams.m.blocks.i
               streams.m.norm       <- encoder.streams.m.norm
    mid        streams.m.blocks.i   <- encoder.streams.m.blocks.i          for i < L - S
               streams.m.blocks.i   <- encoder.joint.blocks.(i - L + S)    for i >= L - S (copied
                                       into both streams)
               streams.m.norm       <- encoder.joint.norm
               encoder.streams.m.norm (the LayerNorm that ends each separate part before the joint
               layers) has no place in an MBT stream and is DROPPED; finetuning adapts to its absence.
    norm (finetune.shared_norm: one final norm for both streams, official MBT)
                                    <- encoder.joint.norm (mid), encoder.transformer.norm (early,
                                       shared); new after separate encoders (as the official init)
    early, shared
               streams.m.*          <- encoder.transformer.* (the same weights into both streams,
                                       untied: each stream gets its own copy)
    patch_embed.m.proj.*            <- patch_embed.m.proj.*   (only where m was pretrained)
A unimodal AV-MAE (model.modalities audio or video, Table 3) initialises BOTH streams' blocks and
norms from its one encoder; the other modality's patch embedding stays freshly initialised.

The AV-MAE encoder architecture (`EncoderClassifier`, Table 12) has AVMAE's own key names: copied
key for key (a unimodal checkpoint's stream serves the other modality's stream too).

Heads and the MBT bottleneck are always new ("missing" in the report).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch
from torch import nn

from avmae.checkpoint import PRETRAIN_KIND
from avmae.models.classifier import EncoderClassifier, StreamClassifier
from avmae.config import Config, ConfigError, ModelConfig

DECODER_PREFIXES = ("decoder.", "decoder_embed.", "mask_token.")
# MBT with one final norm for both streams (finetune.shared_norm, the official MBT): the official
# init restores it from the joint layers' norm of mid fusion and leaves it fresh (identity) after
# separate encoders, whose two per-modality norms have no single counterpart.
SHARED_NORM_SOURCE = {"early": "encoder.transformer.norm", "shared": "encoder.transformer.norm",
                      "mid": "encoder.joint.norm", "separate": None}
WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DDP and torch.compile


@dataclass
class InitReport:
    loaded: list[str] = field(default_factory=list)      # classifier keys copied from the checkpoint
    missing: list[str] = field(default_factory=list)     # classifier keys left freshly initialised
    unexpected: list[str] = field(default_factory=list)  # checkpoint keys not recognised (none if valid)
    dropped: list[str] = field(default_factory=list)     # checkpoint keys left out by design
    from_scratch: bool = False

    warnings: list[str] = field(default_factory=list)  # one line each, for the user (warn)

    def summary(self) -> str:
        """One line for the log: what was loaded, what is new, what was left out (grouped by why,
        not tensor by tensor)."""
        if self.from_scratch:
            return "initialised from scratch (no checkpoint)"
        groups: dict[str, int] = {}
        for k in self.dropped:
            groups[_drop_reason(k)] = groups.get(_drop_reason(k), 0) + 1
        line = f"loaded {len(self.loaded)} tensors; new: {', '.join(_compact(self.missing)) or 'none'}"
        if groups:
            line += "; dropped " + ", ".join(f"{n} {why}" for why, n in groups.items())
        if self.unexpected:
            line += f"; UNEXPECTED: {', '.join(_compact(self.unexpected))}"
        return line


def _drop_reason(key: str) -> str:
    """Why a checkpoint tensor was left out by design, in words for the summary line."""
    if key.startswith(DECODER_PREFIXES):
        return "decoder tensors (the decoder is discarded, Fig. 1)"
    if key.startswith("cls_token."):
        return "[CLS] tokens (the classifiers pool the patch tokens)"
    if re.match(r"encoder\.streams\.\w+\.norm\.", key):
        return "stream-norm tensors (the per-stream final norms are dropped, as the official init does)"
    found = re.match(r"(?:patch_embed|modality_embed|encoder\.streams)\.(\w+)\.?", key)
    if found:
        return f"{found.group(1)}-stream tensors (a modality the classifier does not take)"
    return "other tensors"


def _compact(keys: list[str]) -> list[str]:
    """Parameter names shortened to their module prefix, for one readable line."""
    out: list[str] = []
    for k in keys:
        short = re.sub(r"\.(weight|bias)$", "", k)
        if short not in out:
            out.append(short)
    return out


def strip_prefixes(key: str, prefixes) -> str:
    """`key` without any of `prefixes` at its start, however many and in whatever order."""
    changed = True
    while changed:
        changed = False
        for p in prefixes:
            if key.startswith(p):
                key, changed = key[len(p):], True
    return key


def strip_wrappers(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove `module.` (DDP) and `_orig_mod.` (torch.compile) prefixes from every key."""
    return {strip_prefixes(k, WRAPPER_PREFIXES): v for k, v in state_dict.items()}


def check_pretrained(classifier: nn.Module, state_dict: dict[str, torch.Tensor], pretrain: ModelConfig,
                     kind: str | None = None) -> None:
    """Refuse a checkpoint that is not an AV-MAE pretraining checkpoint fitting `classifier`."""
    if kind is not None and kind != PRETRAIN_KIND:
        raise ConfigError(f"the checkpoint is of kind '{kind}', not an AV-MAE pretraining checkpoint "
                          f"('{PRETRAIN_KIND}'): finetune from a pretraining run; evaluate a finetuned "
                          "one with `avmae evaluate`")
    if any(k.startswith(("head.", "streams.")) or k == "bottleneck" for k in state_dict):
        raise ConfigError("the checkpoint holds a finetuned classifier (it has head/streams weights), "
                          "not an AV-MAE pretraining checkpoint: give a pretraining run to --init")
    if not any(k.startswith("encoder.") for k in state_dict):
        raise ConfigError("the checkpoint has no 'encoder.*' weights: it is not an AV-MAE pretraining "
                          "checkpoint")
    mine = classifier.model_cfg
    fields = ["embed_dim", "depth", "num_heads", "mlp_ratio", "patch_size", "tubelet_frames",
              "pos_embed", "modality_embed"]
    if isinstance(classifier, EncoderClassifier):
        fields += ["encoder"] + (["fusion_layers"] if pretrain.encoder == "mid" else [])
    wrong = [f"{f}={getattr(pretrain, f)} (classifier: {getattr(mine, f)})" for f in fields
             if getattr(pretrain, f) != getattr(mine, f)]
    if wrong:
        raise ConfigError("the checkpoint's encoder does not match the classifier: model."
                          + ", model.".join(wrong) + "; build the classifier from the checkpoint's "
                          "model config")


def _source_modality(m: str, pretrained: list[str]) -> str:
    """The pretrained modality whose encoder path initialises stream m (Table 3: a unimodal
    AV-MAE initialises both streams)."""
    return m if m in pretrained else pretrained[0]


def stream_source_key(key: str, pretrain: ModelConfig) -> str | None:
    """The AV-MAE key that initialises StreamClassifier key `key`, or None (new parameter)."""
    pretrained = [m for m, on in (("audio", pretrain.has_audio), ("video", pretrain.has_video)) if on]
    found = re.match(r"(patch_embed|modality_embed)\.(\w+)(\..*|)$", key)
    if found:
        return key if found.group(2) in pretrained else None
    found = re.match(r"norm\.(.*)$", key)
    if found:  # MBT's one shared final norm (finetune.shared_norm), as the official init maps it
        source = SHARED_NORM_SOURCE[pretrain.encoder]
        return None if source is None else f"{source}.{found.group(1)}"
    found = re.match(r"streams\.(\w+)\.(blocks\.(\d+)|norm)\.(.*)$", key)
    if not found:
        return None  # head, bottleneck
    s = _source_modality(found.group(1), pretrained)
    rest = found.group(4)
    block = None if found.group(3) is None else int(found.group(3))
    if pretrain.encoder in ("early", "shared"):
        return f"encoder.transformer.{found.group(2)}.{rest}"
    if pretrain.encoder == "separate":
        return f"encoder.streams.{s}.{found.group(2)}.{rest}"
    sep = pretrain.depth - pretrain.fusion_layers  # mid fusion
    if block is None:
        return f"encoder.joint.norm.{rest}"
    if block < sep:
        return f"encoder.streams.{s}.blocks.{block}.{rest}"
    return f"encoder.joint.blocks.{block - sep}.{rest}"


def encoder_source_key(key: str, pretrain: ModelConfig) -> str | None:
    """The AV-MAE key that initialises EncoderClassifier key `key` (the same name; a unimodal
    checkpoint's stream also serves the other modality's stream), or None."""
    pretrained = [m for m, on in (("audio", pretrain.has_audio), ("video", pretrain.has_video)) if on]
    found = re.match(r"(patch_embed|modality_embed)\.(\w+)(\..*|)$", key)
    if found:
        return key if found.group(2) in pretrained else None
    found = re.match(r"encoder\.streams\.(\w+)\.(.*)$", key)
    if found:
        return f"encoder.streams.{_source_modality(found.group(1), pretrained)}.{found.group(2)}"
    return key if key.startswith("encoder.") else None


def init_classifier_from_avmae(classifier: nn.Module, state_dict: dict[str, torch.Tensor] | None,
                               pretrain_cfg: Config | ModelConfig | None,
                               kind: str | None = None) -> InitReport:
    """Copy the pretrained encoder into `classifier` (in place) by the rules in the module docstring.

    state_dict, pretrain_cfg, kind: as `checkpoint.load_weights` returns them (kind optional; the
    keys are checked as well). `state_dict=None` means from scratch: nothing is copied.
    Every copied tensor is a separate copy, so streams initialised from the same weights (early,
    shared, mid's joint layers) are untied. Raises ConfigError for a checkpoint of the wrong kind
    or shape. Returns the report; the caller prints `report.summary()`.
    """
    target = classifier.state_dict()
    if state_dict is None:
        return InitReport(missing=list(target), from_scratch=True)
    if pretrain_cfg is None:
        raise ConfigError("initialising from a checkpoint needs its config")
    pretrain = pretrain_cfg.model if isinstance(pretrain_cfg, Config) else pretrain_cfg
    state_dict = strip_wrappers(state_dict)
    check_pretrained(classifier, state_dict, pretrain, kind)
    if isinstance(classifier, StreamClassifier):
        source_key = stream_source_key
    elif isinstance(classifier, EncoderClassifier):
        source_key = encoder_source_key
    else:
        raise TypeError(f"cannot initialise a {type(classifier).__name__}")

    mapped, report, used = {}, InitReport(), set()
    for key, tensor in target.items():
        src = source_key(key, pretrain)
        if src is None or src not in state_dict:
            report.missing.append(key)
            continue
        if state_dict[src].shape != tensor.shape:
            raise ConfigError(f"checkpoint tensor '{src}' has shape {tuple(state_dict[src].shape)} but "
                              f"'{key}' needs {tuple(tensor.shape)}: build the classifier from the "
                              "checkpoint's model config")
        mapped[key] = state_dict[src]
        used.add(src)
        report.loaded.append(key)
    # load_state_dict copies into the classifier's own parameters: nothing stays tied.
    classifier.load_state_dict(mapped, strict=False)

    pretrained = [m2 for m2, on in (("audio", pretrain.has_audio), ("video", pretrain.has_video)) if on]
    sources = {_source_modality(m, pretrained) for m in classifier.modalities}
    # One final norm shared by the streams (finetune.shared_norm, the official MBT): the per-stream
    # final norms of mid fusion or separate encoders have no counterpart (the official init drops them).
    norms_dropped = pretrain.encoder == "mid" or (pretrain.encoder == "separate"
                                                  and getattr(classifier, "shared_norm", False))
    for key in state_dict:
        if key in used:
            continue
        found = re.match(r"(?:patch_embed|modality_embed|encoder\.streams)\.(\w+)\.?", key)
        tokeniser = re.match(r"(?:patch_embed|modality_embed)\.(\w+)", key)
        by_design = (key.startswith(DECODER_PREFIXES) or key.startswith("cls_token.")  # classifiers pool
                     or (found is not None and found.group(1) not in sources)    # unused modality
                     or (tokeniser is not None and tokeniser.group(1) not in classifier.modalities)
                     or (norms_dropped and re.match(r"encoder\.streams\.\w+\.norm\.", key)))
        (report.dropped if by_design else report.unexpected).append(key)
    for m in classifier.modalities:
        if m not in pretrained:
            report.warnings.append(
                f"the checkpoint was pretrained on {' and '.join(pretrained)} only: the {m} stream's "
                f"tokeniser (patch_embed.{m}) starts from random initialisation and its layers from "
                f"the {pretrained[0]} stream's weights; expect {m} to need more finetuning")
    return report
