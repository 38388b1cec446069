"""`avmae prepare MANIFEST --out SHARDS`: decode every clip once into tar shards for fast loading.

Decoding an mp4 on the fly costs far more than training needs (the peers' GPUs idle behind
their decoders). Prepare decodes each whole clip once and stores it in shards format 2 (the
layout, and how a window is chosen when a clip is read: avmae.data.shards): every `every`-th
source frame (default 2: the strides 4 and 2 of the presets and recipes need no others) as JPEG
at data.short_side, and the log-mel of the whole clip as float16, unnormalised (normalisation,
data.audio_mean / audio_std, is applied at load time, so the same shards serve any statistics).
The input length (data.num_frames, frame_stride) is not fixed by the shards: one folder serves
pretraining (16 frames at stride 4), finetuning (32 at stride 2) and evaluation with any --views.
Output is the same bytes for any number of workers (clips are written in manifest order).

Memory does not grow with the manifest (AudioSet-2M is 2 M rows): the CSV is read row by row
(avmae.data.manifest.ManifestFile) in two passes, the first checking every row and collecting
the label vocabularies before anything is written, the second feeding the decoders; a written
shard's index is folded into counts (Totals) and dropped; skipped clips are listed by path up to
SKIPPED_LISTED and counted by reason beyond.

--out may be an fsspec URL (s3://, gs://, file://; avmae.data.storage): each shard is written to
a local temporary folder, uploaded when finished, then deleted (local disk: one shard), its index
uploaded after it, and meta.json last, so a half-written remote folder is never taken as
finished and --resume carries on from its uploaded shards as it does locally.
"""

from __future__ import annotations

import io
import itertools
import json
import logging
import multiprocessing
import shutil
import sys
import tarfile
import tempfile
from array import array
from collections import Counter, deque
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from avmae.config import ConfigError, DataConfig
from avmae.data.dataset import check_paths_exist, media_reason
from avmae.data.decode import MediaError, read_whole_clip
from avmae.data.shards import (DEFAULT_EVERY, DEFAULT_JPEG_QUALITY, PAYLOAD_FIELDS, SHARDS_FORMAT,
                               SHARDS_VERSION, encode_jpeg)
from avmae.data.storage import LocalFolder, RemoteFolder, open_folder
from avmae.data.transforms import audio_logmel
from avmae.data.manifest import Clip, ManifestFile, label_names

log = logging.getLogger(__name__)


# ---- decoding (runs in worker processes) -----------------------------------------------------

def decode_clip(clip: Clip, data: DataConfig, every: int, quality: int) -> dict:
    """Decode one whole clip.

    -> {"frames": [JPEG bytes] | None, "fps", "first", "logmel": float16 (F, mel) | None,
    "audio_start", "duration", "problems"}, or {"error": reason} for an unreadable clip.
    """
    try:
        whole = read_whole_clip(clip.path, data, every=every, start=clip.start, end=clip.end,
                                encode=lambda rgb: encode_jpeg(rgb, quality))
    except (MediaError, OSError) as err:
        return {"error": media_reason(err, clip.path)}
    logmel = None
    if whole.waveform is not None:
        logmel = audio_logmel(whole.waveform, data).numpy().astype(np.float16)
    return {"frames": whole.frames, "fps": whole.fps, "first": whole.first_frame,
            "logmel": logmel, "audio_start": whole.audio_start, "duration": whole.duration,
            "problems": whole.problems}


def _decode_task(task):
    return decode_clip(*task)


def _init_worker():
    torch.set_num_threads(1)  # one clip per process; the processes fill the cores


# ---- writing ---------------------------------------------------------------------------------

