"""Shards on object storage: `avmae prepare --out s3://...` and `--data s3://...` against a real
S3-compatible server (moto's, started here on 127.0.0.1), and file:// URLs.

The server runs behind a small WSGI layer that logs every request (method, key, Range header)
and can answer 503 to ranged reads: reads are shown to be ranges of a shard, never the whole
object; a transient failure is retried and gives the same sample; a lasting one makes that clip
a counted broken clip. Clients find the server as a user's would: the standard AWS variables,
AWS_ENDPOINT_URL among them (botocore's retries are turned off, AWS_MAX_ATTEMPTS=1, so the
retries seen are avmae's own).
"""

import io
import json
import os
import subprocess
import sys
import threading

import pytest
import torch
from test_dataset import TINY as DATA_SETS
from test_dataset import assert_same_batches, make_media, tiny_cfg

if os.environ.get("CI"):  # .ci/run installs the dev extra: a missing server fails, never skips
    import moto.server as moto_server
    import s3fs  # noqa: F401
else:
    pytest.importorskip("s3fs", reason="pip install -e '.[dev]' (s3fs, moto[server])")
    moto_server = pytest.importorskip("moto.server", reason="pip install -e '.[dev]'")

from werkzeug.serving import WSGIRequestHandler, make_server  # noqa: E402  (moto[server]'s)

import avmae.data.storage as storage  # noqa: E402
from avmae.cli import main  # noqa: E402
from avmae.config import ConfigError  # noqa: E402
from avmae.data import build_dataset, build_loader, prepare_shards  # noqa: E402

BUCKET = "avmae-test"


class FaultyS3:
    """WSGI layer before moto: logs requests; `fail_ranges` 503s the next N ranged GETs of keys
    containing `fail_key` (-1: all of them)."""

    def __init__(self, app):
        self.app, self.log, self.fail_ranges, self.fail_key = app, [], 0, ""

    def __call__(self, environ, start_response):
        path, rng = environ.get("PATH_INFO", ""), environ.get("HTTP_RANGE")
        self.log.append((environ["REQUEST_METHOD"], path, rng))
        if rng and self.fail_ranges and self.fail_key in path:
            self.fail_ranges -= self.fail_ranges > 0
            start_response("503 Slow Down", [("Content-Type", "application/xml")])
            return [b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate."
                    b"</Message></Error>"]
        return self.app(environ, start_response)

    def gets(self, suffix: str):
        """(path, Range) of the GETs of keys ending in `suffix` since the log was cleared."""
        return [(p, r) for m, p, r in self.log if m == "GET" and p.endswith(suffix)]


class Quiet(getattr(moto_server, "MotoRequestHandler", WSGIRequestHandler)):
    def log_request(self, *args):  # no line per request on stderr
        pass


@pytest.fixture(scope="module")
def s3():
    """A moto S3 server on a free port of 127.0.0.1, found through the AWS variables."""
    server_app = FaultyS3(moto_server.DomainDispatcherApplication(moto_server.create_backend_app))
    server = make_server("127.0.0.1", 0, server_app, threaded=True, request_handler=Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    mp = pytest.MonkeyPatch()
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1", "AWS_MAX_ATTEMPTS": "1",
                       "AWS_ENDPOINT_URL": f"http://127.0.0.1:{server.server_port}"}.items():
        mp.setenv(key, value)
    for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
        mp.delenv(key, raising=False)
    mp.setattr(storage, "BACKOFF", 0.01)  # the retries' schedule, not their number, is shortened
    import s3fs
    s3fs.S3FileSystem(skip_instance_cache=True).mkdir(BUCKET)
    yield server_app
    mp.undo()
    server.shutdown()
    thread.join()


def s3fs_client():
    import s3fs
    return s3fs.S3FileSystem(skip_instance_cache=True)


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    return make_media(tmp_path_factory.mktemp("media"))


@pytest.fixture(scope="module")
def local(media, tmp_path_factory):
    out = tmp_path_factory.mktemp("shards")
    prepare_shards(media / "good.csv", out, tiny_cfg().data, clips_per_shard=3, progress=False)
    return out


