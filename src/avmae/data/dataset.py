"""Datasets and loaders: a manifest of raw videos or a shards folder -> batches of tensors.

One sample is a chain of small named steps:

    load     raw file: read_clip (PyAV) + log_mel      shards: the same window, drawn by the
             same code, read as JPEG frames + log-mel frames at offsets (avmae.data.shards)
    check    unreadable clip -> None; missing modality -> zeros + flag, or None (policy)
    tensors  video_tensor (crop, jitter, flip, [-1, 1]); audio_tensor (crop/pad, normalise)
    label    precomputed class indices (checked against the vocabulary when the dataset is built)

With data.jpeg_decode=cuda on shards (avmae.data.gpu_jpeg) the video's load and tensors steps
are split: the worker draws the window and the transform's choices and passes the window's JPEG
files in "video_jpeg"; the loader decodes them after the batch (on the GPU) into "video".

Sample dict (DATA_CONTRACT): "video" float32 (3, T, S, S), "audio" float32 (1, audio_frames,
mel_bins), "has_video"/"has_audio" bool (False = filled with zeros), "index" int64 clip index,
"view" int64, and "label" when a label column is chosen: int64 () single label, float32 (C,)
multi-hot, int64 (2,) verb and noun.

Policy for broken media (DESIGN "Errors and bad input"): an unreadable clip is skipped: the
dataset returns None, the collate drops it and the batch counts it in "num_skipped". A clip
missing a modality the model uses is filled (video zeros, audio data.audio_fill) and flagged (data.missing_modality=fill)
or skipped (=skip). Each such clip is also logged once per process as a warning.
Files that change or vanish while a long run reads them fall under the same policy: every read
happens when the clip is loaded (nothing is assumed from an earlier epoch), a vanished or
truncated file is a MediaError / OSError, and a log-mel that decodes to inf or NaN (a shard
rewritten under the run) is skipped too, so such a clip is skipped and counted, never fatal.

Determinism: all randomness of a sample comes from np.random.default_rng([seed, epoch, index,
view]), so batches depend on (seed, epoch) only, not on the number of workers or ranks.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate, get_worker_info

from avmae.config import Config, ConfigError, DataConfig
from avmae.data.decode import MediaError, read_clip
from avmae.data.gpu_jpeg import DecodeAfterBatch, Decoder, choose_jpeg_decode, nvjpeg_decoder
from avmae.data.manifest import StringColumn, as_vocab, build_vocabs, encode_labels, load_manifest
from avmae.data.shards import ShardSource
from avmae.data.storage import is_url
from avmae.data.transforms import (
    audio_logmel,
    audio_tensor,
    draw_video_plan,
    fill_audio,
    fill_video,
    video_tensor,
)

log = logging.getLogger(__name__)



def media_reason(err: Exception, path) -> str:
    """Why a clip is unreadable, without the path the decoder may have put in front."""
    reason = str(err) or type(err).__name__
    prefix = f"{path}: "
    return reason[len(prefix):] if reason.startswith(prefix) else reason


def sample_rng(*keys: int) -> np.random.Generator:
    """The generator of one sample: a pure function of (seed, epoch, index, view)."""
    return np.random.default_rng([int(k) % 2**63 for k in keys])


# ---- sources: where a clip's frames and log-mel come from -----------------------------------
#
# A source keeps what a worker needs per clip in numpy arrays, not in Python objects: forked
# DataLoader workers that touch a list of objects (reference counts) copy it page by page, which
# at AudioSet scale (2M clips) costs gigabytes per worker. `clips` (the manifest rows, for the
# vocabulary and labels) is only kept until the dataset is built.

class RawSource:
    """Clips of a manifest, decoded on the fly with PyAV."""

    def __init__(self, manifest_path: str | os.PathLike, data: DataConfig, *, video: bool = True,
                 audio: bool = True):
        manifest = load_manifest(manifest_path)
        check_paths_exist(manifest)
        self.clips = manifest.clips
        self.paths = StringColumn(c.path for c in manifest.clips)
        # segment [start, end] in seconds; NaN = not given
        self.segments = np.array([[np.nan if c.start is None else c.start,
                                   np.nan if c.end is None else c.end] for c in manifest.clips])
        self.data = data
        self.video, self.audio = video, audio  # what to decode: the model's modalities

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, i: int, *, rng: np.random.Generator | None, view: int, num_views: int):
        """-> (frames uint8 (T, H, W, 3) | None, log-mel float32 (frames, mel) | None)."""
        start, end = (None if np.isnan(x) else float(x) for x in self.segments[i])
        raw = read_clip(self.paths[i], self.data, rng=rng, view=view, num_views=num_views,
                        start=start, end=end, video=self.video, audio=self.audio)
        logmel = None if raw.waveform is None else audio_logmel(raw.waveform, self.data)
        return raw.frames, logmel

    def reopen(self) -> None:  # read_clip opens and closes its container on every call
        pass


def check_paths_exist(manifest, sample: int = 16) -> None:
    """A wrong root makes every clip 'missing': refuse that instead of skipping a whole dataset."""
    head = list(itertools.islice(manifest, sample))  # a Manifest or a streamed ManifestFile
    if not any(c.path.exists() for c in head):
        raise ConfigError(f"none of the first {len(head)} files of {manifest.source} exist (e.g. "
                          f"{head[0].path}); paths must be relative to the manifest's folder "
                          f"{manifest.root}")


# ---- the dataset -----------------------------------------------------------------------------

class ClipDataset(Dataset):
    """len = clips x num_views; item i is view i % num_views of clip i // num_views."""

    def __init__(self, source, cfg: Config, *, train: bool, labels: torch.Tensor | None,
                 vocab: dict | None, label_column: str | None, num_views: int = 1):
        if num_views < 1:
            raise ConfigError(f"num_views={num_views} must be >= 1")
        self.source = source
        self.cfg = cfg
        self.train = train
        self.labels = labels
        self.vocab = vocab
        self.label_column = label_column
        self.num_views = num_views
        self.seed = cfg.train.seed
        self.epoch = 0
        # Modalities the model consumes: only a missing one of these is "missing" for the policy.
        self.needed = {"audio": cfg.model.has_audio, "video": cfg.model.has_video}
        self._warned: set[int] = set()
        # Shards' JPEG frames left for the loader to decode after the batch (gpu_jpeg): set by
        # build_dataset as data.jpeg_decode and the machine decide (`jpeg_decode`, for the log).
        self.decode_after_batch = False
        self.jpeg_decode = {"jpeg_decode": "cpu", "jpeg_decode_asked": cfg.data.jpeg_decode,
                            "jpeg_decode_why": "not decided by build_dataset"}

    @property
    def paths(self) -> StringColumn:
        """paths[index] -> the clip's file (as in the manifest, for shards)."""
        return self.source.paths

    def __len__(self) -> int:
        return len(self.source) * self.num_views

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _warn(self, index: int, message: str) -> None:
        if index not in self._warned:  # once per clip (and per process)
            self._warned.add(index)
            log.warning("%s: %s", self.source.paths[index], message)

    def __getitem__(self, i: int | tuple[int, int]) -> dict | None:
        """Item i of the epoch set by `set_epoch`, or of the epoch given as i = (epoch, i) (the
        training loader's workers live across epochs, so the epoch travels with the index)."""
        epoch, i = i if isinstance(i, tuple) else (self.epoch, i)
        index, view = divmod(int(i), self.num_views)
        d = self.cfg.data
        rng = sample_rng(self.seed, epoch, index, view) if self.train else None
        try:
            if self.decode_after_batch:  # shards only: frames is then a JpegFrames
                frames, logmel = self.source.load(index, rng=rng, view=view,
                                                  num_views=self.num_views, decode=False)
            else:
                frames, logmel = self.source.load(index, rng=rng, view=view,
                                                  num_views=self.num_views)
        except (MediaError, OSError) as err:
            self._warn(index, f"skipped ({media_reason(err, self.source.paths[index])})")
            return None
        if logmel is not None and not bool(torch.isfinite(logmel).all()):
            # A shard rewritten while the run reads it can hand back any bytes; as float16 some
            # are inf / NaN, which would end the run with a non-finite loss instead of a skip.
            self._warn(index, "skipped (non-finite log-mel: the file changed while being read?)")
            return None
        missing = [m for m, x in (("video", frames), ("audio", logmel))
                   if x is None and self.needed[m]]
        if missing:
            if d.missing_modality == "skip" or len(missing) == sum(self.needed.values()):
                self._warn(index, f"skipped (no {' and no '.join(missing)})")
                return None
            self._warn(index, f"no {missing[0]}: filled with zeros and flagged")
        if self.decode_after_batch:  # the same draws from rng as video_tensor's, pixels later
            video = {"video_jpeg": None if frames is None else (frames, draw_video_plan(
                frames.height, frames.width, d, train=self.train, rng=rng))}
        else:
            video = {"video": video_tensor(frames, d, train=self.train, rng=rng)
                     if frames is not None else fill_video(d)}
        sample = {
            **video,
            "audio": audio_tensor(logmel, d) if logmel is not None else fill_audio(d),
            "has_video": torch.tensor(frames is not None),
            "has_audio": torch.tensor(logmel is not None),
            "index": torch.tensor(index, dtype=torch.int64),
            "view": torch.tensor(view, dtype=torch.int64),
        }
        if self.labels is not None:
            sample["label"] = self.labels[index]
        return sample

    def template(self) -> dict:
        """A sample of zeros with the right shapes (the collate of an all-skipped batch)."""
        d = self.cfg.data
        sample = {"video": fill_video(d), "audio": fill_audio(d),
                  "has_video": torch.tensor(False), "has_audio": torch.tensor(False),
                  "index": torch.tensor(0), "view": torch.tensor(0)}
        if self.labels is not None:
            sample["label"] = torch.zeros_like(self.labels[0])
        return sample

    def reopen(self) -> None:
        self.source.reopen()


