"""`avmae probe RUN --data TRAIN --val TEST`: what a frozen encoder already knows.

Self-supervised encoders are judged by frozen-feature evaluation (the MAE papers' linear probing):
the encoder is not trained; each clip's feature is the mean of its encoded tokens per modality
(global average pooling, as the classifiers pool), concatenated over the probed modalities. The
features of TRAIN and TEST are extracted once (one centre view per clip, no augmentation), then

    linear   a logistic-regression head on the standardised features (softmax cross-entropy for one
             label, sigmoid per class for multi-label), full batch, L-BFGS, a fixed L2 penalty:
             seconds on a CPU;
    k-NN     cosine similarity to every training clip (features centred on the training mean),
             the k nearest vote with weights exp(similarity / T) (k = 20, T = 0.07 as in DINO's
             k-NN evaluation).

Both are scored with `avmae evaluate`'s metrics (top-1 / top-5; mAP, AUC, d-prime; verb / noun /
action). Nothing is chosen by a test score: the head's penalty and k are fixed.

RUN is an AV-MAE pretraining run or checkpoint (its encoder, no masking), a finetuned classifier
(its streams, before the head), or `scratch` with --preset (a randomly initialised AV-MAE encoder
of that size, seeded by --seed: the baseline a pretrained encoder must beat).
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from avmae.checkpoint import FINETUNE_KIND, PRETRAIN_KIND
from avmae.models.classifier import FINETUNE_MODALITIES
from avmae.config import Config, ConfigError, build_config
from avmae.data.dataset import ClipDataset, build_dataset, build_loader
from avmae.data.storage import data_exists
from avmae.data.manifest import label_columns
from avmae.runtime import resolve_device
from avmae.evaluation.embed import pooled_batches
from avmae.evaluation.evaluate import json_safe, label_task, score
from avmae.models.loading import build_model, finetune_labels, load_model

K_NEIGHBOURS = 20
KNN_TEMPERATURE = 0.07      # DINO's weighted k-NN
L2_PENALTY = 1e-3           # on standardised features, per training clip (fixed, never tuned on a test)
LBFGS_STEPS = 300


# ---- the frozen encoder ---------------------------------------------------------------------

@dataclasses.dataclass
class FrozenEncoder:
    model: torch.nn.Module    # forward_features({m: input}) -> {m: (B, N_m, D)}, no masking
    inputs: list[str]         # the modalities it must be given
    kind: str                 # avmae_pretrain | avmae_finetune | scratch
    cfg: Config
    label_column: str | None  # a finetuned run's own label column


def load_encoder(run: str, *, preset: str | None, overrides: list[str] | None, seed: int,
                 modality: str | None) -> tuple[FrozenEncoder, list[str]]:
    """The frozen encoder of RUN and the modalities to pool (default: all it has)."""
    if run == "scratch":
        if preset is None:
            raise ConfigError("`scratch` needs --preset for the model and input sizes (see `avmae presets`)")
        cfg = build_config(preset, overrides)
        torch.manual_seed(seed)
        model, kind, own_label = build_model(cfg, PRETRAIN_KIND), "scratch", None
    else:
        if preset is not None:
            raise ConfigError("--preset is only for `scratch`: a run's own config gives the sizes")
        model, cfg, kind, meta, file = load_model(run, purpose="RUN")
        cfg = build_config(None, overrides, base=cfg)
        own_label = finetune_labels(meta, file)["label_column"] if kind == FINETUNE_KIND else None
    model.eval()
    has = model.modalities  # what the encoder encodes
    wanted = has if modality is None else FINETUNE_MODALITIES[modality]
    missing = [m for m in wanted if m not in has]
    if missing:
        raise ConfigError(f"--modality {modality}: the encoder of '{run}' has no {' or '.join(missing)} "
                          f"(it encodes {', '.join(has)})")
    # A classifier's streams run together (MBT's bottleneck joins them): it is given all it reads.
    # An AV-MAE encoder is given only the probed modalities, as a unimodal finetune uses it.
    inputs = list(has) if kind == FINETUNE_KIND else list(wanted)
    return FrozenEncoder(model, inputs, kind, cfg, own_label), list(wanted)


@torch.no_grad()
def extract(encoder: FrozenEncoder, pooled: list[str], dataset: ClipDataset, cfg: Config, *,
            batch_size: int, workers: int | None, device: torch.device
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Features (clips, F) float32 (mean of each pooled modality's tokens, concatenated) and a
    readable mask (clips,) bool; an unreadable clip's row is zeros and its mask False."""
    loader = build_loader(dataset, cfg, train=False, batch_size=batch_size, num_workers=workers)
    feats: torch.Tensor | None = None
    seen = torch.zeros(len(dataset), dtype=torch.bool)
    for batch, means in pooled_batches(encoder.model, loader, device, encoder.inputs):
        if means is None:
            continue
        z = torch.cat([means[m] for m in pooled], dim=1)                                # (B, F)
        if feats is None:
            feats = torch.zeros(len(dataset), z.shape[1])
        feats[batch["index"]] = z
        seen[batch["index"]] = True
    if feats is None:
        raise ConfigError("no clip could be read")
    return feats, seen