class ShardWriter:
    """One tar file and its offset index: the tar written under a temporary name in `staging`
    then put into `dest` (a rename locally, an upload to a URL), the index after it."""

    def __init__(self, dest: LocalFolder | RemoteFolder, staging: Path, number: int):
        self.dest = dest
        self.tar_name, self.index_name = shard_names(number)
        self.tmp = staging / (self.tar_name + ".tmp")
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
        """The clip's .mjpeg, .logmel and .json members; -> its index entry."""
        video = audio = None
        if decoded["frames"] is not None:
            video = self._add_frames(key, decoded)
        if decoded["logmel"] is not None:
            logmel = decoded["logmel"]
            offset, size = self.add_member(f"{key}.logmel", logmel.tobytes())
            audio = {"offset": offset, "size": size, "frames": int(logmel.shape[0]),
                     "start": decoded["audio_start"]}
        try:
            rel = str(clip.path.relative_to(root))
        except ValueError:
            rel = str(clip.path)
        targets = {k: list(v) if isinstance(v, tuple) else v for k, v in clip.targets.items()}
        entry = {"key": key, "row": row, "path": rel, "line": clip.line, "start": clip.start,
                 "end": clip.end, "targets": targets, "problems": decoded["problems"],
                 "duration": decoded["duration"], "video": video, "audio": audio}
        self.add_member(f"{key}.json", json.dumps(entry).encode())  # for any tar reader
        self.clips.append(entry)
        return entry

    def _add_frames(self, key: str, decoded: dict) -> dict:
        """JPEG frames back to back in one member; frame j is bytes
        [frame_offsets[j], frame_offsets[j + 1]) of it."""
        frames = decoded["frames"]
        offset, size = self.add_member(f"{key}.mjpeg", b"".join(frames))
        height, width = decode_size(frames[0])
        return {"offset": offset, "size": size, "fps": decoded["fps"], "first": decoded["first"],
                "height": height, "width": width,
                "frame_offsets": np.cumsum([0] + [len(f) for f in frames]).tolist()}

    def close(self, skipped: Skipped) -> dict:
        """Finish the tar, then write the index (last: a shard with an index is complete).
        skipped: the clips skipped since the previous shard. -> the index."""
        self.tar.close()
        self.dest.put(self.tmp, self.tar_name)
        index = {"tar": self.tar_name, "clips": self.clips, **skipped.fields(),
                 "last_row": self.clips[-1]["row"]}
        _write_json(self.dest, self.index_name, index)
        return index


def decode_size(jpeg: bytes) -> tuple[int, int]:
    """(height, width) of a JPEG, from its header."""
    with Image.open(io.BytesIO(jpeg)) as img:
        return img.height, img.width


def _write_json(dest, name: str, obj) -> None:
    dest.write_text(name, json.dumps(obj, indent=None, separators=(",", ":")) + "\n")


def _clear(out, overwrite: bool) -> None:
    old = [n for n in out.names() if n in ("meta.json", SETTINGS) or n.startswith("shard-")]
    if old and not overwrite:
        raise ConfigError(f"{out} already holds shards; choose another --out, pass --overwrite, "
                          "or --resume an interrupted prepare")
    for name in sorted(old, key=lambda n: n != "meta.json"):  # meta.json first: unfinished
        out.remove(name)


SETTINGS = "prepare.json"   # what an unfinished prepare was asked to do (for --resume)


def _finished_shards(out, settings: dict, totals: Totals) -> None:
    """Count into `totals` the shards an interrupted prepare finished (their index written
    last), in order, one index at a time; the rest (a tar without its index, temporary files)
    is removed. Refuses other settings."""
    if not out.exists(SETTINGS):
        raise ConfigError(f"{out} holds no interrupted prepare to resume; run without --resume")
    key = _first_difference(json.loads(out.read_text(SETTINGS)), settings)
    if key:
        raise ConfigError(f"{out} was being prepared with {key}; resume with the same settings, "
                          "or pass --overwrite")
    names = set(out.names())
    while f"shard-{totals.shards:06d}.idx" in names:
        totals.add(json.loads(out.read_text(f"shard-{totals.shards:06d}.idx")))
    keep = {name for n in range(totals.shards) for name in shard_names(n)}
    for name in sorted(names):
        if name.startswith("shard-") and name not in keep:
            out.remove(name)


def _first_difference(before: dict, now: dict) -> str | None:
    """'data.short_side=36, not 40' for the first setting that differs, else None."""
    old, new = _flat(before), _flat(now)
    for key, value in new.items():
        if old.get(key) != value:
            return f"{key}={old.get(key)}, not {value}"
    return None


def _flat(settings: dict) -> dict:
    """{"data": {"short_side": 36}, "every": 2} -> {"data.short_side": 36, "every": 2}."""
    out = {}
    for key, value in settings.items():
        if isinstance(value, dict):
            out.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            out[key] = value
    return out


def _ordered(pool, fn, tasks, ahead: int):
    """fn over tasks in a pool, results in task order, at most `ahead` in flight: constant
    memory however fast the workers run ahead of the writer."""
    pending = deque()
    for task in tasks:
        pending.append(pool.apply_async(fn, (task,)))
        if len(pending) >= ahead:
            yield pending.popleft().get()
    while pending:
        yield pending.popleft().get()


def _reason_kind(reason: str) -> str:
    """A skip reason's kind for the progress bar: its text before any detail."""
    return reason.split(":")[0].strip()[:32] or "unreadable"