def build_dataset(data: str | os.PathLike, cfg: Config, *, train: bool,
                  label_column: str | None = None, vocab: dict | list | None = None,
                  num_views: int = 1, decode_after_batch: bool | None = None,
                  device: torch.device | None = None) -> ClipDataset:
    """A manifest CSV or a shards folder (a path, or an fsspec URL: avmae.data.storage) ->
    ClipDataset yielding the sample dict above.

    label_column: None (no "label", e.g. pretraining), "label", "labels", "verb", "noun" or
    "verb,noun". vocab: {column: [class names]} (or a plain list for one column); None builds
    it from this data (sorted unique names). The dataset's `vocab` is the one used: save it
    beside the run and pass it to every later stage.

    decode_after_batch: None decides by data.jpeg_decode, the run's `device` and this machine
    (gpu_jpeg.choose_jpeg_decode: True only for shards on CUDA with torchvision); False decodes
    in the workers; True (shards only) leaves the frames for the loader's decoder (a test on a
    CPU passes gpu_jpeg.pillow_decoder to build_loader).
    """
    path = str(data) if is_url(str(data)) else Path(data)
    if isinstance(path, str) or path.is_dir():  # a URL is a shards folder (avmae.data.storage)
        source = ShardSource(path, cfg.data, video=cfg.model.has_video, audio=cfg.model.has_audio)
    elif path.is_file():
        source = RawSource(path, cfg.data, video=cfg.model.has_video, audio=cfg.model.has_audio)
    else:
        raise ConfigError(f"data {path} not found: give a manifest CSV or a shards folder")
    labels = None
    if label_column:
        vocab = as_vocab(vocab, label_column) or build_vocabs(source.clips, label_column)
        labels = encode_labels(source.clips, label_column, vocab, where=f"{path}: ")
    else:
        vocab = None
    source.clips = None  # encoded above; only the compact columns travel to the workers
    dataset = ClipDataset(source, cfg, train=train, labels=labels, vocab=vocab,
                          label_column=label_column, num_views=num_views)
    shards = isinstance(source, ShardSource)
    if decode_after_batch is None:
        dataset.jpeg_decode = choose_jpeg_decode(cfg.data.jpeg_decode, shards, device)
        decode_after_batch = dataset.jpeg_decode["jpeg_decode"] == "cuda"
    elif decode_after_batch and not shards:
        raise ConfigError(f"data {path}: only shards hold JPEG frames to decode after the batch")
    dataset.decode_after_batch = decode_after_batch
    return dataset