# ---- the two probes -------------------------------------------------------------------------

def labelled_sets(data: str, val: str, cfg: Config, column: str, device: torch.device | None = None
                  ) -> tuple[ClipDataset, ClipDataset, list[int]]:
    """(the labelled clips the heads are fitted on, the clips they score, classes per label
    column): evaluation views, the scored clips in the fitted clips' vocabulary."""
    train_set = build_dataset(data, cfg, train=False, label_column=column, device=device)
    val_set = build_dataset(val, cfg, train=False, label_column=column, vocab=train_set.vocab,
                            device=device)
    return train_set, val_set, [len(train_set.vocab[c]) for c in label_columns(column)]


def scored(scores: torch.Tensor, val_ok: torch.Tensor, val_set: ClipDataset, task: str,
           classes: list[int], val: str) -> dict:
    """evaluate's metrics of `scores` on the readable clips of `val_set`, JSON-ready."""
    try:
        metrics = score(scores, val_ok, val_set.labels, task, classes)
    except ValueError as err:
        raise ConfigError(f"cannot score on '{val}': {err}") from None
    return {key: json_safe(v) for key, v in metrics.items()}


def targets_of(labels: torch.Tensor, task: str, classes: list[int]) -> list[tuple[str, torch.Tensor]]:
    """Per head: ("single", class indices (N,)) or ("multi", multi-hot (N, C))."""
    if task == "multi":
        return [("multi", labels)]
    if task == "verb_noun":
        return [("single", labels[:, 0]), ("single", labels[:, 1])]
    return [("single", labels)]


