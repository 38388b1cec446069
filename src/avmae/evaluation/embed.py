"""`avmae embed CKPT INPUT... --out FEATURES.npz`: per-clip embeddings of a pretrained AV-MAE.

Each clip's embedding per modality is the mean of its encoded tokens, with no masking (the
encoder surface `forward_features`): of a pretraining model (AVMAE), or of a finetuned classifier's
streams (its modalities, before the head), as `avmae probe` reads them. A file whose clips are all
unreadable is an error and nothing is written. INPUT is a manifest CSV, a shards folder, or any number
of media files. The .npz holds `audio` and/or `video` (N, D) float32, `has_audio` / `has_video`
(False where the clip had no such stream and its input was filled with zeros), `index` (row of the
input) and `path`; unreadable clips are listed in `skipped`.
"""

from __future__ import annotations

import csv
import tempfile
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from avmae.checkpoint import writing
from avmae.config import ConfigError
from avmae.data.dataset import build_dataset, build_loader
from avmae.data.storage import is_url
from avmae.runtime import resolve_device
from avmae.models.loading import load_model


def _data_source(inputs: list[str], scratch: Path) -> str:
    """One manifest or shards folder (a path or URL) as given, or a manifest written for a list
    of media files."""
    if len(inputs) == 1 and is_url(inputs[0]):  # a shards folder on object storage
        return inputs[0]
    for p in inputs:
        if not Path(p).exists():
            raise ConfigError(f"input '{p}' does not exist")
    first = Path(inputs[0])
    if len(inputs) == 1 and (first.is_dir() or first.suffix.lower() == ".csv"):
        return inputs[0]
    if any(Path(p).is_dir() or Path(p).suffix.lower() == ".csv" for p in inputs):
        raise ConfigError("give either one manifest / shards folder, or media files, not a mix")
    manifest = scratch / "inputs.csv"
    with open(manifest, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path"])
        writer.writerows([[str(Path(p).resolve())] for p in inputs])
    return str(manifest)


@torch.no_grad()
def pooled_batches(model: torch.nn.Module, loader, device: torch.device, inputs: list[str]):
    """For each batch: (batch, {m: (B, D) float32 on the CPU}), the mean of
    each modality's encoded tokens (`forward_features`, no masking) given the `inputs` modalities;
    None for a batch whose clips were all unreadable. Shared by `embed` and `avmae probe`."""
    for batch in loader:
        if len(batch["index"]) == 0:  # every clip of the batch was unreadable
            yield batch, None
            continue
        tokens = model.forward_features(**{m: batch[m].to(device) for m in inputs})
        yield batch, {m: x.float().mean(dim=1).cpu() for m, x in tokens.items()}


@torch.no_grad()
def embed(checkpoint: str, inputs: list[str], out: str, *, batch_size: int = 8,
          workers: int | None = None, device: str = "auto") -> dict:
    if Path(out).suffix.lower() != ".npz":
        raise ConfigError(f"--out '{out}': the features are written as an .npz file; give a name "
                          "ending in .npz")
    if batch_size < 1:
        raise ConfigError(f"--batch-size {batch_size} must be at least 1")
    model, cfg, _, _, _ = load_model(checkpoint)   # a pretraining model or a classifier's streams
    dev = resolve_device(device)
    model.to(dev).eval()
    with tempfile.TemporaryDirectory() as scratch:
        dataset = build_dataset(_data_source(inputs, Path(scratch)), cfg, train=False, device=dev)
        loader = build_loader(dataset, cfg, train=False, batch_size=batch_size, num_workers=workers)
        feats = {m: [] for m in model.modalities}
        present = {m: [] for m in model.modalities}
        indices, skipped = [], 0
        batches = pooled_batches(model, loader, dev, model.modalities)
        for batch, pooled in tqdm(batches, total=len(loader), desc="embed", unit="batch"):
            skipped += int(batch["num_skipped"])
            if pooled is None:
                continue
            for m, z in pooled.items():
                feats[m].append(z.numpy())                               # mean of encoded tokens
                present[m].append(batch[f"has_{m}"].numpy())
            indices.append(batch["index"].numpy())
    if not indices:
        n = len(dataset.paths)
        what = ("the one input clip could not be read" if n == 1 else
                f"none of the {n} input clips could be read" + (f" (first: '{dataset.paths[0]}')" if n else ""))
        raise ConfigError(f"{what}; nothing written to '{out}'")
    index = np.concatenate(indices)
    index, first = np.unique(index, return_index=True)        # evaluation ranks pad by wrapping
    paths = np.array([str(dataset.paths[i]) for i in index])
    result = {"index": index, "path": paths}
    for m in model.modalities:
        if feats[m]:
            result[m] = np.concatenate(feats[m])[first]
            result[f"has_{m}"] = np.concatenate(present[m])[first]
    kept = set(index.tolist())
    result["skipped"] = np.array([str(p) for i, p in enumerate(dataset.paths) if i not in kept])
    with writing(out):
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        np.savez(out, **result)
    return result
