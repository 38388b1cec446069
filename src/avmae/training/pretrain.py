"""`avmae pretrain`: the AV-MAE pretraining loop (paper Sec. 4.1, Table 14).

One flat loop: per optimiser step, `accum_steps` micro-batches are encoded with fresh masks, the
loss of Eq. 1 is backpropagated, and AdamW (betas 0.9, 0.95) steps with lr = base_lr x
global_batch / lr_batch (3e-4 at 512, Table 14) under a per-step warm-up + cosine schedule. Runs on
one CPU, one GPU, or many processes under torchrun (DDP). Checkpoints are atomic and a resumed run continues exactly
(see training/loop.py for how every random stream is derived from the seed and the step).
"""

from __future__ import annotations

from pathlib import Path

import torch

from avmae import runtime
from avmae.checkpoint import PRETRAIN_KIND, writing
from avmae.config import Config, ConfigError, build_config, plural
from avmae.data.dataset import build_dataset, build_loader, build_train_loader
from avmae.data.storage import data_exists
from avmae.models.avmae import AVMAE
from avmae.models.masking import sample_noise
from avmae.run_dir import RunLog, claim_run_dir, write_config
from avmae.runtime import autocast, use_fast_math
from avmae.training.loop import (
    load_resume,
    lr_summary,
    model_inputs,
    resolve_budget,
    save_training_checkpoint,
    train_loop,
    wrap_model,
)
from avmae.training.optim import build_optimizer, param_groups_weight_decay, scaled_lr

MODALITY_SEED = {"audio": 1, "video": 2}


def masking_noise(model: AVMAE, inputs: dict, indices: torch.Tensor, seed: int, step: int) -> dict:
    """Per-clip masking noise keyed by (seed, step, clip, modality): DDP- and resume-invariant."""
    noise = {}
    for m, x in inputs.items():
        n = 1
        for g in model.patch_embed[m].grid(x):
            n *= g
        keys = [(seed, step, int(i), MODALITY_SEED[m]) for i in indices.numpy()]  # host data
        noise[m] = sample_noise(keys, n)
    return noise


def pretrain(cfg: Config | None, data: str, out: str, *, resume: bool = False,
             overwrite: bool = False, device: str = "auto", overrides: list[str] | None = None,
             init: dict[str, torch.Tensor] | None = None, knn: tuple[str, str] | None = None) -> Path:
    """Pretrain into the run folder `out`: a new one, or with resume=True the run it holds
    (continued from its newest checkpoint that verifies), or with overwrite=True a new run
    replacing it. Another process writing `out` at the same time is refused. `init` (a state dict)
    starts a new run from given weights at step 0. `knn` (labelled bank, scored clips) adds the
    k-NN monitor (probe.KnnMonitor) at each checkpoint."""
    run_dir = Path(out)
    if not data_exists(data):
        raise ConfigError(f"--data '{data}' does not exist: give a CSV manifest or a shards folder "
                          "(`avmae synth DIR` makes a dataset)")
    with claim_run_dir(run_dir, resume=resume, overwrite=overwrite):
        weights, state = None, None
        if resume:
            weights, state, cfg, ckpt = load_resume(run_dir, PRETRAIN_KIND)
            cfg = build_config(None, overrides, base=cfg)
        d = runtime.setup(device)
        try:
            run = Pretraining(cfg, data, run_dir, d, weights=weights, state=state, init=init, knn=knn)
            run.setup()
            return run.train()
        finally:
            runtime.teardown()