# ---- what meta.json counts: constant memory however many rows ----------------------------------
#
# A 2 M-row manifest must not cost memory per row: the manifest is read row by row
# (ManifestFile), the pool keeps a few clips in flight (_ordered), a written shard's index is
# folded into counts (Totals) and dropped, and a skipped clip is listed by name only among the
# first SKIPPED_LISTED (per shard index, and in meta.json); the rest are counted by reason.

SKIPPED_LISTED = 100


def shard_names(number: int) -> tuple[str, str]:
    """The tar and index names of shard `number`."""
    return f"shard-{number:06d}.tar", f"shard-{number:06d}.idx"


class Skipped:
    """Clips skipped since the previous shard: the first SKIPPED_LISTED of them by name, path
    and reason, the rest counted by reason kind."""

    def __init__(self):
        self.listed: list[dict] = []
        self.more: Counter = Counter()

    def __bool__(self) -> bool:
        return bool(self.listed)  # the first skip is always listed

    def add(self, entry: dict) -> None:
        if len(self.listed) < SKIPPED_LISTED:
            self.listed.append(entry)
        else:
            self.more[_reason_kind(entry["reason"])] += 1

    def fields(self) -> dict:
        """The index's "skipped" (and, past the first SKIPPED_LISTED, "skipped_more")."""
        return {"skipped": self.listed, **({"skipped_more": dict(self.more)} if self.more else {})}


class Totals:
    """What meta.json says of the clips, folded from the shards' indexes one at a time (those
    an interrupted run finished, then those this run writes): counts, never the entries."""

    def __init__(self):
        self.shards = 0
        self.shard_clips = array("q")       # clips of shard n (shard_names(n))
        self.last_row = -1
        self.clips = 0
        self.filled = {"audio": 0, "video": 0}
        self.problems: Counter = Counter()
        self.skipped = 0
        self.reasons: Counter = Counter()   # skipped clips by reason kind
        self.skipped_clips: list[dict] = []  # the first SKIPPED_LISTED

    def add(self, index: dict) -> None:
        """One index's clips and skipped clips (an index without "tar": the skipped clips after
        the last shard)."""
        for entry in index["clips"]:
            self.clips += 1
            self.filled["audio"] += entry["audio"] is None
            self.filled["video"] += entry["video"] is None
            self.problems.update(entry["problems"])
        for entry in index["skipped"]:
            self.skipped += 1
            self.reasons[_reason_kind(entry["reason"])] += 1
            if len(self.skipped_clips) < SKIPPED_LISTED:
                self.skipped_clips.append(entry)
        for kind, n in index.get("skipped_more", {}).items():
            self.skipped += n
            self.reasons[kind] += n
        if index.get("tar"):  # shard self.shards: written in order, numbered from 0
            self.shard_clips.append(len(index["clips"]))
            self.shards += 1
            self.last_row = index["last_row"]


def prepare_shards(manifest_path, out, data: DataConfig, *, clips_per_shard: int = 256,
                   workers: int = 1, every: int = DEFAULT_EVERY,
                   jpeg_quality: int = DEFAULT_JPEG_QUALITY, overwrite: bool = False,
                   resume: bool = False, progress: bool = True) -> dict:
    """Decode every clip of a manifest once and write shards + meta.json; -> the meta dict.
    every: keep every `every`-th source frame; jpeg_quality: 1-100 (Pillow's scale).
    resume: keep the shards an interrupted run finished and carry on after them.
    Memory does not grow with the manifest's rows (see Totals): a first pass over the CSV checks
    every row and collects the label vocabularies, a second feeds the decoders."""
    if clips_per_shard < 1 or every < 1 or workers < 1:
        raise ConfigError("--clips-per-shard, --keep-every and --workers must be >= 1")
    if not 1 <= jpeg_quality <= 100:
        raise ConfigError(f"--jpeg-quality {jpeg_quality} must be in 1..100")
    manifest = ManifestFile(manifest_path)
    rows, names = label_names(manifest, manifest.label_columns)   # every row checked
    if not rows:
        raise ConfigError(f"manifest {manifest.source} has a header but no rows: add one row "
                          "per clip")
    check_paths_exist(manifest)
    out = open_folder(out)
    out.make()
    settings = {"source": str(Path(manifest_path).resolve()), "rows": rows,
                "data": {name: getattr(data, name) for name in PAYLOAD_FIELDS},
                "audio_seconds": data.audio_seconds, "every": every,
                "jpeg_quality": jpeg_quality, "clips_per_shard": clips_per_shard}
    if resume and out.exists("meta.json"):  # finished already: the same settings?
        meta = json.loads(out.read_text("meta.json"))
        key = _first_difference(meta, {k: settings[k] for k in ("source", "data", "every",
                                                                   "jpeg_quality")})
        if key:
            raise ConfigError(f"{out} holds finished shards with {key}; pass --overwrite to "
                              "prepare them again")
        return meta
    totals = Totals()
    if resume:
        _finished_shards(out, settings, totals)
    else:
        _clear(out, overwrite)
        _write_json(out, SETTINGS, settings)
    # a remote folder: each shard is written here first, uploaded, then deleted
    staging = Path(tempfile.mkdtemp(prefix="avmae-prepare-")) if out.remote else out.staging()
    try:
        _write_shards(out, staging, manifest, rows, data, settings, totals, workers, progress)
    finally:
        if out.remote:
            shutil.rmtree(staging, ignore_errors=True)
    vocab = {c: sorted(names[c]) for c in manifest.label_columns if names[c]}
    return _write_meta(out, manifest, manifest_path, settings, vocab, totals)


