"""Optimiser, learning-rate scaling and schedule (pretraining Table 14, finetuning Tables 16-18).

- lr = base_lr x global_batch / lr_batch (linear scaling, Goyal et al. [33]): Sec. B.1 gives each
  rate "for the reported batch size", so lr_batch is that batch (pretraining 3e-4 at 512, Table 14;
  finetuning 0.8 at 64, 1.2 at 64, 1.6 at 128, Tables 16-18), not 256
- linear warm-up, then cosine decay to min_lr, evaluated per optimiser step
- no weight decay on norms, biases, position / mask / bottleneck tokens (MAE practice)
"""

from __future__ import annotations

import inspect
import math

import torch
from torch import nn

from avmae.config import TrainConfig


def scaled_lr(base_lr: float, global_batch: int, lr_batch: int) -> float:
    """The peak lr at `global_batch` for a rate `base_lr` given at a global batch of `lr_batch`."""
    return base_lr * global_batch / lr_batch


def lr_at(step: int, total_steps: int, warmup_steps: int, peak: float, min_lr: float = 0.0) -> float:
    """Learning rate of optimiser step `step` (0-based)."""
    if warmup_steps > 0 and step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_lr + (peak - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def no_weight_decay(name: str, param: nn.Parameter) -> bool:
    """Norm weights, biases and token-like parameters (1-D or named tokens) get no decay."""
    return param.ndim <= 1 or name.endswith(".bias") or "token" in name or "bottleneck" in name \
        or "modality_embed" in name or "pos_embed" in name


def param_groups_weight_decay(model: nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if no_weight_decay(name, p) else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def use_fused(groups: list[dict]) -> bool:
    """The fused (one kernel for all parameters) optimiser step: only when every parameter is on
    a CUDA device; elsewhere torch's default (foreach) implementation."""
    params = [p for g in groups for p in g["params"]]
    return bool(params) and all(p.is_cuda for p in params)


def build_optimizer(groups: list[dict], train: TrainConfig, lr: float) -> torch.optim.Optimizer:
    """AdamW (pretraining, Table 14) or SGD with momentum (finetuning, Table 16); build it after
    the model is on its device, so that CUDA runs get the fused step."""
    for g in groups:
        g.setdefault("lr_scale", 1.0)
        g["lr"] = lr * g["lr_scale"]
    fused = {"fused": True} if use_fused(groups) else {}
    if train.optimizer == "sgd":
        if "fused" not in inspect.signature(torch.optim.SGD).parameters:  # torch < 2.4
            fused = {}
        return torch.optim.SGD(groups, lr=lr, momentum=train.momentum, **fused)
    return torch.optim.AdamW(groups, lr=lr, betas=(train.beta1, train.beta2), **fused)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for g in optimizer.param_groups:
        g["lr"] = lr * g.get("lr_scale", 1.0)