class Pretraining:
    """One pretraining run on this process: `setup` builds the dataset, the model, the optimiser,
    the resumed state (`weights`, `state` of a checkpoint) or the given `init` weights, the
    monitors and the loader; `train` runs the shared loop (training.loop.train_loop) with
    `micro_step` and `save`, then writes the loss curve. Returns the run folder."""

    def __init__(self, cfg: Config, data: str, run_dir: Path, dist: runtime.Dist, *,
                 weights: dict[str, torch.Tensor] | None = None, state: dict | None = None,
                 init: dict[str, torch.Tensor] | None = None, knn: tuple[str, str] | None = None):
        self.cfg, self.t, self.data, self.run_dir, self.d = cfg, cfg.train, data, run_dir, dist
        self.weights, self.state, self.init, self.knn = weights, state, init, knn

    def setup(self) -> None:
        cfg, t, d, run_dir, state = self.cfg, self.t, self.d, self.run_dir, self.state
        torch.manual_seed(t.seed)  # identical initial weights on every rank
        self.model = model = AVMAE(cfg.model).to(d.device)
        self.modalities = model.modalities
        self.dataset = dataset = build_dataset(self.data, cfg, train=True, device=d.device)
        first = build_loader(dataset, cfg, train=True, batch_size=t.batch_size, rank=d.rank,
                             world_size=d.world_size, seed=t.seed, epoch=0)
        self.budget = budget = resolve_budget(t, first.batches_per_epoch, d.world_size)
        del first
        self.peak_lr = peak_lr = scaled_lr(t.base_lr, budget.global_batch, t.lr_batch)
        self.optimizer = optimizer = build_optimizer(param_groups_weight_decay(model, t.weight_decay),
                                                     t, peak_lr)
        step = 0
        if self.init is not None:  # new run from given weights (every rank loads the same file)
            model.load_state_dict(self.init)
        if self.weights is not None:
            model.load_state_dict(self.weights)
            optimizer.load_state_dict(state["optimizer"])
            step = int(state["step"])
        self.step = step
        self.ddp, self.forward = wrap_model(model, t, d)
        use_fast_math(d.device)

        if d.is_main:
            write_config(run_dir, cfg)
        self.figure_batch = _figure_batch(self.data, cfg) if d.is_main and t.figure_clips > 0 else None
        self.monitor = None
        if self.knn is not None and d.is_main:
            from avmae.evaluation.probe import KnnMonitor
            self.monitor = KnnMonitor(*self.knn, cfg, d.device)
        self.log = log = RunLog(run_dir, d.is_main, budget.total_steps, step, "pretrain")
        log.print(f"pretraining {cfg.model.encoder} encoder / {cfg.model.decoder} decoder, "
                  f"{cfg.model.objective} objective on {len(dataset)} clips; {plural(budget.total_steps, 'step')} "
                  f"of global batch {budget.global_batch} on {d.world_size} x {d.device.type}; "
                  f"{lr_summary(t, budget.global_batch, peak_lr)}")
        log.write(dataset.jpeg_decode)  # where the shards' JPEG frames are decoded, and why
        # One loader for the rest of the run (its workers live as long), from this step's batch on.
        self.batches = iter(build_train_loader(dataset, cfg, batch_size=t.batch_size, rank=d.rank,
                                               world_size=d.world_size, seed=t.seed,
                                               per_epoch=budget.steps_per_epoch * t.accum_steps,
                                               start=step * t.accum_steps,
                                               total=budget.total_steps * t.accum_steps))

    def train(self) -> Path:
        d, run_dir, log, modalities = self.d, self.run_dir, self.log, self.modalities
        train_loop(t=self.t, d=d, budget=self.budget, run_dir=run_dir, model=self.model,
                             ddp=self.ddp, optimizer=self.optimizer, peak_lr=self.peak_lr,
                             step=self.step, batches=self.batches, log=log, modalities=modalities,
                             loss_keys=["loss", *(f"loss_{m}" for m in modalities)],
                             micro_step=self.micro_step, save=self.save)
        if d.is_main:
            from avmae.evaluation.figures import loss_curve
            with writing(run_dir / "loss_curve.png", run_dir):
                path = loss_curve(run_dir)
            log.print(_loss_summary(run_dir) + (f"; loss curve: {path}" if path else ""))
        runtime.barrier(d)  # every rank leaves the process group together (teardown races)
        return run_dir

    def micro_step(self, batch: dict, empty: bool, step: int, generator) -> tuple[torch.Tensor, dict]:
        """One micro-batch's loss (Eq. 1) with masks keyed by (seed, step, clip): train_loop's
        `micro_step`. Pretraining draws nothing from `generator`."""
        t, d, modalities = self.t, self.d, self.modalities
        inputs = model_inputs(batch, modalities, d.device)
        noise = model_inputs(masking_noise(self.model, inputs, batch["index"], t.seed, step),
                             modalities, d.device)
        present = model_inputs({m: batch[f"has_{m}"] for m in modalities}, modalities, d.device)
        with autocast(t.amp, d.device):
            result = self.forward(**inputs, noise=noise, present=present)
        return result["loss"] * (0.0 if empty else 1.0), result

    def save(self, step: int, epoch: int, stopping: bool) -> None:
        """train_loop's `save`: the checkpoint, then the k-NN monitor and the reconstruction
        figure (main process); every rank waits for it."""
        d, run_dir, log, model, monitor = self.d, self.run_dir, self.log, self.model, self.monitor
        if d.is_main:
            path = save_training_checkpoint(run_dir, step, model, self.cfg, PRETRAIN_KIND, self.optimizer,
                                            {"epoch": epoch})
            if monitor is not None:
                knn = monitor(model)
                log.write({"step": step, **knn})
                shown = ", ".join(f"{k} {v:.4f}" for k, v in knn.items() if isinstance(v, float))
                log.print(f"step {step}: k-NN monitor on {monitor.val}: {shown}")
            if self.figure_batch is not None:
                from avmae.evaluation.figures import reconstruction_figure
                fig = run_dir / "figures" / f"reconstruction_step{step:07d}.png"
                with writing(fig, run_dir):
                    reconstruction_figure(model, self.figure_batch, fig)
                log.print(f"step {step}: checkpoint {path}, reconstructions {fig}")
        runtime.barrier(d)


def _figure_batch(data: str, cfg: Config) -> dict | None:
    """The first few clips of the dataset, centre windows: the same clips at every checkpoint."""
    dataset = build_dataset(data, cfg, train=False, decode_after_batch=False)  # a few clips
    samples = []
    for i in range(len(dataset)):
        s = dataset[i]
        if s is not None:
            samples.append(s)
        if len(samples) == cfg.train.figure_clips:
            break
    if not samples:
        return None
    return {k: torch.stack([s[k] for s in samples]) for k in ("audio", "video", "index")}


def _loss_summary(run_dir: Path) -> str:
    from avmae.run_dir import read_metrics
    rows = [r for r in read_metrics(run_dir) if "loss" in r]
    if not rows:
        return "no losses logged"
    first, last = rows[0], rows[-1]
    parts = [f"{k[5:]} {first[k]:.4f} -> {last[k]:.4f}" for k in first if k.startswith("loss_")]
    return f"loss {first['loss']:.4f} -> {last['loss']:.4f} (step {first['step']} -> {last['step']}; " \
           + ", ".join(parts) + ")"
