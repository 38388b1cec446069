"""`avmae pretrain`: the AV-MAE pretraining loop (paper Sec. 4.1, Table 14).

One flat loop: per optimiser step, `accum_steps` micro-batches are encoded with fresh masks, the
loss of Eq. 1 is backpropagated, and AdamW (betas 0.9, 0.95) steps with lr = base_lr x
global_batch / lr_batch (3e-4 at 512, Table 14) under a per-step warm-up + cosine schedule. Runs on
one CPU, one GPU, or many processes under torchrun (DDP). Checkpoints are atomic and a resumed run continues exactly
(see training.py for how every random stream is derived from the seed and the step).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from avmae import runtime
from avmae.checkpoint import PRETRAIN_KIND, load_weights, writing
from avmae.cli.info import add_config_arguments
from avmae.config import Config, ConfigError, build_config
from avmae.data.dataset import build_dataset, build_loader, build_train_loader
from avmae.models.avmae import AVMAE
from avmae.models.masking import sample_noise
from avmae.recipes import add_recipe_argument, recipe_overrides
from avmae.run_dir import RunLog, add_run_dir_arguments, claim_run_dir, write_config
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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, preset_required=False)
    add_recipe_argument(parser)
    parser.add_argument("--data", required=True, help="a CSV manifest or a shards folder")
    parser.add_argument("--out", required=True, help="the run folder")
    add_run_dir_arguments(parser)
    parser.add_argument("--init", metavar="CKPT_OR_RUN",
                        help="start from the weights of an AV-MAE pretraining checkpoint (e.g. an "
                             "`avmae import-scenic` run) on your data: its config, a fresh optimiser")
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu or cuda")
    parser.add_argument("--knn-data", metavar="LABELLED",
                        help="with --knn-val: at each checkpoint, log the k-NN top-1 of the frozen "
                             "features (labelled clips of LABELLED as the bank, scored on --knn-val; "
                             "`avmae probe`'s k-NN) to metrics.jsonl and the console")
    parser.add_argument("--knn-val", metavar="VAL", help="labelled clips the k-NN monitor scores")


def run(args: argparse.Namespace) -> int:
    init = None
    if (args.knn_data is None) != (args.knn_val is None):
        raise ConfigError("--knn-data and --knn-val go together: the labelled bank and the clips it scores")
    if args.resume:
        if args.init:
            raise ConfigError("--init starts a new run and --resume continues one: give one of them")
        if args.recipe is not None:
            raise ConfigError("--resume continues a run with its own config: drop --recipe "
                              "(change single fields with --set)")
        cfg = None  # taken from the checkpoint; --set still applies on top
    elif args.init:
        if args.preset is not None:
            raise ConfigError("--init takes the model and input from the checkpoint; drop --preset "
                              "(--set still applies)")
        init, cfg, kind, _ = load_weights(args.init)
        if kind != PRETRAIN_KIND:
            raise ConfigError(f"--init '{args.init}' is a finetuned classifier, not an AV-MAE "
                              "pretraining checkpoint")
        cfg = build_config(None, args.overrides, base=cfg, recipe=recipe_overrides(args.recipe, "pretrain"))
    else:
        if args.preset is None:
            raise ConfigError("--preset is required (see `avmae presets`), unless --resume or --init")
        cfg = build_config(args.preset, args.overrides,
                           recipe=recipe_overrides(args.recipe, "pretrain"))
    knn = (args.knn_data, args.knn_val) if args.knn_data is not None else None
    pretrain(cfg, args.data, args.out, resume=args.resume, overwrite=args.overwrite,
             device=args.device, overrides=args.overrides, init=init, knn=knn)
    return 0



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
    if not Path(data).exists():
        raise ConfigError(f"--data '{data}' does not exist: give a CSV manifest or a shards folder "
                          "(`avmae synth DIR` makes a dataset)")
    with claim_run_dir(run_dir, resume=resume, overwrite=overwrite):
        weights, state = None, None
        if resume:
            weights, state, cfg, ckpt = load_resume(run_dir, PRETRAIN_KIND)
            cfg = build_config(None, overrides, base=cfg)
        d = runtime.setup(device)
        try:
            return _pretrain(cfg, data, run_dir, d, weights, state, init, knn)
        finally:
            runtime.teardown()


def _pretrain(cfg: Config, data: str, run_dir: Path, d: runtime.Dist, weights, state, init=None,
              knn: tuple[str, str] | None = None) -> Path:
    t = cfg.train
    torch.manual_seed(t.seed)  # identical initial weights on every rank
    model = AVMAE(cfg.model).to(d.device)
    modalities = model.modalities
    dataset = build_dataset(data, cfg, train=True)
    first = build_loader(dataset, cfg, train=True, batch_size=t.batch_size, rank=d.rank,
                         world_size=d.world_size, seed=t.seed, epoch=0)
    budget = resolve_budget(t, first.batches_per_epoch, d.world_size)
    del first
    peak_lr = scaled_lr(t.base_lr, budget.global_batch, t.lr_batch)
    optimizer = build_optimizer(param_groups_weight_decay(model, t.weight_decay), t, peak_lr)
    step = 0
    if init is not None:  # new run from given weights (every rank loads the same file)
        model.load_state_dict(init)
    if weights is not None:
        model.load_state_dict(weights)
        optimizer.load_state_dict(state["optimizer"])
        step = int(state["step"])
    ddp, forward = wrap_model(model, t, d)
    use_fast_math(d.device)

    if d.is_main:
        write_config(run_dir, cfg)
    figure_batch = _figure_batch(data, cfg) if d.is_main and t.figure_clips > 0 else None
    monitor = None
    if knn is not None and d.is_main:
        from avmae.evaluation.probe import KnnMonitor
        monitor = KnnMonitor(*knn, cfg, d.device)
    log = RunLog(run_dir, d.is_main, budget.total_steps, step, "pretrain")
    log.print(f"pretraining {cfg.model.encoder} encoder / {cfg.model.decoder} decoder, "
              f"{cfg.model.objective} objective on {len(dataset)} clips; {budget.total_steps} steps "
              f"of global batch {budget.global_batch} on {d.world_size} x {d.device.type}; "
              f"{lr_summary(t, budget.global_batch, peak_lr)}")
    # One loader for the rest of the run (its workers live as long), from this step's batch on.
    batches = iter(build_train_loader(dataset, cfg, batch_size=t.batch_size, rank=d.rank,
                                      world_size=d.world_size, seed=t.seed,
                                      per_epoch=budget.steps_per_epoch * t.accum_steps,
                                      start=step * t.accum_steps,
                                      total=budget.total_steps * t.accum_steps))

    def micro_step(batch: dict, empty: bool, step: int, generator) -> tuple[torch.Tensor, dict]:
        inputs = model_inputs(batch, modalities, d.device)
        noise = model_inputs(masking_noise(model, inputs, batch["index"], t.seed, step),
                             modalities, d.device)
        present = model_inputs({m: batch[f"has_{m}"] for m in modalities}, modalities, d.device)
        with autocast(t.amp, d.device):
            result = forward(**inputs, noise=noise, present=present)
        return result["loss"] * (0.0 if empty else 1.0), result

    def save(step: int, epoch: int, stopping: bool) -> None:
        _checkpoint(run_dir, step, model, cfg, optimizer, epoch, d, log, figure_batch, monitor)

    stopped = train_loop(t=t, d=d, budget=budget, run_dir=run_dir, model=model, ddp=ddp,
                         optimizer=optimizer, peak_lr=peak_lr, step=step, batches=batches, log=log,
                         modalities=modalities, loss_keys=["loss", *(f"loss_{m}" for m in modalities)],
                         micro_step=micro_step, save=save)
    if stopped:
        return run_dir
    if d.is_main:
        from avmae.evaluation.figures import loss_curve
        with writing(run_dir / "loss_curve.png", run_dir):
            path = loss_curve(run_dir)
        log.print(_loss_summary(run_dir) + (f"; loss curve: {path}" if path else ""))
    runtime.barrier(d)  # every rank leaves the process group together (teardown races)
    return run_dir





def _checkpoint(run_dir, step, model, cfg, optimizer, epoch, d, log, figure_batch, monitor) -> None:
    if d.is_main:
        path = save_training_checkpoint(run_dir, step, model, cfg, PRETRAIN_KIND, optimizer, {"epoch": epoch})
        if monitor is not None:
            knn = monitor(model)
            log.write({"step": step, **knn})
            shown = ", ".join(f"{k} {v:.4f}" for k, v in knn.items() if isinstance(v, float))
            log.print(f"step {step}: k-NN monitor on {monitor.val}: {shown}")
        if figure_batch is not None:
            from avmae.evaluation.figures import reconstruction_figure
            fig = run_dir / "figures" / f"reconstruction_step{step:07d}.png"
            with writing(fig, run_dir):
                reconstruction_figure(model, figure_batch, fig)
            log.print(f"step {step}: checkpoint {path}, reconstructions {fig}")
    runtime.barrier(d)


def _figure_batch(data: str, cfg: Config) -> dict | None:
    """The first few clips of the dataset, centre windows: the same clips at every checkpoint."""
    dataset = build_dataset(data, cfg, train=False)
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
