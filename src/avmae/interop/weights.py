"""The official pretrained weights by name: a table, a verified download cache, and the converted runs.

    run = pretrained_run("scenic/audioset-av")    # downloads and converts on first use, then cached
    model = avmae.load("scenic/audioset-av")      # the same, through the library API

`OFFICIAL_WEIGHTS` names each checkpoint Google released with the paper (google-research/scenic,
`projects/av_mae/README.md`, "Model Zoo"): its URL, the avmae preset that fills in what the
parameter tree cannot say, what it is, and where its class names come from. The names read
`scenic/<dataset>-<pretraining modalities>[-finetuned-<finetuning modality>]`; `hub_name` turns one
into a Python identifier for hubconf.py (`scenic/vggsound-av` -> `vggsound_av`).

The cache (`weights_cache()`: `$AVMAE_HOME`, else the platform's cache folder):
    downloads/scenic/audioset-av.msgpack        a downloaded checkpoint, complete and verified
    downloads/scenic/audioset-av.msgpack.part   a download in progress or interrupted (resumed
                                                with an HTTP Range request on the next attempt)
    runs/scenic/audioset-av/                    the converted avmae run (`avmae import-scenic`)
    registry.json                               each file's size and sha256, recorded the first
                                                time it was fetched
A download only becomes `*.msgpack` by a rename once it is whole and verified, so a killed download
never leaves a file that looks complete. The release publishes no checksums: the first download is
trusted and recorded, and any later download of the same name that differs (a changed or
corrupted file, a bad mirror) is refused with one line. `pretrained_run` removes the download once
its run is converted (the run is all `avmae.load` needs, and a pretraining checkpoint is three times
its size with the Adam moments); `avmae import-scenic NAME` keeps it, for another `--labels`.

HTTP is the standard library's (urllib): no extra dependency. `AVMAE_WEIGHTS_BASE_URL` replaces the
official base URL, for a mirror or the tests' loopback server; the registry still checks the files.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import re
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from http.client import HTTPException
from pathlib import Path

from avmae.checkpoint import MARKER, _fsync_dir, file_sha256, step_checkpoints, writing
from avmae.config import ConfigError

OFFICIAL_BASE_URL = "https://storage.googleapis.com/scenic-bucket/av_mae/"
BASE_URL_ENV = "AVMAE_WEIGHTS_BASE_URL"   # for mirrors and tests only
HOME_ENV = "AVMAE_HOME"
REGISTRY = "registry.json"
REGISTRY_FORMAT = "avmae-weights-registry"

AUDIOSET_LABELS = ("AudioSet's class_labels_indices.csv (the AudioSet download page; not shipped with "
                   "the checkpoint): give it with `avmae import-scenic NAME --labels FILE`")
VGGSOUND_LABELS = ("not shipped: the release has no VGGSound label map; the 309 names in sorted order "
                   "(what `avmae manifest vggsound` writes) are a guess to check on a few clips")


@dataclass(frozen=True)
class OfficialWeights:
    name: str      # scenic/<dataset>-<pretraining>[-finetuned-<finetuning>]
    path: str      # under the base URL
    preset: str    # what the parameter tree cannot say (input lengths, mask ratios, fusion layer)
    what: str      # one line for `avmae weights`
    labels: str    # where a classifier's class names come from ("" for a pretraining model)

    @property
    def url(self) -> str:
        return base_url() + self.path

    @property
    def hub_name(self) -> str:
        return hub_name(self.name)


def _entry(name, path, preset, what, labels=""):
    return OfficialWeights(name, path, preset, what, labels)


# The ten released ViT-L checkpoints (official results from the release's README; avmae has not
# evaluated them).
OFFICIAL_WEIGHTS: dict[str, OfficialWeights] = {w.name: w for w in [
    _entry("scenic/audioset-av", "audioset/as2m_selfsup_audiovisual/checkpoint", "audioset-large",
           "AudioSet-2M AV-MAE, audio + video: pretraining model"),
    _entry("scenic/audioset-av-finetuned-av",
           "audioset/as2m_selfsup_audiovisual_finetuned_audiovisual/checkpoint", "audioset-large",
           "AudioSet-2M AV-MAE finetuned audiovisual (MBT): 527 classes, official mAP 51.8", AUDIOSET_LABELS),
    _entry("scenic/audioset-av-finetuned-audio",
           "audioset/as2m_selfsup_audiovisual_finetuned_audio/checkpoint", "audioset-large",
           "AudioSet-2M AV-MAE finetuned on audio: 527 classes, official mAP 46.6", AUDIOSET_LABELS),
    _entry("scenic/audioset-av-finetuned-video",
           "audioset/as2m_selfsup_audiovisual_finetuned_video/checkpoint", "audioset-large",
           "AudioSet-2M AV-MAE finetuned on video: 527 classes, official mAP 31.1", AUDIOSET_LABELS),
    _entry("scenic/audioset-audio", "audioset/as2m_selfsup_audio/checkpoint", "audioset-large",
           "AudioSet-2M AV-MAE, audio only: pretraining model"),
    _entry("scenic/audioset-audio-finetuned-audio", "audioset/as2m_selfsup_audio_finetuned_audio/checkpoint",
           "audioset-large", "AudioSet-2M audio-only AV-MAE finetuned on audio: 527 classes, official mAP 46.4", AUDIOSET_LABELS),
    _entry("scenic/vggsound-av", "vggsound/vggsound_selfsup_audiovisual/checkpoint", "vggsound-large",
           "VGGSound AV-MAE, audio + video: pretraining model"),
    _entry("scenic/vggsound-av-finetuned-av",
           "vggsound/vggsound_selfsup_audiovisual_finetuned_audiovisual/checkpoint", "vggsound-large",
           "VGGSound AV-MAE finetuned audiovisual (MBT): 309 classes, official top-1 65.0", VGGSOUND_LABELS),
    _entry("scenic/vggsound-av-finetuned-audio",
           "vggsound/vggsound_selfsup_audiovisual_finetuned_audio/checkpoint", "vggsound-large",
           "VGGSound AV-MAE finetuned on audio: 309 classes, official top-1 57.2", VGGSOUND_LABELS),
    _entry("scenic/vggsound-av-finetuned-video",
           "vggsound/vggsound_selfsup_audiovisual_finetuned_video/checkpoint", "vggsound-large",
           "VGGSound AV-MAE finetuned on video: 309 classes, official top-1 50.3", VGGSOUND_LABELS),
]}
NAME_PREFIX = "scenic/"

CHUNK = 1 << 20        # bytes per read
TIMEOUT = 60.0         # seconds without data before a connection counts as dropped
RETRIES = 3            # attempts per download (each resumes where the last stopped)
RETRY_WAIT = 2.0       # seconds before the first retry, doubled at each


def hub_name(name: str) -> str:
    """'scenic/audioset-av-finetuned-audio' -> 'audioset_av_finetuned_audio' (a torch.hub entry point)."""
    return name.removeprefix(NAME_PREFIX).replace("-", "_")


def base_url() -> str:
    url = os.environ.get(BASE_URL_ENV) or OFFICIAL_BASE_URL
    return url if url.endswith("/") else url + "/"


def weights_cache() -> Path:
    """`$AVMAE_HOME`, else the platform's cache folder: `$XDG_CACHE_HOME/avmae` or `~/.cache/avmae`
    (Linux), `~/Library/Caches/avmae` (macOS), `%LOCALAPPDATA%\\avmae\\cache` (Windows)."""
    if os.environ.get(HOME_ENV):
        return Path(os.environ[HOME_ENV]).expanduser()
    if sys.platform == "win32" and os.environ.get("LOCALAPPDATA"):
        return Path(os.environ["LOCALAPPDATA"]) / "avmae" / "cache"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "avmae"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "avmae"


def is_weights_name(text: str | os.PathLike) -> bool:
    """True for a string that means a name (in the table, or shaped like one: 'scenic/...') and is
    not an existing file or folder (a local path always wins, as with transformers' from_pretrained)."""
    s = str(text)
    return s.startswith(NAME_PREFIX) and not Path(s).exists()


def lookup_weights(name: str) -> OfficialWeights:
    if name in OFFICIAL_WEIGHTS:
        return OFFICIAL_WEIGHTS[name]
    raise ConfigError(f"no official weights named '{name}' (and no such file); the names: "
                      f"{', '.join(OFFICIAL_WEIGHTS)}")


def download_path(name: str) -> Path:
    return weights_cache() / "downloads" / f"{lookup_weights(name).name}.msgpack"


def run_path(name: str) -> Path:
    return weights_cache() / "runs" / lookup_weights(name).name


def _note(line: str) -> None:
    sys.stderr.write(f"avmae: {line}\n")
    sys.stderr.flush()


def _size(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return ""


# --- The registry: each file's size and sha256 from its first fetch ------------------------------
def read_registry() -> dict:
    path = weights_cache() / REGISTRY
    if not path.exists():
        return {}
    try:
        record = json.loads(path.read_text())
        assert record["format"] == REGISTRY_FORMAT and isinstance(record["files"], dict)
        return record["files"]
    except (ValueError, KeyError, TypeError, AssertionError):
        raise ConfigError(f"'{path}' is not an avmae weights registry: move it away (a new one is "
                          "started, trusting the next download of each file)") from None


def _record(name: str, url: str, size: int, sha256: str) -> None:
    home = weights_cache()
    files = read_registry()
    files[name] = {"url": url, "bytes": size, "sha256": sha256,
                   "recorded": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    tmp = home / f".{REGISTRY}.tmp"
    with writing(tmp):
        tmp.write_text(json.dumps({"format": REGISTRY_FORMAT, "files": files}, indent=1) + "\n")
        os.replace(tmp, home / REGISTRY)
    _fsync_dir(home)


class RecordMismatch(ConfigError):
    """A file that differs from the registry's record of its name."""


def check_recorded(name: str, file: Path) -> tuple[int, str]:
    """(size, sha256) of `file`, refused (RecordMismatch) if it differs from the registry's record of
    `name`; recorded when there is none."""
    size, sha = file.stat().st_size, file_sha256(file)
    known = read_registry().get(name)
    if known is None:
        _record(name, lookup_weights(name).url, size, sha)
    elif (known.get("bytes"), known.get("sha256")) != (size, sha):
        raise RecordMismatch(
            f"'{name}' differs from the file recorded when it was first fetched ({known.get('recorded')}: "
            f"{known.get('bytes')} bytes, sha256 {str(known.get('sha256'))[:12]}...; this one: {size} bytes, "
            f"sha256 {sha[:12]}...): refused; if the release really changed, remove '{name}' from "
            f"{weights_cache() / REGISTRY}")
    return size, sha


# --- Downloading --------------------------------------------------------------------------------
class _Dropped(Exception):
    """The connection ended before the whole file came (retried, resuming)."""


@contextlib.contextmanager
def _locked(part: Path):
    """The .part file opened for appending and flock-ed: one downloader per file. Left empty (nothing
    came), it is removed before the lock is released: no empty .part shows as a partial download."""
    with open(part, "ab") as f:
        try:
            import fcntl
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:  # Windows: no flock; concurrent downloads of one name are the user's call
            pass
        except OSError:
            raise ConfigError(f"another process is downloading '{part}'; wait for it to finish") from None
        try:
            yield f
        finally:
            if os.fstat(f.fileno()).st_size == 0:
                part.unlink(missing_ok=True)


def _content_range(value: str | None) -> tuple[int, int] | None:
    """'bytes START-END/TOTAL' -> (START, TOTAL)."""
    m = re.fullmatch(r"bytes (\d+)-\d+/(\d+)", (value or "").strip())
    return (int(m.group(1)), int(m.group(2))) if m else None


def _fetch_once(url: str, part: Path, progress: bool, label: str) -> None:
    """Bring `part` to the whole file: a Range request for what is missing when it holds a start,
    a fresh download when the server ignores the range; a tqdm bar on a terminal when `progress`.
    Raises _Dropped when the connection ends early (what came is kept in `part`), StorageError
    when `part` cannot be written (a full disk: not retried)."""
    from tqdm import tqdm

    with _locked(part) as f:
        have = part.stat().st_size
        request = urllib.request.Request(url, headers={"User-Agent": "avmae"})
        if have:
            request.add_header("Range", f"bytes={have}-")
        try:
            response = urllib.request.urlopen(request, timeout=TIMEOUT)
        except urllib.error.HTTPError as err:
            if err.code == 416 and have:  # the range starts at or past the end of the file
                if (err.headers.get("Content-Range") or "").strip() == f"bytes */{have}":
                    return  # `part` already holds the whole file (killed before its rename)
                f.truncate(0)
                raise _Dropped("the partial download did not fit the file; starting again") from None
            raise ConfigError(f"cannot download {url}: HTTP {err.code} {err.reason}") from None
        with response:
            span = _content_range(response.headers.get("Content-Range")) if response.status == 206 else None
            if have and span and span[0] == have:
                total = span[1]
            else:  # a whole file (200): whatever `part` held is replaced
                have = 0
                f.truncate(0)
                length = response.headers.get("Content-Length")
                total = int(length) if length and length.isdigit() else None
            bar = tqdm(total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1024,
                       desc=label, disable=None if progress else True, leave=False)
            with bar, writing(part):
                try:
                    while True:
                        try:
                            chunk = response.read(CHUNK)
                        except (OSError, HTTPException) as err:
                            raise _Dropped(f"connection lost ({type(err).__name__})") from None
                        if not chunk:
                            break
                        f.write(chunk)
                        bar.update(len(chunk))
                finally:
                    f.flush()
                    os.fsync(f.fileno())
        got = part.stat().st_size
        if total is not None and got != total:
            raise _Dropped(f"connection closed after {got} of {total} bytes")


def download_weights(name: str, *, progress: bool = True) -> Path:
    """The checkpoint file of `name` in the cache: downloaded (resumed from its `.part` if an
    earlier download was interrupted) and checked against the registry. No network when it is
    already there."""
    entry = lookup_weights(name)
    final = download_path(name)
    if final.is_file():
        try:
            check_recorded(name, final)
            return final
        except RecordMismatch:  # damaged on this disk since it was checked: fetched again, and checked
            _note(f"the cached download of {name} ({final}) differs from its record; downloading it again")
            final.unlink()
    with writing(final.parent):
        final.parent.mkdir(parents=True, exist_ok=True)
    part = final.with_name(final.name + ".part")
    url = entry.url
    if part.exists() and part.stat().st_size:
        _note(f"resuming the download of {name} from {_size(part.stat().st_size)} ({url})")
    else:
        _note(f"downloading {name} ({url}) into {final.parent}")
    _fetch(name, url, part, progress)
    try:
        size, _ = check_recorded(name, part)
    except RecordMismatch:
        part.unlink()
        raise
    with writing(final):
        os.replace(part, final)  # only now does the file look complete
    _fsync_dir(final.parent)
    _note(f"downloaded {name}: {_size(size)}, sha256 recorded in {weights_cache() / REGISTRY}")
    return final


def _fetch(name: str, url: str, part: Path, progress: bool) -> None:
    """`_fetch_once` up to RETRIES times, each resuming where the last one stopped."""
    wait = RETRY_WAIT
    for attempt in range(1, RETRIES + 1):
        try:
            _fetch_once(url, part, progress, name)
            return
        except _Dropped as err:
            why = str(err)
        except (urllib.error.URLError, HTTPException, OSError) as err:
            why = str(getattr(err, "reason", None) or err) or type(err).__name__
        if attempt == RETRIES:
            kept = part.stat().st_size if part.exists() else 0
            raise ConfigError(f"cannot download {url} ({why}) after {RETRIES} attempts; " + (
                f"the {_size(kept)} that came are kept in '{part}' and the next call resumes from there"
                if kept else "nothing came: check the network (or the mirror in $" + BASE_URL_ENV + ")"))
        _note(f"download of {name} failed ({why}); trying again in {wait:.0f} s")
        time.sleep(wait)
        wait *= 2


# --- Converted runs ------------------------------------------------------------------------------
def converted(run: Path) -> bool:
    """A cached run whose conversion finished (it has a complete checkpoint)."""
    return any((c / MARKER).exists() for c in step_checkpoints(run)) if run.is_dir() else False


def pretrained_run(name: str, *, progress: bool = True) -> Path:
    """The avmae run converted from `name`, in the cache: made on first use (download, convert,
    then the download is removed), read from the cache with no network afterwards."""
    from avmae.interop.scenic import import_scenic

    entry = lookup_weights(name)
    run = run_path(name)
    if converted(run):
        return run
    file = download_weights(name, progress=progress)
    # Written in place: save_checkpoint is atomic, so a conversion killed midway leaves no complete
    # checkpoint and is redone (overwrite) by the next call.
    import_scenic(file, run, preset=entry.preset, overwrite=True, source=name, log=_note)
    size = file.stat().st_size
    file.unlink()
    _note(f"converted {name} into {run}; removed the download ({_size(size)}: its size and sha256 "
          "stay recorded, so a new download is checked)")
    return run


def cache_status(name: str) -> str:
    """'converted', 'downloaded', 'partial download (N%)' or 'not cached'."""
    if converted(run_path(name)):
        return "converted"
    final = download_path(name)
    if final.is_file():
        return "downloaded"
    part = final.with_name(final.name + ".part")
    if part.is_file():
        known = read_registry().get(name, {}).get("bytes")
        have = part.stat().st_size
        return f"partial download ({100 * have // known}%)" if known else f"partial download ({_size(have)})"
    return "not cached"