# ---- loading: sampler, collate, workers -----------------------------------------------------

class EpochBatchSampler(Sampler):
    """The batches of one rank in one epoch.

    Order: a permutation drawn from (seed, epoch) in training, the dataset order otherwise. It is
    padded by wrapping around to a multiple of world_size (so every rank gets the same number of
    samples), dealt round-robin to the ranks, cut into batches (the last partial batch dropped
    when drop_last), and the first `skip_batches` batches are skipped: resuming at batch k gives
    exactly batches k, k+1, ... of the uninterrupted epoch.
    """

    def __init__(self, num_samples: int, *, batch_size: int, shuffle: bool, seed: int,
                 epoch: int, rank: int = 0, world_size: int = 1, drop_last: bool,
                 skip_batches: int = 0):
        if not 0 <= rank < world_size:
            raise ConfigError(f"rank {rank} is not in [0, world_size={world_size})")
        if batch_size < 1:
            raise ConfigError(f"batch_size={batch_size} must be >= 1")
        order = sample_rng(seed, epoch).permutation(num_samples) if shuffle else np.arange(num_samples)
        per_rank = math.ceil(num_samples / world_size)
        order = np.resize(order, per_rank * world_size)  # wrap around to pad
        mine = order[rank::world_size]
        n = len(mine) // batch_size if drop_last else math.ceil(len(mine) / batch_size)
        self.batches_per_epoch = n
        self.batches = [mine[b * batch_size:(b + 1) * batch_size].tolist()
                        for b in range(min(skip_batches, n), n)]

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class RunBatchSampler(Sampler):
    """The training batches of one rank for a whole run, from batch `start` (a resumed run's
    step x accum_steps) to `total`: epoch after epoch, the first `per_epoch` batches of each
    epoch's `EpochBatchSampler` (the batches its optimiser steps consume), every index paired
    with its epoch. One loader iterator then serves the whole run: its workers start once and
    the prefetch pipeline never drains at an epoch boundary."""

    def __init__(self, num_samples: int, *, batch_size: int, shuffle: bool, seed: int,
                 rank: int, world_size: int, per_epoch: int, start: int, total: int):
        self.epoch_args = dict(batch_size=batch_size, shuffle=shuffle, seed=seed, rank=rank,
                               world_size=world_size, drop_last=True)
        self.num_samples, self.per_epoch, self.start, self.total = num_samples, per_epoch, start, total

    def __iter__(self):
        b = self.start
        while b < self.total:
            epoch, k = divmod(b, self.per_epoch)
            epoch_batches = EpochBatchSampler(self.num_samples, epoch=epoch, skip_batches=k,
                                              **self.epoch_args).batches
            for batch in epoch_batches[: min(self.per_epoch - k, self.total - b)]:
                yield [(epoch, i) for i in batch]
                b += 1

    def __len__(self) -> int:
        return max(0, self.total - self.start)


