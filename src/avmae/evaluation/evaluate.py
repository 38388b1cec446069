"""`avmae evaluate`: the field's metrics for a finetuned classifier (paper Sec. 4.1, B.2).

Every clip is seen through `views` evenly spaced temporal windows (B.2: "averaging the results of 4
views for every evaluation example"); the logits of a clip's views are averaged, then

    label        (one class per clip, softmax)       top1, top5             VGGSound
    labels       (multi-label, sigmoid)              mAP, AUC, d_prime      AudioSet
    verb,noun    (two heads)                         verb_top1, noun_top1, action_top1, ...   Epic Kitchens

A finetuned checkpoint carries everything needed (config, label column, vocabulary, class counts in
its metadata), so `evaluate_checkpoint(CKPT, DATA)` rebuilds the classifier from the file alone.
Unreadable clips are skipped and counted (`clips_skipped`), never fatal. Under torchrun each rank
evaluates its share of the samples and the per-sample logits are summed over ranks.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from pathlib import Path

import torch
import torch.distributed as torch_dist
from safetensors import safe_open
from tqdm import tqdm

from avmae import runtime
from avmae.checkpoint import FINETUNE_KIND, resolve_weights
from avmae.models.classifier import FINETUNE_MODALITIES, Classifier
from avmae.config import Config, ConfigError
from avmae.data.dataset import ClipDataset, build_dataset, build_loader
from avmae.data.storage import data_exists
from avmae.data.manifest import label_columns
from avmae.evaluation.metrics import classification_metrics
from avmae.models.loading import finetune_labels, load_model
from avmae.runtime import autocast, resolve_device

# The metric that picks the best checkpoint and that the paper reports first for each task.
PRIMARY_METRIC = {"single": "top1", "multi": "mAP", "verb_noun": "action_top1"}


# ---- labels and the data the classifier reads -----------------------------------------------

def label_task(label_column: str) -> str:
    """'label' / 'verb' / 'noun' -> "single"; 'labels' -> "multi"; 'verb,noun' -> "verb_noun"."""
    columns = label_columns(label_column)
    if columns == ("labels",):
        return "multi"
    return "verb_noun" if len(columns) == 2 else "single"


def dataset_config(cfg: Config) -> Config:
    """A copy of `cfg` whose model.modalities are the classifier's, so the data pipeline decodes
    (and, when missing, fills or skips) exactly the modalities the classifier reads, whatever the
    pretrained model saw."""
    used = FINETUNE_MODALITIES[cfg.finetune.modality]
    modalities = "audio_video" if len(used) == 2 else used[0]
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, modalities=modalities))


# ---- prediction -----------------------------------------------------------------------------

@torch.no_grad()
def predict(model: Classifier, dataset: ClipDataset, cfg: Config, d: runtime.Dist, *,
            batch_size: int, num_workers: int | None = None, progress: bool = False
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-clip logits averaged over the clip's readable views.

    Returns (scores (clips, C) float32 on the CPU, with the heads' logits concatenated along C for
    several heads; evaluated (clips,) bool: False for a clip none of whose views could be read).
    Samples a rank sees twice (the loader pads ranks by wrapping) are averaged, not double counted.
    """
    was_training = model.training
    model.eval()
    views = dataset.num_views
    loader = build_loader(dataset, cfg, train=False, batch_size=batch_size, rank=d.rank,
                          world_size=d.world_size, num_workers=num_workers)
    total = sum(head.out_features for head in model.heads())  # all heads' classes
    sums = torch.zeros(len(dataset), total, dtype=torch.float32, device=d.device)  # per sample
    counts = torch.zeros(len(dataset), dtype=torch.float32, device=d.device)
    bar = tqdm(loader, desc="evaluate", unit="batch", disable=not (progress and d.is_main),
               file=sys.stderr, dynamic_ncols=True)
    for batch in bar:
        if len(batch["index"]) == 0:  # every clip of the batch was unreadable
            continue
        inputs = {m: batch[m].to(d.device, non_blocking=True) for m in model.modalities}
        with autocast(cfg.train.amp, d.device):
            logits = model(**inputs)
        logits = torch.cat(logits, dim=1) if isinstance(logits, tuple) else logits  # (B, C)
        sample = (batch["index"] * views + batch["view"]).to(d.device)             # (B,)
        sums.index_add_(0, sample, logits.float())
        counts.index_add_(0, sample, torch.ones_like(sample, dtype=torch.float32))
    bar.close()
    if d.enabled:
        torch_dist.all_reduce(sums)
        torch_dist.all_reduce(counts)
    model.train(was_training)
    per_view = (sums / counts.clamp(min=1)[:, None]).view(-1, views, total)        # (clips, V, C)
    seen = (counts > 0).view(-1, views)                                             # (clips, V)
    scores = (per_view * seen[..., None]).sum(dim=1) / seen.sum(dim=1).clamp(min=1)[:, None]
    return scores.cpu(), seen.any(dim=1).cpu()


