"""`avmae finetune`: AST / ViViT / MBT classifiers initialised from an AV-MAE (paper Sec. 4.1, B.2).

The pretrained encoder initialises the classifier (init_from_pretrained.py; the decoder is dropped,
Fig. 1); without --recipe the recipe is Table 16's (VGGSound), every row (recipes.TABLE_16):

    SGD, momentum 0.9; lr 0.8 at a global batch of 64, the global batch 64 (train.global_batch:
    shared by the processes, micro-batches of at most train.batch_size = 8, accumulation filling
    the rest; --set train.batch_size=B gives a global batch of B x accum x processes instead) and
    the lr scaled linearly to the batch used (lr = base_lr x global_batch / lr_batch, Sec. B.1);
    layer-wise decay 0.75 (bottleneck tokens undecayed, at the head's rate); 2.5 warm-up epochs,
    then cosine, per step; gradient clipping 1.0; 50 epochs; mixup 0.5 per modality (audio-only
    too), label smoothing 0.3, stochastic depth 0.3; audio: SpecAugment (official VGGSound masks:
    1 x 48 frequency, 4 x 48 time), no time shift; video (official configs, the paper is silent):
    random crop, scale jitter 0.9-1.33, horizontal flip, colour augmentation 0.8 / drop 0.1;
    input 32 frames at stride 2 (Table 16) where the checkpoint has the paper's pretraining input
    (16 at stride 4); any other input (CPU presets) is kept, audio length included.

Tables 17 (Epic Kitchens) and 18 (AudioSet) differ from Table 16 in the lr (1.2 at 64, 1.6 at
128), the batch (64, 128), audio-only mixup (1.25), random time shifting (on), SpecAugment (the
official AudioSet masks, 2 x 36 frequency) and, Table 18, 10 s of audio (the preset's:
`audioset-large`, or --set data.audio_seconds=10); `--recipe vggsound|audioset|epic-kitchens`
gives each (recipes.py; `avmae info --recipe NAME` lists every field).

MBT trains on each modality's logits: each modality gets its own loss against its own mixed targets
and the losses are averaged (official mbt.py, `mixmod`); evaluation averages the logits.

Labels (`finetune.label_column`): "label" softmax cross-entropy; "labels" multi-label sigmoid
cross-entropy (summed over classes, averaged over clips, so the SGD rates above apply unchanged);
"verb,noun" two heads, each a softmax cross-entropy, averaged with equal weights (Sec. 4.1; official
mbt.py averages the heads' losses).

The loop is pretrain.py's (training/loop.py, run by a `Finetuning` object's `train()`): DDP, accumulation, per-step seeds, atomic
checkpoints, exact resume. Additionally, at every checkpoint the model is validated on VAL (one
centre view per clip, to keep it cheap; `avmae evaluate` uses finetune.views views) and the
checkpoint with the best primary metric (top1 / mAP / action_top1) is kept as RUN/checkpoints/best,
with the validation data it was chosen on (`val_data` in its val_metrics.json and in every
checkpoint's metadata). VAL must not be the test split: `avmae manifest` writes val.csv, a hold-out
of the training annotations, for it; `avmae evaluate RUN` evaluates the last checkpoint unless told
`--checkpoint best`.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F

from avmae import runtime
from avmae.checkpoint import BEST_NAME, FINETUNE_KIND, PRETRAIN_KIND, load_weights, save_best, warn, writing
from avmae.config import (
    FINETUNE_INPUT,
    Config,
    ConfigError,
    build_config,
    parse_overrides,
    plural,
    set_value,
)
from avmae.data.dataset import build_dataset, build_loader, build_train_loader
from avmae.data.storage import data_exists
from avmae.data.manifest import load_vocab, num_classes, save_vocab, select_columns
from avmae.evaluation.evaluate import (
    PRIMARY_METRIC,
    checkpoint_metadata,
    dataset_config,
    evaluate_model,
    label_task,
)
from avmae.models.classifier import build_classifier, param_groups_lrd
from avmae.models.loading import head_sizes
from avmae.models.init_from_pretrained import init_classifier_from_avmae
from avmae.recipes import TABLE_16, recipe_overrides
from avmae.run_dir import RunLog, claim_run_dir, write_config
from avmae.runtime import autocast, use_fast_math
from avmae.training.augment import (
    augment_spectrogram,
    mixup_modalities,
    one_hot,
    smooth_labels,
)
from avmae.training.loop import (
    fit_global_batch,
    load_resume,
    lr_summary,
    model_inputs,
    resolve_budget,
    save_training_checkpoint,
    train_loop,
    wrap_model,
)
from avmae.training.optim import build_optimizer, scaled_lr

# Finetuning's recipe replaces the pretraining one the checkpoint carries: Table 16 (VGGSound),
# every row of it (recipes.TABLE_16, with the official VGGSound config where the paper is silent).
# The batch is never the checkpoint's: Table 16's global batch of 64 (train.global_batch), shared
# by the processes in micro-batches of at most 8 clips each (the memory cap, train.batch_size),
# gradient accumulation filling the rest; `--set train.batch_size=B` instead makes the global
# batch B x train.accum_steps x processes.
FINETUNE_DEFAULTS = {
    **TABLE_16,
    "train.batch_size": 8,
    "train.accum_steps": 1,
}
BATCH_KEYS = ("train.batch_size", "train.accum_steps")
LOSS_KEYS = {"single": ["loss"], "multi": ["loss"], "verb_noun": ["loss", "loss_verb", "loss_noun"]}
# The paper's pretraining input becomes its finetuning input (Table 16: 32 frames; official configs:
# stride 2, the same 2.56 s at 25 fps). Other inputs (CPU presets, --set) are the user's and are kept.
PRETRAIN_INPUT = {"data.num_frames": 16, "data.frame_stride": 4}


def finetune_config(base: Config, modality: str | None = None,
                    overrides: list[str] | None = None, recipe: str | None = None) -> Config:
    """base (a pretraining checkpoint's config, or a preset) <- finetuning defaults (Table 16,
    FINETUNE_DEFAULTS; the paper's pretraining input becomes its finetuning input) <- recipe <-
    modality <- overrides; for audio-only, finetune.mixup_alpha_audio replaces mixup_alpha unless
    --set gives mixup_alpha. The batch is the recipe's global batch (train.global_batch, split
    over the processes at run time by `fit_global_batch`) unless --set gives train.batch_size or
    train.accum_steps (then global_batch is 0 and the batch is exactly what was set); it is never
    the pretraining run's."""
    cfg = copy.deepcopy(base)
    for key, value in FINETUNE_DEFAULTS.items():
        set_value(cfg, key, value)
    if all(getattr(cfg.data, k.split(".")[1]) == v for k, v in PRETRAIN_INPUT.items()):
        for key, value in FINETUNE_INPUT.items():
            set_value(cfg, key, value)
    for key, value in recipe_overrides(recipe, "finetune").items():
        set_value(cfg, key, value)
    keys = {k for k, _ in parse_overrides(overrides)}
    if modality is not None:
        set_value(cfg, "finetune.modality", modality)
    cfg = build_config(None, overrides, base=cfg)
    if any(k in keys for k in BATCH_KEYS) and "train.global_batch" not in keys:
        cfg.train.global_batch = 0  # the user's batch: B x accum x processes, as given
    if modality is not None and cfg.finetune.modality != modality:
        raise ConfigError(f"--modality {modality} contradicts --set finetune.modality="
                          f"{cfg.finetune.modality}: give one of them")
    if cfg.finetune.modality == "audio" and "finetune.mixup_alpha" not in keys:
        cfg.finetune.mixup_alpha = cfg.finetune.mixup_alpha_audio
    return cfg