class Collate:
    """Stack the kept samples; count the skipped ones (None) in "num_skipped". Undecoded
    windows ("video_jpeg", gpu_jpeg) stay a list, one entry per kept sample."""

    def __init__(self, template: dict):
        self.template = template

    def __call__(self, samples: list) -> dict:
        kept = [s for s in samples if s is not None]
        if kept:
            windows = [s.pop("video_jpeg") for s in kept] if "video_jpeg" in kept[0] else None
            batch = default_collate(kept)
            if windows is not None:
                batch["video_jpeg"] = windows
        else:  # every clip of the batch was unreadable: empty tensors of the right shapes
            batch = {k: v.unsqueeze(0)[:0] for k, v in self.template.items()}
        batch["num_skipped"] = len(samples) - len(kept)
        return batch


def worker_init(worker_id: int) -> None:
    """Each worker opens its own files: nothing (descriptors, decoders) is shared with the parent."""
    torch.set_num_threads(1)  # the workers already use every core between them
    get_worker_info().dataset.reopen()


def _data_loader(dataset: ClipDataset, cfg: Config, sampler: Sampler, workers: int,
                 jpeg_decoder: Decoder | None) -> DataLoader | DecodeAfterBatch:
    # Pinned (page-locked) batches let the loops' non-blocking copies to a GPU overlap compute;
    # each worker keeps `prefetch_factor` batches ready, and keeps its open shards between passes.
    background = {"prefetch_factor": cfg.data.prefetch_factor, "persistent_workers": True,
                  "worker_init_fn": worker_init} if workers > 0 else {}
    loader = DataLoader(dataset, batch_sampler=sampler, num_workers=workers,
                        collate_fn=Collate(dataset.template()),
                        pin_memory=torch.cuda.is_available(), **background)
    if not dataset.decode_after_batch:
        return loader
    # The workers left the JPEG frames undecoded: decode each batch here (nvJPEG by default).
    return DecodeAfterBatch(loader, cfg.data, jpeg_decoder or nvjpeg_decoder())


