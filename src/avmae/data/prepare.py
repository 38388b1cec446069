"""`avmae prepare MANIFEST --out SHARDS`: decode every clip once into tar shards for fast loading.

Decoding an mp4 on the fly costs far more than training needs (the peers' GPUs idle behind
their decoders). Prepare decodes each clip once, at the centre window (or V evenly spaced
windows with --views V, for evaluation and for temporal jitter in training), and stores:

    {key}.frames   uint8 (T, H, W, 3) raw RGB at data.short_side     (per view: {key}.{v}.frames)
    {key}.logmel   float16 (frames, mel_bins) log-mel, unnormalised   (per view: {key}.{v}.logmel)
    {key}.json     labels, shapes, problems of the clip

in standard tar files (WebDataset layout: the key is the manifest row, zero padded). Beside each
`shard-NNNNNN.tar` a small `shard-NNNNNN.idx` (JSON) lists each clip's member offsets, shapes and
labels, so any rank or worker reads any clip by seeking to it: no central index, no scanning.
`meta.json` records the DataConfig fields that shape the payload (loading refuses a config that
differs), the label columns and the counts of clips written, skipped and filled, with reasons.
The log-mel is stored unnormalised: normalisation (data.audio_mean / audio_std) is applied at
load time, so the same shards serve any statistics.
"""

from __future__ import annotations

import io
import json
import logging
import multiprocessing
import os
import sys
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from avmae.config import ConfigError, DataConfig
from avmae.data.dataset import (PAYLOAD_FIELDS, SHARDS_FORMAT, SHARDS_VERSION, check_paths_exist,
                      media_reason)
from avmae.data.decode import MediaError, read_clip
from avmae.data.transforms import audio_logmel
from avmae.data.manifest import Clip, build_vocab, load_manifest

log = logging.getLogger(__name__)


# ---- decoding (runs in worker processes) -----------------------------------------------------

def decode_clip(clip: Clip, data: DataConfig, views: int) -> dict:
    """Decode the `views` evaluation windows of one clip.

    -> {"views": [(frames uint8 (T,H,W,3) | None, logmel float16 (F, mel) | None)], "problems"}
    or {"error": reason} for an unreadable clip.
    """
    try:
        out, problems = [], []
        for v in range(views):
            raw = read_clip(clip.path, data, rng=None, view=v, num_views=views,
                            start=clip.start, end=clip.end)
            logmel = None
            if raw.waveform is not None:
                logmel = audio_logmel(raw.waveform, data).numpy().astype(np.float16)
            frames = None if raw.frames is None else np.ascontiguousarray(raw.frames, np.uint8)
            out.append((frames, logmel))
            problems += [p for p in raw.problems if p not in problems]
        return {"views": out, "problems": problems}
    except (MediaError, OSError) as err:
        return {"error": media_reason(err, clip.path)}


def _decode_task(task):
    clip, data, views = task
    return decode_clip(clip, data, views)


def _init_worker():
    torch.set_num_threads(1)  # one clip per process; the processes fill the cores


# ---- writing ---------------------------------------------------------------------------------

class ShardWriter:
    """One tar file and its offset index, both written under temporary names then renamed."""

    def __init__(self, folder: Path, number: int):
        self.folder = folder
        self.tar_name = f"shard-{number:06d}.tar"
        self.index_name = f"shard-{number:06d}.idx"
        self.tmp = folder / (self.tar_name + ".tmp")
        self.tar = tarfile.open(self.tmp, "w", format=tarfile.USTAR_FORMAT)
        self.clips: list[dict] = []

    def add_member(self, name: str, data: bytes) -> list[int]:
        """Append one member; -> [offset of its data in the file, size]."""
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = len(data), 0, 0o644
        header = info.tobuf(self.tar.format, self.tar.encoding, self.tar.errors)
        offset = self.tar.offset + len(header)
        self.tar.addfile(info, io.BytesIO(data))
        return [offset, len(data)]

    def add_clip(self, key: str, row: int, clip: Clip, root: Path, decoded: dict) -> dict:
        views = []
        for v, (frames, logmel) in enumerate(decoded["views"]):
            prefix = key if len(decoded["views"]) == 1 else f"{key}.{v}"
            stored = {"frames": None, "logmel": None}
            if frames is not None:
                stored["frames"] = self.add_member(f"{prefix}.frames", frames.tobytes()) + [list(frames.shape)]
            if logmel is not None:
                stored["logmel"] = self.add_member(f"{prefix}.logmel", logmel.tobytes()) + [list(logmel.shape)]
            views.append(stored)
        try:
            rel = str(clip.path.relative_to(root))
        except ValueError:
            rel = str(clip.path)
        targets = {k: list(v) if isinstance(v, tuple) else v for k, v in clip.targets.items()}
        entry = {"key": key, "row": row, "path": rel, "line": clip.line, "start": clip.start,
                 "end": clip.end, "targets": targets, "problems": decoded["problems"]}
        # The json member describes the clip for any tar reader (dtypes, shapes per view).
        described = dict(entry, views=[{m: None if s is None else {"shape": s[2], "dtype": dt}
                                        for (m, dt), s in zip((("frames", "uint8"),
                                                               ("logmel", "float16")),
                                                              (st["frames"], st["logmel"]))}
                                       for st in views])
        self.add_member(f"{key}.json", json.dumps(described).encode())
        entry["views"] = views
        self.clips.append(entry)
        return entry

    def close(self) -> dict:
        self.tar.close()
        with open(self.tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(self.tmp, self.folder / self.tar_name)
        _write_json(self.folder / self.index_name, {"tar": self.tar_name, "clips": self.clips})
        return {"tar": self.tar_name, "index": self.index_name, "clips": len(self.clips)}


def _write_json(path: Path, obj) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=None, separators=(",", ":")) + "\n")
    os.replace(tmp, path)