def fit_linear(x: torch.Tensor, y: torch.Tensor, kind: str, num_classes: int,
               l2: float = L2_PENALTY, steps: int = LBFGS_STEPS) -> tuple[torch.Tensor, torch.Tensor]:
    """Logistic regression on x (N, F) -> (W (F, C), b (C,)), from zeros (a convex problem: the
    optimum does not depend on the start)."""
    x = x.double()
    w = torch.zeros(x.shape[1], num_classes, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(num_classes, dtype=torch.float64, requires_grad=True)
    target = y.long() if kind == "single" else y.double()
    optimizer = torch.optim.LBFGS([w, b], lr=1, max_iter=steps, history_size=20,
                                  tolerance_grad=1e-9, tolerance_change=1e-12,
                                  line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        logits = x @ w + b
        loss = F.cross_entropy(logits, target) if kind == "single" else \
            F.binary_cross_entropy_with_logits(logits, target)
        loss = loss + l2 * (w * w).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return w.detach().float(), b.detach().float()


def linear_scores(train_x: torch.Tensor, heads: list[tuple[str, torch.Tensor]], classes: list[int],
                  val_x: torch.Tensor) -> torch.Tensor:
    """Standardise with the training clips' mean / std (MAE's linear probe normalises its
    features, Sec. A of He et al.), fit one head per label column, score the test clips."""
    mean, std = train_x.mean(dim=0), train_x.std(dim=0).clamp(min=1e-6)
    tx, vx = (train_x - mean) / std, (val_x - mean) / std
    out = []
    for (kind, y), c in zip(heads, classes):
        w, b = fit_linear(tx, y, kind, c)
        out.append(vx @ w + b)
    return torch.cat(out, dim=1)


def knn_scores(train_x: torch.Tensor, heads: list[tuple[str, torch.Tensor]], classes: list[int],
               val_x: torch.Tensor, k: int = K_NEIGHBOURS,
               temperature: float = KNN_TEMPERATURE) -> torch.Tensor:
    """Weighted votes of the k nearest training clips by cosine similarity (centred features)."""
    mean = train_x.mean(dim=0)
    tx = F.normalize(train_x - mean, dim=1)
    vx = F.normalize(val_x - mean, dim=1)
    sim = vx @ tx.T                                          # (V, N)
    top, idx = sim.topk(min(k, tx.shape[0]), dim=1)          # (V, k)
    weight = (top / temperature).exp()                       # (V, k)
    out = []
    for (kind, y), c in zip(heads, classes):
        votes = F.one_hot(y.long(), c).float() if kind == "single" else y.float()   # (N, C)
        s = (weight[..., None] * votes[idx]).sum(dim=1)                           # (V, C)
        out.append(s / weight.sum(dim=1, keepdim=True))
    return torch.cat(out, dim=1)



class KnnMonitor:
    """`avmae pretrain --knn-data LABELLED --knn-val VAL`: the k-NN top-1 of the model's frozen
    features (every modality it encodes, as `avmae probe` pools them) at each checkpoint, the
    labelled clips as the bank, scored on VAL. It chooses nothing: it shows a long run's
    representation improving without a finetune. The label column is finetune.label_column."""

    def __init__(self, data: str, val: str, cfg: Config, device: torch.device, k: int = K_NEIGHBOURS):
        for flag, path in (("--knn-data", data), ("--knn-val", val)):
            if not data_exists(path):
                raise ConfigError(f"{flag} '{path}' does not exist: give a labelled CSV manifest or "
                                  "shards folder")
        column = cfg.finetune.label_column
        self.task, self.cfg, self.device, self.k, self.val = label_task(column), cfg, device, k, val
        self.bank, self.queries, self.classes = labelled_sets(data, val, cfg, column, device)

    @torch.no_grad()
    def __call__(self, model: torch.nn.Module) -> dict:
        """{"knn_<metric>": value, ...} of `model` (an AVMAE) as it is now; its train/eval mode
        is restored."""
        was_training = model.training
        model.eval()
        try:
            encoder = FrozenEncoder(model, list(model.modalities), PRETRAIN_KIND, self.cfg, None)
            kwargs = dict(batch_size=self.cfg.train.batch_size, workers=0, device=self.device)
            bank_x, bank_ok = extract(encoder, encoder.inputs, self.bank, self.cfg, **kwargs)
            val_x, val_ok = extract(encoder, encoder.inputs, self.queries, self.cfg, **kwargs)
        finally:
            model.train(was_training)
        heads = targets_of(self.bank.labels[bank_ok], self.task, self.classes)
        scores = knn_scores(bank_x[bank_ok], heads, self.classes, val_x, k=self.k)
        metrics = scored(scores, val_ok, self.queries, self.task, self.classes, self.val)
        return {f"knn_{key}": v for key, v in metrics.items()}


# ---- the command ----------------------------------------------------------------------------

def probe(run: str, data: str, val: str, *, modality: str | None = None, preset: str | None = None,
          overrides: list[str] | None = None, label_column: str | None = None, seed: int = 0,
          k: int = K_NEIGHBOURS, batch_size: int = 16, workers: int | None = None,
          device: str = "auto") -> dict:
    """Linear and k-NN probes of RUN's frozen encoder; the JSON object `avmae probe` prints."""
    for flag, path in (("--data", data), ("--val", val)):
        if not data_exists(path):
            raise ConfigError(f"{flag} '{path}' does not exist: give a CSV manifest or a shards folder")
    if k < 1:
        raise ConfigError(f"--k {k}: give at least one neighbour")
    if batch_size < 1:
        raise ConfigError(f"--batch-size {batch_size}: give at least one clip per batch")
    encoder, pooled = load_encoder(run, preset=preset, overrides=overrides, seed=seed, modality=modality)
    cfg = encoder.cfg
    column = label_column or encoder.label_column or cfg.finetune.label_column
    label_columns(column)  # a malformed spec is refused here, with its own message
    task = label_task(column)
    modalities = "audio_video" if len(encoder.inputs) == 2 else encoder.inputs[0]
    data_cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, modalities=modalities))
    dev = resolve_device(device)
    train_set, val_set, classes = labelled_sets(data, val, data_cfg, column, dev)
    encoder.model.to(dev)
    kwargs = dict(batch_size=batch_size, workers=workers, device=dev)
    train_x, train_ok = extract(encoder, pooled, train_set, data_cfg, **kwargs)
    val_x, val_ok = extract(encoder, pooled, val_set, data_cfg, **kwargs)

    heads = targets_of(train_set.labels[train_ok], task, classes)
    fitted = train_x[train_ok]
    results = {name: scored(scores, val_ok, val_set, task, classes, val)
               for name, scores in (("linear", linear_scores(fitted, heads, classes, val_x)),
                                    ("knn", knn_scores(fitted, heads, classes, val_x, k=k)))}
    return {"linear": results["linear"], "knn": results["knn"], "modality": modality or
            ("av" if len(pooled) == 2 else pooled[0]), "encoder": encoder.kind, "run": str(run),
            "features": int(train_x.shape[1]), "train_clips": int(train_ok.sum()),
            "train_clips_skipped": int((~train_ok).sum()), "k": k, "label_column": column,
            "data": str(data), "val": str(val)}