def finetune(init: str | None, data: str, val: str, out: str, *, modality: str | None = None,
             preset: str | None = None, overrides: list[str] | None = None, resume: bool = False,
             overwrite: bool = False, device: str = "auto", recipe: str | None = None,
             vocab: str | None = None) -> Path:
    """Finetune a classifier on `data`, validating on `val`; returns the run folder.

    init: an AV-MAE pretraining run / checkpoint, or "scratch" (then `preset` gives the sizes);
    ignored with resume=True (the run's own config, --set overrides on top). modality: audio,
    video or av (default: the config's finetune.modality). recipe: a dataset recipe (recipes.py).
    vocab: a vocabulary JSON file (default: the sorted labels of `data`). A run already in `out` is
    continued (resume=True) or replaced (overwrite=True), never written over otherwise.
    """
    run_dir = Path(out)
    for flag, path in (("--data", data), ("--val", val)):
        if not data_exists(path):
            raise ConfigError(f"{flag} '{path}' does not exist: give a CSV manifest or a shards folder "
                              "(`avmae synth DIR` makes a dataset)")
    with claim_run_dir(run_dir, resume=resume, overwrite=overwrite):
        init_weights, init_cfg, init_kind, stored = None, None, None, None
        weights, state = None, None
        if resume:
            if recipe is not None or vocab is not None:
                raise ConfigError("--resume continues a run with its own config and vocabulary: drop "
                                  "--recipe / --vocab (change single fields with --set)")
            weights, state, cfg, ckpt = load_resume(run_dir, FINETUNE_KIND)
            if modality is not None and modality != cfg.finetune.modality:
                raise ConfigError(f"--resume: the run finetunes modality {cfg.finetune.modality}, "
                                  f"not {modality}")
            cfg = build_config(None, overrides, base=cfg)
            stored = checkpoint_metadata(ckpt)
        else:
            if init is None:
                raise ConfigError("--init is required: an AV-MAE pretraining run or checkpoint, or "
                                  "`scratch` with --preset")
            if init == "scratch":
                if preset is None:
                    raise ConfigError("--init scratch needs --preset for the model and input sizes "
                                      "(see `avmae presets`)")
                base = build_config(preset)
            else:
                if preset is not None:
                    raise ConfigError("--preset is only for --init scratch: a checkpoint's own "
                                      "config gives the sizes (change other fields with --set)")
                # a run folder: its newest checkpoint whose weights verify
                init_weights, base, init_kind, _ = load_weights(init, purpose="--init")
                if init_kind != PRETRAIN_KIND:  # refused before a classifier of its size is built
                    raise ConfigError(f"--init '{init}' is an {init_kind} checkpoint, not an AV-MAE "
                                      "pretraining one: finetune from a pretraining run; evaluate a "
                                      "finetuned one with `avmae evaluate`")
                init_cfg = base
            cfg = finetune_config(base, modality, overrides, recipe)
        given_vocab = load_vocab(vocab) if vocab is not None else None
        d = runtime.setup(device)
        try:
            run = Finetuning(cfg, data, val, run_dir, d, init=str(init), init_weights=init_weights,
                             init_cfg=init_cfg, init_kind=init_kind, weights=weights, state=state,
                             stored=stored, given_vocab=given_vocab)
            run.setup()
            return run.train()
        finally:
            runtime.teardown()


