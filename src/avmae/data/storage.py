"""Where a shards folder lives: a local folder, or an fsspec URL (s3://, gs://, https://, file://).

Two small classes with the same few methods, all that `avmae prepare` and `ShardSource` need:
read a small file (meta.json, an index), read a byte range of a shard, write a small file, put
a finished shard, list and remove names. `LocalFolder` is the local path as before (plain file
descriptors; fsspec is never imported). `RemoteFolder` goes through fsspec:

- A clip is read with one ranged request per member (`cat_file(start=, end=)`, an HTTP Range
  GET on object stores): no shard is ever downloaded whole, only the bytes the index names.
  The video request spans the window's first to last kept frame (ShardSource._window_bytes):
  with --keep-every 2 and stride 4 half of those bytes are frames the window skips, the price
  of one request per clip instead of one per frame (request latency, not bandwidth, is what an
  object store makes expensive).
- Transient failures (connection errors, timeouts, 5xx, throttling) are retried RETRIES times,
  BACKOFF seconds doubling between tries; a read that still fails, or a permanent failure (a
  missing or forbidden object), is a MediaError: the dataset skips and counts that clip
  (avmae.data.dataset's policy), the run goes on.
- Each DataLoader worker makes its own filesystem object (`reopen`, and pickling drops it): no
  connection pool or event loop is shared across a fork.

Credentials and endpoints are the protocol package's own: for s3:// the standard AWS variables
(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_PROFILE, AWS_ENDPOINT_URL for an S3-compatible
server such as MinIO or Ceph), for gs:// Google's application default credentials; any other
filesystem option through fsspec's own variables, FSSPEC_<PROTOCOL>_<OPTION> or
FSSPEC_<PROTOCOL> (a JSON object).
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import numpy as np

from avmae.config import ConfigError
from avmae.data.decode import MediaError

RETRIES = 3          # tries after the first, for a transient failure
BACKOFF = 0.5        # seconds before the first retry, doubled before each next one

# protocol -> the extra that installs its fsspec implementation
EXTRAS = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs", "http": "http", "https": "http"}

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]+://")


def is_url(location) -> bool:
    """Whether `location` is a URL (scheme://...) rather than a local path."""
    return isinstance(location, str) and bool(_URL.match(location))


def open_folder(location) -> "LocalFolder | RemoteFolder":
    """A local path or a URL -> the folder object that reads and writes it."""
    if isinstance(location, (LocalFolder, RemoteFolder)):
        return location
    return RemoteFolder(location) if is_url(location) else LocalFolder(location)


def data_exists(data) -> bool:
    """A cheap check before a run starts: a local path exists; a URL is checked when its
    meta.json is read (avmae.data.shards.read_shards_meta)."""
    return is_url(str(data)) or Path(data).exists()


# ---- local ----------------------------------------------------------------------------------------

class LocalFolder:
    """A folder on a local (or mounted) filesystem."""

    remote = False

    def __init__(self, path):
        self.path = Path(path)
        self._files: dict[str, object] = {}

    def __str__(self) -> str:
        return str(self.path)

    def exists(self, name: str) -> bool:
        return (self.path / name).is_file()

    def read_text(self, name: str) -> str:
        return (self.path / name).read_text()

    def names(self) -> list[str]:
        return [p.name for p in self.path.iterdir()] if self.path.is_dir() else []

    def remove(self, name: str) -> None:
        (self.path / name).unlink(missing_ok=True)

    def make(self) -> None:
        """Create the folder (for writing)."""
        if self.path.exists() and not self.path.is_dir():
            raise ConfigError(f"--out {self.path} is a file; give a folder")
        self.path.mkdir(parents=True, exist_ok=True)

    def staging(self) -> Path:
        """Where a shard is written before `put`: the folder itself (renamed into place)."""
        return self.path

    def write_text(self, name: str, text: str) -> None:
        """Atomically: a temporary file renamed over `name`."""
        tmp = self.path / (name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, self.path / name)

    def put(self, local: Path, name: str) -> None:
        """A finished local file -> `name`, durably (fsync, then rename)."""
        with open(local, "rb") as f:
            os.fsync(f.fileno())
        os.replace(local, self.path / name)

    def read(self, name: str, offset: int, nbytes: int) -> np.ndarray:
        """Bytes [offset, offset + nbytes) of file `name`, straight into a fresh uint8 array."""
        f = self._files.get(name)
        if f is None:  # opened lazily, so each worker process opens its own
            f = self._files[name] = open(self.path / name, "rb", buffering=0)
        buf = np.empty(nbytes, np.uint8)
        view, got = memoryview(buf), 0
        f.seek(offset)
        while got < nbytes:
            n = f.readinto(view[got:])
            if not n:
                raise MediaError(f"shard {name} is truncated")
            got += n
        return buf

    def reopen(self) -> None:
        """Forget files inherited from the parent process (called in each worker): a forked
        worker must not share a file position with its parent or siblings."""
        for f in self._files.values():
            f.close()
        self._files = {}

    def __getstate__(self):  # pickled for spawned workers: never ship open files
        return {**self.__dict__, "_files": {}}


# ---- fsspec -------------------------------------------------------------------------------------

class RemoteFolder:
    """A folder at an fsspec URL; reads are ranged, retried, and failures are MediaErrors."""

    remote = True

    def __init__(self, url: str, *, retries: int | None = None, backoff: float | None = None):
        self.url = url.rstrip("/")
        self.protocol = url.split("://", 1)[0].lower()
        self.retries = RETRIES if retries is None else retries
        self.backoff = BACKOFF if backoff is None else backoff
        self._fs = None
        self.root = self._resolve()[1]

    def __str__(self) -> str:
        return self.url

    # the filesystem object: made lazily, one per process
    def _resolve(self):
        try:
            import fsspec
        except ImportError:
            raise ConfigError(f"{self.url}: URLs need fsspec: pip install fsspec") from None
        try:
            fs, root = fsspec.core.url_to_fs(self.url, skip_instance_cache=True)
        except ImportError:
            extra = EXTRAS.get(self.protocol)
            how = (f"pip install 'avmae[{extra}]'" if extra else
                   f"pip install the fsspec implementation of {self.protocol}://")
            raise ConfigError(f"{self.url}: the {self.protocol}:// protocol is not installed; "
                              f"{how}") from None
        except ValueError as err:
            raise ConfigError(f"{self.url}: {err}".splitlines()[0]) from None
        if "s3" in _protocols(fs) and hasattr(fs, "retries"):
            fs.retries = 1  # s3fs's own loop (a class attribute) would multiply avmae's tries
        self._fs = fs
        return fs, root.rstrip("/")

    @property
    def fs(self):
        return self._fs if self._fs is not None else self._resolve()[0]

    def _path(self, name: str) -> str:
        return f"{self.root}/{name}"

    def _call(self, fn, *args, **kwargs):
        """fn(*args, **kwargs) with transient failures retried; -> its result, or raises the
        last error (permanent ones at once). These are the only retries above the client
        library's: s3fs's own loop is set to one try, and botocore's (AWS_MAX_ATTEMPTS,
        AWS_RETRY_MODE) is the user's to set."""
        for attempt in range(self.retries + 1):
            try:
                return fn(*args, **kwargs)
            except Exception as err:  # noqa: BLE001 - sorted into transient or not just below
                if not transient(err) or attempt == self.retries:
                    raise
            time.sleep(self.backoff * 2 ** attempt)

    # small files (meta.json, indexes, prepare.json) and whole shards written by prepare: a
    # failure after the retries is one line (ConfigError) naming the URL
    def _small(self, verb: str, name: str, fn, *args, missing=None, **kwargs):
        try:
            return self._call(fn, *args, **kwargs)
        except FileNotFoundError:
            if missing is not None:
                return missing
            raise ConfigError(f"cannot {verb} {self.url}/{name}: not found (does the bucket "
                              "exist?)") from None
        except Exception as err:  # noqa: BLE001 - storage failures become one line
            if not storage_error(err):
                raise
            hint = "; run again with --resume to carry on" if verb == "write" else ""
            raise ConfigError(f"cannot {verb} {self.url}/{name}: {first_line(err)}{hint}") \
                from None

    def exists(self, name: str) -> bool:
        return bool(self._small("read", name, self.fs.exists, self._path(name)))

    def read_text(self, name: str) -> str:
        return self._small("read", name, self.fs.cat_file, self._path(name)).decode()

    def names(self) -> list[str]:
        found = self._small("list", "", self.fs.ls, self.root, detail=False, missing=[])
        return [p.rstrip("/").rsplit("/", 1)[-1] for p in found]

    def remove(self, name: str) -> None:
        self._small("remove", name, self.fs.rm_file, self._path(name), missing=True)

    def make(self) -> None:
        """Object stores have no folders (and a missing bucket is an error, never created
        here); a local filesystem behind file:// needs its folder made."""
        if self.protocol in ("http", "https"):
            raise ConfigError(f"--out {self.url}: http(s) URLs are read-only; write the shards "
                              "to s3://, gs:// or a path, and serve that folder")
        if "file" in _protocols(self.fs):
            self._small("create", "", self.fs.makedirs, self.root, exist_ok=True)

    def staging(self) -> Path:
        raise NotImplementedError("a remote folder stages shards in a local temporary folder")

    def write_text(self, name: str, text: str) -> None:
        self._small("write", name, self.fs.pipe_file, self._path(name), text.encode())

    def put(self, local: Path, name: str) -> None:
        """Upload a finished local file as `name`, then delete the local copy."""
        self._small("write", name, self.fs.put_file, str(local), self._path(name))
        Path(local).unlink()

    # shards: ranged reads
    def read(self, name: str, offset: int, nbytes: int) -> np.ndarray:
        """Bytes [offset, offset + nbytes) of shard `name` by one ranged request; a MediaError
        (the clip is skipped and counted) when it still fails after the retries."""
        try:
            data = self._call(self.fs.cat_file, self._path(name), start=offset,
                              end=offset + nbytes)
        except Exception as err:  # noqa: BLE001 - any storage failure is this clip's
            if not storage_error(err):
                raise
            raise MediaError(f"reading {self.url}/{name} failed: {first_line(err)}") from None
        if len(data) > nbytes:  # a plain web server may answer a Range request with it all
            raise MediaError(f"{self.url}/{name}: the server ignored the byte range; shards "
                             "need a server that answers HTTP Range requests")
        if len(data) < nbytes:
            raise MediaError(f"shard {name} is truncated")
        return np.frombuffer(data, np.uint8).copy()  # writable, as a local read's array

    def reopen(self) -> None:
        """A fresh filesystem object in this (worker) process: connection pools and event loops
        are never shared across a fork."""
        self._fs = None

    def __getstate__(self):
        return {**self.__dict__, "_fs": None}


def first_line(err: BaseException) -> str:
    """An exception as one line (storage errors may carry a whole HTTP body)."""
    return ((str(err) or type(err).__name__).strip().splitlines() or [type(err).__name__])[0]


def _protocols(fs) -> tuple:
    p = fs.protocol
    return (p,) if isinstance(p, str) else tuple(p)


_PERMANENT = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)


def transient(err: BaseException) -> bool:
    """Whether a storage failure may go away if tried again: connection errors, timeouts,
    5xx / throttling (s3fs words these as OSError; aiohttp, for http(s)://, as ClientError)."""
    if isinstance(err, _PERMANENT):
        return False
    if isinstance(err, (OSError, TimeoutError, ConnectionError)):
        return True
    status = getattr(err, "status", None)
    if isinstance(status, int):  # aiohttp.ClientResponseError and kin: an HTTP status
        return status >= 500 or status in (408, 429)
    # connection and timeout errors of aiohttp, botocore, asyncio (not OSErrors everywhere)
    return any(word in c.__name__ for c in type(err).__mro__ for word in _TRANSIENT_WORDS)


_TRANSIENT_WORDS = ("Timeout", "Connection", "Connect", "Disconnected", "IncompleteRead",
                    "PayloadError", "StreamingError")


def storage_error(err: BaseException) -> bool:
    """Whether an exception came from storage (and so makes a broken clip), not from a bug."""
    return isinstance(err, OSError) or transient(err) or any(
        c.__module__.split(".")[0] in ("aiohttp", "botocore", "aiobotocore", "google", "fsspec",
                                       "s3fs", "gcsfs") for c in type(err).__mro__)