@pytest.fixture(scope="module")
def remote(s3, media, local):
    """The same manifest prepared to s3:// by the command line."""
    url = f"s3://{BUCKET}/shards/good"
    s3.log.clear()
    assert main(["prepare", str(media / "good.csv"), "--out", url, "--clips-per-shard", "3",
                 "--workers", "1", *sets(DATA_SETS)]) == 0
    s3.prepare_log = list(s3.log)
    return url


def sets(overrides: list[str]) -> list[str]:
    return sum((["--set", s] for s in overrides), [])


def test_prepare_to_s3_writes_the_local_bytes_and_meta_last(s3, local, remote):
    fs = s3fs_client()
    names = sorted(p.rsplit("/", 1)[1] for p in fs.ls(remote.removeprefix("s3://")))
    assert names == sorted(p.name for p in local.iterdir())
    assert "meta.json" in names and not any(n.endswith(".tmp") or n == "prepare.json" for n in names)
    # each tar before its index, meta.json last: a half-written folder never looks finished
    puts = [p.rsplit("/", 1)[1] for m, p, r in s3.prepare_log if m == "PUT" and "/shards/" in p]
    assert puts == ["prepare.json"] + [f"shard-{i:06d}.{e}" for i in range(3)
                                       for e in ("tar", "idx")] + ["meta.json"]
    for name in names:
        if name != "meta.json":
            assert fs.cat_file(f"{remote[5:]}/{name}") == (local / name).read_bytes(), name
    assert json.loads(fs.cat_file(f"{remote[5:]}/meta.json")) == \
        json.loads((local / "meta.json").read_text())


def test_samples_read_from_s3_equal_those_from_local_disk(s3, local, remote):
    """Training (a fresh random window per epoch, two workers: each opens its own filesystem)
    and evaluation with three views give exactly the local shards' tensors."""
    cfg = tiny_cfg()
    for train, views, workers in ((True, 1, 2), (False, 3, 0)):
        a = build_dataset(local, cfg, train=train, label_column="verb,noun", num_views=views)
        b = build_dataset(remote, cfg, train=train, label_column="verb,noun", num_views=views)
        assert a.vocab == b.vocab and len(a) == len(b)
        for epoch in (0, 1):
            batches = [list(build_loader(ds, cfg, train=train, batch_size=3, epoch=epoch,
                                         num_workers=workers)) for ds in (a, b)]
            assert_same_batches(*batches)
            assert all(x["num_skipped"] == 0 for x in batches[1])


def test_reads_are_ranges_of_a_shard_never_the_whole_object(s3, local, remote):
    cfg = tiny_cfg()
    ds = build_dataset(remote, cfg, train=True)
    s3.log.clear()
    for i in range(len(ds)):
        assert ds[i] is not None
    gets = s3.gets(".tar")
    sizes = {p.name: p.stat().st_size for p in local.glob("*.tar")}
    assert len(gets) == 2 * len(ds)  # one range for the frames, one for the log-mel, per clip
    for path, rng in gets:
        assert rng is not None, f"whole-object GET of {path}"
        lo, hi = map(int, rng.removeprefix("bytes=").split("-"))
        assert hi - lo + 1 < sizes[path.rsplit("/", 1)[1]] / 3   # a member's part, not a shard
    assert not any(m == "GET" and r is None and p.endswith(".tar") for m, p, r in s3.log)


def test_a_transient_failure_is_retried_and_gives_the_same_sample(s3, local, remote):
    cfg = tiny_cfg()
    a, b = (build_dataset(x, cfg, train=True) for x in (local, remote))
    s3.log.clear()
    s3.fail_ranges, s3.fail_key = 2, ".tar"
    sample = b[4]
    assert s3.fail_ranges == 0
    first = s3.gets(".tar")[:3]
    assert len(first) == 3 and len({r for _, r in first}) == 1  # the same range, asked thrice
    assert sample is not None
    assert_same_batches([sample], [a[4]])