class Finetuning:
    """One finetuning run on this process: `setup` builds the datasets and vocabulary, the
    classifier (initialised from `init_weights`, an AV-MAE's, or at random), the optimiser, the
    resumed state (`weights`, `state` and the `stored` metadata of a checkpoint) and the loader;
    `train` runs the shared loop (training.loop.train_loop) with `micro_step` and `save` (validate,
    checkpoint, keep the best). Returns the run folder."""

    def __init__(self, cfg: Config, data: str, val: str, run_dir: Path, dist: runtime.Dist, *,
                 init: str, init_weights: dict[str, torch.Tensor] | None = None,
                 init_cfg: Config | None = None, init_kind: str | None = None,
                 weights: dict[str, torch.Tensor] | None = None, state: dict | None = None,
                 stored: dict | None = None, given_vocab: dict | None = None):
        self.cfg, self.t, self.f = cfg, cfg.train, cfg.finetune
        self.data, self.val, self.run_dir, self.d, self.init = data, val, run_dir, dist, init
        self.init_weights, self.init_cfg, self.init_kind = init_weights, init_cfg, init_kind
        self.weights, self.state, self.stored, self.given_vocab = weights, state, stored, given_vocab

    def setup(self) -> None:
        cfg, t, f, d, run_dir = self.cfg, self.t, self.f, self.d, self.run_dir
        weights, state, stored, given_vocab = self.weights, self.state, self.stored, self.given_vocab
        self.task = task = label_task(f.label_column)
        self.metric = PRIMARY_METRIC[task]
        self.data_cfg = data_cfg = dataset_config(cfg)
        # The vocabulary comes from the training data (a resumed run keeps the one it started with).
        # A given vocabulary file (e.g. `avmae manifest`'s, in the official class order) may hold more
        # columns than this run's label spec: the run takes its own.
        vocab = json.loads(stored["vocab"]) if stored else \
            None if given_vocab is None else select_columns(given_vocab, f.label_column)
        train_set = build_dataset(self.data, data_cfg, train=True, label_column=f.label_column,
                                  vocab=vocab, device=self.d.device)
        vocab = train_set.vocab
        self.val_set = val_set = build_dataset(self.val, data_cfg, train=False,
                                               label_column=f.label_column, vocab=vocab,
                                               device=self.d.device)
        self.classes = classes = num_classes(vocab)

        torch.manual_seed(t.seed)  # identical new heads (and scratch weights) on every rank
        self.model = model = build_classifier(cfg, head_sizes(classes))
        report = init_classifier_from_avmae(model, self.init_weights, self.init_cfg, self.init_kind)
        self.init_weights = None
        model.to(d.device)
        self.modalities = model.modalities
        fit_global_batch(t, d.world_size)  # the recipe's global batch -> per-process batch x accum
        first = build_loader(train_set, data_cfg, train=True, batch_size=t.batch_size, rank=d.rank,
                             world_size=d.world_size, seed=t.seed, epoch=0)
        self.budget = budget = resolve_budget(t, first.batches_per_epoch, d.world_size)
        del first
        self.peak_lr = peak_lr = scaled_lr(t.base_lr, budget.global_batch, t.lr_batch)
        self.optimizer = optimizer = build_optimizer(
            param_groups_lrd(model, peak_lr, t.weight_decay, f.layer_decay), t, peak_lr)
        step, best = 0, None
        if weights is not None:
            model.load_state_dict(weights)
            optimizer.load_state_dict(state["optimizer"])
            step, best = int(state["step"]), state.get("best")
        self.step, self.best = step, best
        self.ddp, self.forward = wrap_model(model, t, d)
        use_fast_math(d.device)
        # Everything `avmae evaluate` needs to rebuild the classifier from a checkpoint alone.
        self.metadata = {"label_column": f.label_column, "task": task,
                         "num_classes": json.dumps(classes), "vocab": json.dumps(vocab),
                         "init": stored["init"] if stored else self.init,
                         # the data `best` is chosen on (never evaluate `best` on it)
                         "val_data": stored.get("val_data", str(self.val)) if stored else str(self.val)}

        if d.is_main:
            write_config(run_dir, cfg)
            with writing(run_dir / "vocab.json", run_dir):
                save_vocab(vocab, run_dir / "vocab.json")
        self.log = log = RunLog(run_dir, d.is_main, budget.total_steps, step, "finetune")
        if weights is None:
            log.print(f"init from {self.init}: {report.summary()}")
            if d.is_main:
                for line in report.warnings:
                    warn(line)
        log.print(f"finetuning {f.modality} ({f.architecture}, {f.label_column}: "
                  f"{'+'.join(map(str, classes))} classes) on {len(train_set)} clips, validating on "
                  f"{len(val_set)} ({self.val}); {plural(budget.total_steps, 'step')} of global batch "
                  f"{budget.global_batch} = {t.batch_size} x {t.accum_steps} accumulated x "
                  f"{d.world_size} {d.device.type} process(es)"
                  + (f" (train.global_batch {t.global_batch})" if t.global_batch else
                     " (train.batch_size as set)")
                  + f"; {lr_summary(t, budget.global_batch, peak_lr)}")
        log.write(train_set.jpeg_decode)  # where the shards' JPEG frames are decoded, and why
        # One loader for the rest of the run (its workers live as long), from this step's batch on.
        self.batches = iter(build_train_loader(train_set, data_cfg, batch_size=t.batch_size, rank=d.rank,
                                               world_size=d.world_size, seed=t.seed,
                                               per_epoch=budget.steps_per_epoch * t.accum_steps,
                                               start=step * t.accum_steps,
                                               total=budget.total_steps * t.accum_steps))

    def train(self) -> Path:
        d, run_dir, log, f, metric = self.d, self.run_dir, self.log, self.f, self.metric
        train_loop(t=self.t, d=d, budget=self.budget, run_dir=run_dir, model=self.model,
                             ddp=self.ddp, optimizer=self.optimizer, peak_lr=self.peak_lr,
                             step=self.step, batches=self.batches, log=log,
                             modalities=self.modalities, loss_keys=LOSS_KEYS[self.task],
                             micro_step=self.micro_step, save=self.save)
        if d.is_main:
            from avmae.evaluation.figures import loss_curve
            with writing(run_dir / "loss_curve.png", run_dir):
                path = loss_curve(run_dir)
            best = self.best
            found = f"best val {metric} {best['value']:.4f} on {best.get('data', self.val)} at step " \
                    f"{best['step']} ({run_dir / 'checkpoints' / BEST_NAME})" if best else "no validation score"
            log.print(f"{found}; `avmae evaluate {run_dir} --data TEST` evaluates the last "
                      f"checkpoint (`--checkpoint best` the best on validation: on data other than "
                      f"{self.val}), averaging {f.views} views per clip"
                      + (f"; loss curve: {path}" if path else ""))
        runtime.barrier(d)  # every rank leaves the process group together (teardown races)
        return run_dir

    def micro_step(self, batch: dict, empty: bool, step: int, generator) -> tuple[torch.Tensor, dict]:
        """One micro-batch's loss: augmentation and mixup drawn from `generator`, label smoothing,
        MBT's per-modality loss (train_loop's `micro_step`)."""
        t, f, d, task = self.t, self.f, self.d, self.task
        inputs = model_inputs(batch, self.modalities, d.device)
        targets = soft_targets(batch["label"].to(d.device, non_blocking=True), task, self.classes)
        if "audio" in inputs:
            inputs["audio"] = augment_spectrogram(inputs["audio"], f, generator,
                                                  fill=self.cfg.data.audio_fill)
        inputs, targets, _, _ = mixup_modalities(inputs, targets, f.mixup_alpha, generator)
        targets = {m: smooth(x, f.label_smoothing) for m, x in targets.items()}
        with autocast(t.amp, d.device):
            logits = self.forward(**inputs, per_modality=True)
        loss, parts = per_modality_loss(logits, targets, task)
        loss = loss * (0.0 if empty else 1.0)
        return loss, {"loss": loss, **parts}

    def save(self, step: int, epoch: int, stopping: bool) -> None:
        """train_loop's `save`: validate (not on a stop request: a preemption saves at once and
        validation waits for the resume), then checkpoint."""
        scores = None if stopping else self.validate(step, epoch)
        self.checkpoint(step, epoch, scores)

    def validate(self, step: int, epoch: int) -> dict | None:
        """Metrics on VAL, one centre view per clip (cheap; `avmae evaluate` averages more views)."""
        data_cfg, log = self.data_cfg, self.log
        try:
            scores = evaluate_model(self.model, self.val_set, data_cfg, self.task, self.classes,
                                    self.d, batch_size=data_cfg.train.batch_size)
        except ValueError as err:  # e.g. no readable clip, or no class with a positive (mAP)
            log.print(f"step {step}: validation skipped: {err}")
            return None
        log.write({"step": step, "epoch": epoch, **{f"val_{k}": v for k, v in scores.items()}})
        shown = ", ".join(f"{k} {v:.4f}" for k, v in scores.items() if not k.startswith("clips"))
        log.print(f"step {step}: val {shown} ({scores['clips_evaluated']} clips, "
                  f"{scores['clips_skipped']} unreadable)")
        return scores

    def checkpoint(self, step: int, epoch: int, scores: dict | None) -> None:
        """Save the step's checkpoint (best-so-far in its state, for resume); update `self.best`
        and, when this step improved it, RUN/checkpoints/best."""
        d, run_dir, metric, best = self.d, self.run_dir, self.metric, self.best
        value = None if scores is None else scores[metric]
        improved = value is not None and math.isfinite(value) and (best is None or value > best["value"])
        if improved:
            self.best = best = {"metric": metric, "value": float(value), "step": step,
                                "data": self.metadata["val_data"]}
        if d.is_main:
            path = save_training_checkpoint(run_dir, step, self.model, self.cfg, FINETUNE_KIND, self.optimizer,
                                            {"epoch": epoch, "best": best}, self.metadata)
            if improved:
                save_best(run_dir, path, step, {**scores, "metric": metric,
                                                "val_data": self.metadata["val_data"]})
            self.log.print(f"step {step}: checkpoint {path}" + (" (best so far)" if improved else ""))
        runtime.barrier(d)