def _clear(out: Path, overwrite: bool) -> None:
    old = [p for p in out.iterdir() if p.name == "meta.json" or p.name.startswith("shard-")]
    if old and not overwrite:
        raise ConfigError(f"{out} already holds shards; choose another --out or pass --overwrite")
    for p in old:
        p.unlink()


def prepare_shards(manifest_path, out, data: DataConfig, *, clips_per_shard: int = 256,
                   workers: int = 1, views: int = 1, overwrite: bool = False,
                   progress: bool = True) -> dict:
    """Decode every clip of a manifest once and write shards + meta.json; -> the meta dict."""
    if clips_per_shard < 1 or views < 1 or workers < 1:
        raise ConfigError("--clips-per-shard, --views and --workers must be >= 1")
    manifest = load_manifest(manifest_path)
    check_paths_exist(manifest)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; give a folder")
    out.mkdir(parents=True, exist_ok=True)
    _clear(out, overwrite)

    tasks = ((clip, data, views) for clip in manifest.clips)
    pool = None
    if workers > 1:
        # fork where available, as torch's DataLoader does (no re-import of torch per worker)
        methods = multiprocessing.get_all_start_methods()
        context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
        pool = context.Pool(workers, initializer=_init_worker)
        results = pool.imap(_decode_task, tasks, chunksize=1)  # in order: same shards for any W
    else:
        results = map(_decode_task, tasks)

    shards, writer, written = [], None, 0
    skipped, problems, filled = [], Counter(), Counter(audio=0, video=0)
    bar = tqdm(total=len(manifest), unit="clip", desc="prepare", file=sys.stderr,
               disable=not progress, dynamic_ncols=True)
    try:
        for row, (clip, decoded) in enumerate(zip(manifest.clips, results)):
            bar.update(1)
            if "error" in decoded:
                skipped.append({"path": str(clip.path), "line": clip.line,
                                "reason": decoded["error"]})
                log.warning("%s: skipped (%s)", clip.path, decoded["error"])
                continue
            if writer is None:
                writer = ShardWriter(out, len(shards))
            writer.add_clip(f"{row:08d}", row, clip, manifest.root, decoded)
            written += 1
            problems.update(decoded["problems"])
            frames, logmel = decoded["views"][0]
            filled["video"] += frames is None
            filled["audio"] += logmel is None
            if len(writer.clips) == clips_per_shard:
                shards.append(writer.close())
                writer = None
            bar.set_postfix(skipped=len(skipped), refresh=False)
        if writer is not None:
            shards.append(writer.close())
    finally:
        bar.close()
        if pool is not None:
            pool.terminate()
    if written == 0:
        reason = skipped[0]["reason"] if skipped else "no rows"
        raise ConfigError(f"no clip of {manifest_path} could be decoded (first: {skipped[0]['path']}: "
                          f"{reason})")

    meta = {
        "format": SHARDS_FORMAT, "version": SHARDS_VERSION,
        "data": {name: getattr(data, name) for name in PAYLOAD_FIELDS},
        "views": views,
        "source": str(Path(manifest_path).resolve()),
        "label_columns": manifest.label_columns,
        "vocab": {c: build_vocab(manifest, c) for c in manifest.label_columns
                  if any(clip.targets[c] for clip in manifest.clips)},
        "clips": written,
        "skipped": len(skipped),
        "filled": dict(filled),
        "problems": dict(problems),
        "skipped_clips": skipped,
        "shards": shards,
    }
    _write_json(out / "meta.json", meta)  # last: a folder without it is incomplete
    return meta