def test_a_lasting_failure_makes_a_counted_broken_clip_not_a_crash(s3, local, remote, caplog):
    cfg = tiny_cfg()
    ds = build_dataset(remote, cfg, train=False)
    s3.fail_ranges, s3.fail_key = -1, "shard-000001.tar"   # clips 3, 4, 5
    try:
        s3.log.clear()
        batches = list(build_loader(ds, cfg, train=False, batch_size=4))
    finally:
        s3.fail_ranges = 0
    assert [b["num_skipped"] for b in batches] == [1, 2]
    assert [b["index"].tolist() for b in batches] == [[0, 1, 2], [6, 7]]
    # each broken clip's first read was tried 1 + RETRIES times, then given up
    assert len(s3.gets("shard-000001.tar")) == 3 * (1 + storage.RETRIES)
    assert "shard-000001.tar failed" in caplog.text and "request rate" in caplog.text
    local_batches = list(build_loader(build_dataset(local, cfg, train=False), cfg, train=False,
                                      batch_size=4))
    assert torch.equal(batches[1]["video"], local_batches[1]["video"][2:])
    assert torch.equal(batches[0]["audio"], local_batches[0]["audio"][:3])


def test_a_missing_bucket_or_folder_is_one_line_and_exit_2(s3, media, tmp_path, capsys):
    cfg_sets = sets(DATA_SETS)
    for url in ("s3://no-such-bucket/shards", f"s3://{BUCKET}/no/such/folder"):
        assert main(["pretrain", "--preset", "tiny-4l-cpu", "--data", url,
                     "--out", str(tmp_path / "run"), "--overwrite", *cfg_sets]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and url in err and "not a shards folder" in err, err
        with pytest.raises(ConfigError, match="no meta.json"):
            build_dataset(url, tiny_cfg(), train=False)
    assert main(["prepare", str(media / "good.csv"), "--out", "s3://no-such-bucket/shards",
                 *cfg_sets]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no-such-bucket" in err and "bucket" in err, err
    assert main(["stats", f"s3://{BUCKET}/shards/good"]) == 2  # stats reads manifests only
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is a URL" in err and "manifest" in err, err


def test_a_protocol_not_installed_is_one_line_naming_the_extra(monkeypatch, tmp_path, capsys):
    import fsspec  # noqa: F401  (loads fsspec.registry)
    monkeypatch.setitem(sys.modules, "gcsfs", None)   # as if gcsfs were not installed
    monkeypatch.delitem(sys.modules["fsspec.registry"]._registry, "gs", raising=False)
    with pytest.raises(ConfigError, match=r"pip install 'avmae\[gcs\]'"):
        build_dataset("gs://bucket/shards", tiny_cfg(), train=False)
    assert main(["pretrain", "--preset", "tiny-4l-cpu", "--data", "gs://bucket/shards",
                 "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "gs:// protocol is not installed" in err, err
    with pytest.raises(ConfigError, match="Protocol not known: nosuch"):
        build_dataset("nosuch://bucket/shards", tiny_cfg(), train=False)


def test_file_urls_read_and_write_as_local_paths(media, local, tmp_path):
    url = (tmp_path / "f").as_uri()
    prepare_shards(media / "good.csv", url, tiny_cfg().data, clips_per_shard=3, progress=False)
    assert sorted(p.name for p in (tmp_path / "f").iterdir()) == sorted(p.name for p in local.iterdir())
    for p in local.glob("shard-*"):
        assert (tmp_path / "f" / p.name).read_bytes() == p.read_bytes()
    cfg = tiny_cfg()
    a, b = (build_dataset(x, cfg, train=True, label_column="label") for x in (local, url))
    assert_same_batches(list(build_loader(a, cfg, train=True, batch_size=4, epoch=3)),
                        list(build_loader(b, cfg, train=True, batch_size=4, epoch=3)))


def test_an_interrupted_prepare_to_s3_resumes_to_the_same_bytes(s3, media, tmp_path, monkeypatch):
    import avmae.data.prepare as prep
    cfg = tiny_cfg()
    whole = prepare_shards(media / "mixed.csv", tmp_path / "whole", cfg.data, clips_per_shard=2,
                           progress=False)
    url = f"s3://{BUCKET}/shards/cut"
    decode, calls = prep.decode_clip, []

    def killed_at_row_4(clip, *args):
        calls.append(clip.path.name)
        if len(calls) == 5:
            raise KeyboardInterrupt  # dies while shard 1 is being written
        return decode(clip, *args)
    monkeypatch.setattr(prep, "decode_clip", killed_at_row_4)
    with pytest.raises(KeyboardInterrupt):
        prepare_shards(media / "mixed.csv", url, cfg.data, clips_per_shard=2, progress=False)
    fs = s3fs_client()
    assert not fs.exists(f"{url[5:]}/meta.json") and fs.exists(f"{url[5:]}/shard-000000.idx")
    calls.clear()
    monkeypatch.setattr(prep, "decode_clip", lambda clip, *a: calls.append(clip.path.name)
                        or decode(clip, *a))
    meta = prepare_shards(media / "mixed.csv", url, cfg.data, clips_per_shard=2, resume=True,
                          progress=False)
    assert calls == ["garbage.mp4", "video_only.mp4", "audio_only.mp4"]  # shard 0 kept
    assert {k: v for k, v in meta.items() if k != "source"} == \
        {k: v for k, v in whole.items() if k != "source"}
    fs.invalidate_cache()
    assert sorted(p.rsplit("/", 1)[1] for p in fs.ls(url[5:])) == \
        sorted(p.name for p in (tmp_path / "whole").iterdir())
    for shard in whole["shards"]:
        for name in (shard["tar"], shard["index"]):
            assert fs.cat_file(f"{url[5:]}/{name}") == (tmp_path / "whole" / name).read_bytes()


def test_local_shards_never_import_fsspec(local):
    """The local path stays as it was: plain files, no fsspec."""
    code = ("import sys; from test_dataset import tiny_cfg; from avmae.data import build_dataset; "
            f"ds = build_dataset({str(local)!r}, tiny_cfg(), train=True); assert ds[0] is not None; "
            "print('fsspec' in sys.modules)")
    tests = os.path.dirname(__file__)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tests,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join([tests, *sys.path])})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


@pytest.fixture()
def web(local):
    """The local shards folder served over http:// on 127.0.0.1; `ranges` off: a server that
    answers every Range request with the whole file (as Python's own http.server does)."""
    import functools
    import http.server

    class Handler(http.server.SimpleHTTPRequestHandler):
        ranges = True

        def log_message(self, *args):
            pass

        def send_head(self):
            rng = self.headers.get("Range")
            if not (rng and self.ranges):
                return super().send_head()
            data = (local / self.path.lstrip("/")).read_bytes()
            lo, hi = map(int, rng.removeprefix("bytes=").split("-"))
            part = data[lo:hi + 1]
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {lo}-{lo + len(part) - 1}/{len(data)}")
            self.send_header("Content-Length", str(len(part)))
            self.end_headers()
            return io.BytesIO(part)

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Handler, directory=str(local)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", Handler
    server.shutdown()
    thread.join()


def test_shards_on_a_web_server_read_by_ranges(media, local, web, monkeypatch, caplog):
    pytest.importorskip("aiohttp")
    monkeypatch.setattr(storage, "BACKOFF", 0.01)
    url, handler = web
    cfg = tiny_cfg()
    a, b = (build_dataset(x, cfg, train=True, label_column="verb,noun") for x in (local, url))
    assert_same_batches(list(build_loader(a, cfg, train=True, batch_size=4, epoch=2)),
                        list(build_loader(b, cfg, train=True, batch_size=4, epoch=2)))
    handler.ranges = False  # the whole shard for every read: refused, each clip counted
    batch = list(build_loader(b, cfg, train=False, batch_size=8))[0]
    assert batch["num_skipped"] == 8
    assert "ignored the byte range" in caplog.text
    with pytest.raises(ConfigError, match="read-only"):
        prepare_shards(media / "good.csv", url + "/more", tiny_cfg().data, progress=False)


def test_pretraining_reads_its_shards_from_s3(s3, remote, tmp_path):
    """The whole loop on s3:// data, two loader workers (each its own filesystem object)."""
    from conftest import TINY
    run = tmp_path / "run"
    s3.log.clear()
    assert main(["pretrain", "--preset", "tiny-4l-cpu", "--data", remote, "--out", str(run),
                 *sets(TINY + ["data.mel_bins=32", "data.num_workers=2", "train.steps=2",
                               "train.batch_size=4", "train.figure_clips=0"])]) == 0
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r][-1] == 2
    assert [(r["clips"], r["skipped"]) for r in records if "epoch_end" in r] == [(8, 0)]
    assert s3.gets(".tar") and all(r for _, r in s3.gets(".tar"))