def build_train_loader(dataset: ClipDataset, cfg: Config, *, batch_size: int, rank: int,
                       world_size: int, seed: int, per_epoch: int, start: int,
                       total: int, jpeg_decoder: Decoder | None = None) -> DataLoader:
    """The training loops' loader: batches `start` to `total` of the run (`RunBatchSampler`),
    each batch of epoch e exactly the one `build_loader(..., epoch=e)` gives at that position.
    jpeg_decoder: for a dataset with decode_after_batch (default: nvJPEG on this CUDA device)."""
    sampler = RunBatchSampler(len(dataset), batch_size=batch_size, shuffle=cfg.data.shuffle,
                              seed=seed, rank=rank, world_size=world_size, per_epoch=per_epoch,
                              start=start, total=total)
    return _data_loader(dataset, cfg, sampler, cfg.data.num_workers, jpeg_decoder)


def build_loader(dataset: ClipDataset, cfg: Config, *, train: bool, batch_size: int, rank: int = 0,
                 world_size: int = 1, seed: int = 0, epoch: int = 0, skip_batches: int = 0,
                 num_workers: int | None = None, jpeg_decoder: Decoder | None = None) -> DataLoader:
    """One epoch of batches for one rank. len(loader) = batches this loader yields
    (`loader.batches_per_epoch` minus `skip_batches`); batches are the same for any num_workers.

    Training shuffles (if data.shuffle) and drops the last partial batch; evaluation keeps the
    order and every sample (ranks padded by wrapping: deduplicate by "index" and "view").
    jpeg_decoder: as build_train_loader's.
    """
    dataset.set_epoch(epoch)
    sampler = EpochBatchSampler(len(dataset), batch_size=batch_size,
                                shuffle=train and cfg.data.shuffle, seed=seed, epoch=epoch,
                                rank=rank, world_size=world_size, drop_last=train,
                                skip_batches=skip_batches)
    workers = cfg.data.num_workers if num_workers is None else num_workers
    loader = _data_loader(dataset, cfg, sampler, workers, jpeg_decoder)
    loader.batches_per_epoch = sampler.batches_per_epoch
    return loader
