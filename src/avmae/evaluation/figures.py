"""Pictures: the paper's Figure 5 (reconstructions) and the loss curves of a run.

Figure 5, per clip: the first row shows the original input, the second the input after masking,
the third the reconstruction, with the original pasted back on the visible patches. Video frames
on the left (8 of the clip's frames), the log-mel spectrogram on the right (time across, mel bins
up).

    avmae visualize CKPT CLIP.mp4 --out FIGURE.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from avmae.models.avmae import AVMAE  # noqa: E402
from avmae.run_dir import read_metrics  # noqa: E402

FRAMES_SHOWN = 8  # the paper shows 8 of the 16 frames "for clarity"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="a pretraining run folder, checkpoint folder or .safetensors")
    parser.add_argument("clip", help="a video file with sound")
    parser.add_argument("--out", required=True, help="the PNG to write")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random masks")


def run(args: argparse.Namespace) -> int:
    from avmae.api import load_clip
    from avmae.checkpoint import PRETRAIN_KIND, writing
    from avmae.models.loading import load_model

    model, cfg, _, _, _ = load_model(args.checkpoint, expect=PRETRAIN_KIND,
                                     refusal="'{path}' is a {kind} checkpoint; visualize needs a "
                                             "pretraining checkpoint (it has the decoder)")
    batch = load_clip(args.clip, cfg)
    with writing(args.out):
        path = reconstruction_figure(model, batch, Path(args.out), seed=args.seed,
                                     title=Path(args.clip).name)
    print(path)
    return 0


def _paste(model: AVMAE, m: str, out: dict, original: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(masked input, reconstruction with visible patches pasted back), in input space."""
    patches = model.patchify(m, original)
    grid = out[f"grid_{m}"]
    mask = out[f"mask_{m}"][..., None]                         # 1 = removed from the encoder
    grey = torch.zeros_like(patches) if m == "video" else torch.full_like(patches, float(patches.min()))
    masked = model.unpatchify(m, patches * (1 - mask) + grey * mask, grid)
    if f"pred_{m}" not in out:                                 # inpainting of the other modality only
        return masked, masked
    pred = out[f"pred_{m}"].float()
    if model.cfg.norm_targets:                                 # back from per-patch normalised space
        mean, var = patches.mean(-1, keepdim=True), patches.var(-1, keepdim=True)
        pred = pred * (var + 1e-6) ** 0.5 + mean
    shown = out[f"loss_mask_{m}"][..., None]                   # positions the decoder reconstructed
    recon = model.unpatchify(m, patches * (1 - shown) + pred * shown, grid)
    return masked, recon


@torch.no_grad()
def reconstruction_figure(model: AVMAE, batch: dict, path: Path, seed: int = 0, title: str = "") -> Path:
    """Figure 5 for the clips of `batch` ({"audio": (B,1,T,F), "video": (B,3,T,H,W)})."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    inputs = {m: batch[m].to(device).float() for m in model.modalities}
    out = model(**inputs, generator=torch.Generator().manual_seed(seed))
    model.train(was_training)
    rows = {m: (inputs[m].cpu(), *[x.cpu() for x in _paste(model, m, out, inputs[m])]) for m in inputs}
    B = next(iter(inputs.values())).shape[0]
    has_v, has_a = "video" in rows, "audio" in rows
    cols = (FRAMES_SHOWN if has_v else 0) + (3 if has_a else 0)
    fig = plt.figure(figsize=(1.3 * cols + 1, 1.4 * 3 * B + 0.6))
    grid = fig.add_gridspec(3 * B, cols, wspace=0.05, hspace=0.15)
    labels = ["original", "masked", "reconstruction"]
    for b in range(B):
        for r in range(3):
            row = 3 * b + r
            if has_v:
                video = rows["video"][r][b]                            # (3, T, H, W)
                T = video.shape[1]
                for j, t in enumerate(np.linspace(0, T - 1, min(FRAMES_SHOWN, T)).round().astype(int)):
                    ax = fig.add_subplot(grid[row, j])
                    ax.imshow(((video[:, t].permute(1, 2, 0) + 1) / 2).clamp(0, 1).numpy())
                    ax.set_xticks([]), ax.set_yticks([])
                    if j == 0:
                        ax.set_ylabel(labels[r], fontsize=8)
            if has_a:
                spec = rows["audio"][r][b, 0]                          # (T_frames, F)
                ax = fig.add_subplot(grid[row, cols - 3:])
                lo, hi = rows["audio"][0][b, 0].min(), rows["audio"][0][b, 0].max()
                ax.imshow(spec.T.numpy(), origin="lower", aspect="auto", vmin=float(lo), vmax=float(hi),
                          cmap="magma")
                ax.set_xticks([]), ax.set_yticks([])
                if not has_v:
                    ax.set_ylabel(labels[r], fontsize=8)
    losses = ", ".join(f"{m} loss {float(out[f'loss_{m}']):.3f}" for m in inputs if f"loss_{m}" in out)
    fig.suptitle(f"{title + ': ' if title else ''}original / masked / reconstruction ({losses})", fontsize=9)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80, bbox_inches="tight")
    plt.close(fig)
    return path


def loss_curve(run_dir: Path) -> Path | None:
    """RUN/loss_curve.png from RUN/metrics.jsonl: the total and per-modality losses against steps."""
    rows = [r for r in read_metrics(run_dir) if "loss" in r and "step" in r]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.5))
    steps = [r["step"] for r in rows]
    for key in [k for k in rows[-1] if k.startswith("loss")]:
        ax.plot(steps, [r.get(key, np.nan) for r in rows], label=key)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(run_dir) / "loss_curve.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