# ---- targets and losses ---------------------------------------------------------------------

def soft_targets(labels: torch.Tensor, task: str, classes: list[int]):
    """The dataset's labels as float class-probability targets, for mixup and smoothing:
    single (B,) -> (B, C) one-hot; multi (B, C) multi-hot as is; verb_noun (B, 2) -> a tuple."""
    if task == "multi":
        return labels.float()
    if task == "verb_noun":
        return tuple(one_hot(labels[:, i], c) for i, c in enumerate(classes))
    return one_hot(labels, classes[0])


def smooth(targets, smoothing: float):
    """Label smoothing (Tables 16-18: 0.3) of one target tensor or of each head's."""
    if isinstance(targets, tuple):
        return tuple(smooth_labels(x, smoothing) for x in targets)
    return smooth_labels(targets, smoothing)


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Softmax cross-entropy with soft targets: mean over clips of -sum_c t_c log p_c."""
    return -(targets * F.log_softmax(logits.float(), dim=-1)).sum(dim=-1).mean()


def classification_loss(logits, targets, task: str) -> tuple[torch.Tensor, dict]:
    """(loss, per-head parts for the log). logits (B, C) or (verb, noun); targets alike."""
    if task == "verb_noun":
        verb = soft_cross_entropy(logits[0], targets[0])
        noun = soft_cross_entropy(logits[1], targets[1])
        # Equal weights (Sec. 4.1), averaged as the official mbt.py does (a sum would double the
        # gradient, i.e. the learning rate, of the shared trunk).
        return (verb + noun) / 2, {"loss_verb": verb, "loss_noun": noun}
    if task == "multi":  # sigmoid cross-entropy summed over classes, averaged over clips
        per_class = F.binary_cross_entropy_with_logits(logits.float(), targets, reduction="none")
        return per_class.sum(dim=-1).mean(), {}
    return soft_cross_entropy(logits, targets), {}


def per_modality_loss(logits: dict, targets: dict, task: str) -> tuple[torch.Tensor, dict]:
    """MBT's training loss: each modality's logits against that modality's (mixed) targets, the
    losses averaged over modalities (official mbt.py). logits, targets: {modality: ...}."""
    results = [classification_loss(logits[m], targets[m], task) for m in logits]
    n = len(results)
    loss = sum(r[0] for r in results) / n
    parts = {k: sum(r[1][k] for r in results) / n for k in results[0][1]}
    return loss, parts
