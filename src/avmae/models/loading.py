"""From a checkpoint to a model: the one place a model is built for checkpoint weights.

    model = build_model(cfg, kind, num_classes=...)          # an empty model of that kind
    model, cfg, kind, metadata, file = load_model(path)      # built, weights loaded (strict)

The checkpoint kinds (`checkpoint.PRETRAIN_KIND`, `checkpoint.FINETUNE_KIND`) key the factory:
the pretraining kind is `AVMAE(cfg.model)`, the finetuning kind the classifier `build_classifier`
makes for the head sizes in the checkpoint's label metadata. `api.load`, `avmae evaluate`,
`avmae probe`, `avmae embed`, `avmae visualize` and the Scenic import all build through here;
only the training code builds fresh models of its own (it loads its --resume state itself).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from avmae.checkpoint import (
    BEST_NAME,
    FINETUNE_KIND,
    KINDS,
    MARKER,
    PRETRAIN_KIND,
    WEIGHTS,
    read_weights,
    resolve_weights,
    warn,
)
from avmae.config import Config, ConfigError, a_or_an
from avmae.models.avmae import AVMAE
from avmae.models.classifier import build_classifier


class Loaded(NamedTuple):
    model: nn.Module         # in training mode, on the CPU, its weights loaded
    cfg: Config              # the checkpoint's config
    kind: str                # PRETRAIN_KIND or FINETUNE_KIND
    metadata: dict[str, str]  # the safetensors metadata (config, kind, step, labels of a classifier)
    file: Path               # the weights file read


def head_sizes(classes: list[int]) -> int | tuple[int, ...]:
    """Classes per label column -> `build_classifier`'s num_classes (an int for one head)."""
    return classes[0] if len(classes) == 1 else tuple(classes)


def finetune_labels(meta: dict[str, str], file: str | Path) -> dict:
    """{"label_column", "task", "classes", "vocab"} of a finetuned checkpoint's metadata."""
    try:
        return {"label_column": meta["label_column"], "task": meta["task"],
                "classes": [int(c) for c in json.loads(meta["num_classes"])],
                "vocab": json.loads(meta["vocab"])}
    except (KeyError, ValueError, TypeError):
        raise ConfigError(f"'{file}' has no label metadata (label_column, num_classes, vocab): "
                          "it was not written by `avmae finetune`") from None


def class_names(kind: str, meta: dict[str, str], file: str | Path) -> list[str] | list[list[str]] | None:
    """A classifier's class names, index = class id (from the run's vocabulary in its metadata):
    a list for one head, a list of lists for several (Epic Kitchens' verb and noun); None for a
    pretraining checkpoint."""
    if kind != FINETUNE_KIND:
        return None
    labels = finetune_labels(meta, file)
    columns = labels["label_column"].split(",") if isinstance(labels["label_column"], str) else []
    vocab = labels["vocab"]
    names = [list(vocab[c]) for c in columns if c in vocab] or [list(v) for v in vocab.values()]
    return names[0] if len(names) == 1 else names


def build_model(cfg: Config, kind: str, num_classes: int | tuple[int, ...] | None = None) -> nn.Module:
    """An empty (randomly initialised) model of checkpoint kind `kind` for `cfg`: AVMAE for
    PRETRAIN_KIND, the classifier of `num_classes` (an int, or one per head) for FINETUNE_KIND."""
    if kind == PRETRAIN_KIND:
        return AVMAE(cfg.model)
    if kind == FINETUNE_KIND:
        if num_classes is None:
            raise ConfigError(f"{a_or_an(FINETUNE_KIND)} model needs its head sizes (num_classes)")
        return build_classifier(cfg, num_classes)
    raise ConfigError(f"unknown checkpoint kind '{kind}': one of {', '.join(KINDS)}")


def fit_weights(model: nn.Module, weights: dict[str, torch.Tensor], what: str, *,
                assign: bool = False) -> nn.Module:
    """Load `weights` strictly into `model`; a mismatch is one line, ConfigError(f"{what}: ..."),
    saying how many tensors are missing, unexpected or of another shape, with the first of each."""
    own = model.state_dict()
    missing = [k for k in own if k not in weights]
    unexpected = [k for k in weights if k not in own]
    shapes = [f"{k} {tuple(weights[k].shape)} vs {tuple(own[k].shape)}" for k in own
              if k in weights and tuple(weights[k].shape) != tuple(own[k].shape)]
    problems = [f"{len(found)} {name} (e.g. {found[0]})" for name, found in
                (("missing", missing), ("unexpected", unexpected), ("of another shape", shapes)) if found]
    if problems:
        raise ConfigError(f"{what}: {'; '.join(problems)}")
    try:
        model.load_state_dict(weights, strict=True, assign=assign)
    except RuntimeError as err:
        raise ConfigError(f"{what}: {str(err).splitlines()[0]}") from None
    return model


def best_or_last(path: str | Path, purpose: str = "checkpoint") -> Path:
    """The weights file of `path`: RUN/checkpoints/best if the run has one (a finetune run's best
    validation score), else as `checkpoint.resolve_weights` (a run's newest checkpoint that
    verifies, a checkpoint folder, a file)."""
    best = Path(path) / "checkpoints" / BEST_NAME
    if (best / MARKER).exists() and (best / WEIGHTS).is_file():
        try:
            return resolve_weights(best)
        except ConfigError as err:  # a damaged `best`: the run's checkpoints are still there
            warn(f"skipped {best.resolve()}: {err}; using the run's newest checkpoint that verifies")
    return resolve_weights(path, purpose)


CHECKPOINT_CHOICES = ("best", "last")


def load_model(path: str | Path, purpose: str = "checkpoint", *, expect: str | None = None,
               refusal: str | None = None, prefer: str = "best") -> Loaded:
    """(model, cfg, kind, metadata, file) of a run folder, checkpoint folder or weights file.

    The file is `best_or_last(path, purpose)` (prefer="best") or the run's newest checkpoint that
    verifies (prefer="last", `checkpoint.resolve_weights`); a checkpoint folder or file is itself
    whatever `prefer` says. It is verified against its checkpoint's record. expect:
    the one kind accepted; another raises ConfigError(refusal.format(path=path, kind=kind)) before
    any model is built. The model is built by `build_model` (a classifier's head sizes from its
    label metadata) and the weights loaded strictly.
    """
    if prefer not in CHECKPOINT_CHOICES:
        raise ConfigError(f"--checkpoint {prefer}: choose one of {', '.join(CHECKPOINT_CHOICES)}")
    file = best_or_last(path, purpose) if prefer == "best" else resolve_weights(path, purpose)
    weights, cfg, kind, meta = read_weights(file)
    if expect is not None and kind != expect:
        raise ConfigError((refusal or "'{path}' is {a_kind} checkpoint, not {a_expect} one")
                          .format(path=path, kind=kind, expect=expect, a_kind=a_or_an(kind),
                                  a_expect=a_or_an(expect)))
    if kind == FINETUNE_KIND:
        model = build_model(cfg, kind, head_sizes(finetune_labels(meta, file)["classes"]))
        what = f"'{file}' does not fit the classifier its config describes"
    else:
        model = build_model(cfg, kind)
        what = f"'{file}' does not fit the model its config describes"
    fit_weights(model, weights, what)
    return Loaded(model, cfg, kind, meta, file)