def _write_shards(out, staging: Path, manifest: ManifestFile, rows: int, data, settings,
                  totals: Totals, workers: int, progress: bool) -> None:
    """Decode rows totals.last_row + 1.. and write shards numbered from totals.shards, each
    folded into `totals` once written (the trailing skipped clips, after the last shard, too)."""
    every, quality = settings["every"], settings["jpeg_quality"]
    first = totals.last_row + 1
    # the rows, streamed: one copy feeds the decoders, the other (at most the pool's look-ahead
    # behind) gives the writer each result's row
    to_decode, to_write = itertools.tee(itertools.islice(enumerate(manifest), first, None))
    tasks = ((clip, data, every, quality) for _, clip in to_decode)
    pool = None
    if workers > 1:
        # fork where available, as torch's DataLoader does (no re-import of torch per worker)
        methods = multiprocessing.get_all_start_methods()
        context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
        pool = context.Pool(workers, initializer=_init_worker)
        results = _ordered(pool, _decode_task, tasks, 2 * workers)  # same shards for any W
    else:
        results = map(_decode_task, tasks)
    writer, skipped, kinds = None, Skipped(), Counter(totals.reasons)
    bar = tqdm(total=rows, initial=first, unit="clip", desc="prepare", file=sys.stderr,
               disable=not progress, dynamic_ncols=True)
    try:
        for (row, clip), decoded in zip(to_write, results):
            bar.update(1)
            if "error" in decoded:
                skipped.add({"path": str(clip.path), "line": clip.line,
                             "reason": decoded["error"]})
                log.warning("%s: skipped (%s)", clip.path, decoded["error"])
                kinds[_reason_kind(decoded["error"])] += 1
                bar.set_postfix_str("skipped: " + ", ".join(f"{k} {n}" for k, n in
                                                            kinds.most_common()), refresh=False)
                continue
            if writer is None:
                writer = ShardWriter(out, staging, totals.shards)
            writer.add_clip(f"{row:08d}", row, clip, manifest.root, decoded)
            if len(writer.clips) == settings["clips_per_shard"]:
                totals.add(writer.close(skipped))
                writer, skipped = None, Skipped()
        if writer is not None:
            totals.add(writer.close(skipped))
            skipped = Skipped()
    finally:
        bar.close()
        if pool is not None:
            pool.terminate()
    if skipped:
        totals.add({"clips": [], **skipped.fields()})


def _write_meta(out, manifest, manifest_path, settings: dict, vocab: dict,
                totals: Totals) -> dict:
    """meta.json from the counts of the shards' indexes (so a resumed prepare counts what
    earlier runs did)."""
    if not totals.clips:
        first = totals.skipped_clips[0] if totals.skipped_clips else \
            {"path": "-", "reason": "no rows"}
        raise ConfigError(f"no clip of {manifest_path} could be decoded (first: {first['path']}: "
                          f"{first['reason']})")
    meta = {
        "format": SHARDS_FORMAT, "version": SHARDS_VERSION,
        **{k: settings[k] for k in ("data", "every", "jpeg_quality", "audio_seconds", "source")},
        "label_columns": manifest.label_columns,
        "vocab": vocab,
        "clips": totals.clips,
        "skipped": totals.skipped,
        "filled": dict(totals.filled),
        "problems": dict(totals.problems),
        "skipped_reasons": dict(totals.reasons.most_common()),
        "skipped_clips": totals.skipped_clips,    # the first SKIPPED_LISTED; all: "skipped"
        "shards": [{"tar": shard_names(i)[0], "index": shard_names(i)[1], "clips": n}
                   for i, n in enumerate(totals.shard_clips)],
    }
    _write_json(out, "meta.json", meta)  # last: a folder without it is incomplete
    out.remove(SETTINGS)
    return meta