def score(scores: torch.Tensor, evaluated: torch.Tensor, labels: torch.Tensor, task: str,
          classes: list[int]) -> dict:
    """The task's metrics over the evaluated clips, plus clips_evaluated / clips_skipped.

    scores (clips, sum(classes)); labels as the dataset holds them: int64 (clips,), float32 (clips, C)
    multi-hot or int64 (clips, 2) verb, noun. Raises ValueError where a metric is undefined
    (no clip readable, or no class with positives for mAP).
    """
    n = int(evaluated.sum())
    counts = {"clips_evaluated": n, "clips_skipped": int(len(evaluated) - n)}
    if n == 0:
        raise ValueError("no clip could be read")
    s, y = scores[evaluated], labels[evaluated]
    if task == "verb_noun":
        s = (s[:, : classes[0]], s[:, classes[0]:])
        y = (y[:, 0], y[:, 1])
    return {**classification_metrics(s, y, task), **counts}


def evaluate_model(model: Classifier, dataset: ClipDataset, cfg: Config, task: str,
                   classes: list[int], d: runtime.Dist, *, batch_size: int,
                   num_workers: int | None = None, progress: bool = False) -> dict:
    """predict + score; the finetuning loop's validation. Metrics are the same on every rank."""
    scores, evaluated = predict(model, dataset, cfg, d, batch_size=batch_size,
                                num_workers=num_workers, progress=progress)
    return score(scores, evaluated, dataset.labels, task, classes)


# ---- checkpoints ----------------------------------------------------------------------------

def checkpoint_metadata(path: str | Path) -> dict[str, str]:
    """The safetensors metadata of a checkpoint (header only, no tensors read)."""
    with safe_open(str(resolve_weights(path)), framework="pt") as f:
        return f.metadata() or {}


def load_finetuned(path: str | Path, checkpoint: str = "last") -> tuple[Classifier, Config, dict, Path]:
    """(classifier with its weights, config, {"label_column", "task", "classes", "vocab"}, file)
    of a run folder's newest checkpoint that verifies (checkpoint="last", the default: the result
    of the recipe, chosen by nothing) or its best on validation (checkpoint="best", else its
    newest: `models.loading.best_or_last`); a checkpoint folder or file is itself."""
    model, cfg, _, meta, file = load_model(
        path, expect=FINETUNE_KIND, prefer=checkpoint,
        refusal="'{path}' is an AV-MAE pretraining checkpoint, not a finetuned classifier: finetune it "
                "first (`avmae finetune --init {path} --modality av --data TRAIN --val VAL --out RUN`), "
                "then evaluate RUN")
    return model, cfg, finetune_labels(meta, file), file


def json_safe(value):
    """inf / nan (d_prime at AUC 1, say) -> null: the output stays strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def evaluate_checkpoint(checkpoint: str | Path, data: str | Path, *, views: int | None = None,
                        device: str = "auto", batch_size: int | None = None,
                        num_workers: int | None = None, progress: bool = False,
                        which: str = "last") -> dict | None:
    """Evaluate a finetuned checkpoint on DATA; the JSON object `avmae evaluate` prints.

    views: temporal views per clip (default the checkpoint's finetune.views). which: for a run
    folder, "last" (its newest checkpoint, the default) or "best" (the one finetuning's
    validation chose; only meaningful when DATA is not what it validated on). Returns the metrics
    of the checkpoint's task plus clips_evaluated, clips_skipped, views, checkpoint (the weights
    file used), checkpoint_choice and data; None on ranks other than 0 under torchrun.
    """
    if not data_exists(data):
        raise ConfigError(f"--data '{data}' does not exist: give a CSV manifest or a shards folder")
    model, cfg, labels, file = load_finetuned(checkpoint, which)
    is_run = Path(checkpoint).is_dir() and (Path(checkpoint) / "checkpoints").is_dir()
    choice = which if is_run else "given"
    views = cfg.finetune.views if views is None else views
    if views < 1:
        raise ConfigError(f"--views {views}: give at least one view per clip")
    dataset = build_dataset(data, dataset_config(cfg), train=False,
                            label_column=labels["label_column"], vocab=labels["vocab"],
                            num_views=views, device=resolve_device(device))
    owned = not (torch_dist.is_available() and torch_dist.is_initialized())
    d = runtime.setup(device)
    try:
        model.to(d.device)
        try:
            metrics = evaluate_model(model, dataset, cfg, labels["task"], labels["classes"], d,
                                     batch_size=batch_size or cfg.train.batch_size,
                                     num_workers=num_workers, progress=progress)
        except ValueError as err:
            raise ConfigError(f"cannot evaluate on '{data}': {err}") from None
    finally:
        if owned:
            runtime.teardown()
    if not d.is_main:
        return None
    return {**{k: json_safe(v) for k, v in metrics.items()}, "views": views,
            "checkpoint": str(file), "checkpoint_choice": choice, "data": str(data)}
