"""Official weights by name (avmae.interop.weights, `avmae weights`, hubconf.py), without the network.

A real HTTP server on 127.0.0.1, started by each test, serves the committed Scenic test vectors
(tests/data/scenic: small Flax checkpoints made by the official model code) under the official
paths; AVMAE_WEIGHTS_BASE_URL points avmae at it and AVMAE_HOME at a fresh cache. The server honours
Range requests and can drop the connection halfway through a response, and it records every request,
so a test sees whether a download resumed with a Range request or touched the network at all.
"""

from __future__ import annotations

import http.server
import importlib.util
import json
import re
import socket
import threading
from pathlib import Path

import pytest
import torch

import avmae
from avmae.checkpoint import load_weights
from avmae.cli import main
from avmae.config import PRESETS, ConfigError
from avmae.interop import OFFICIAL_WEIGHTS, import_scenic, weights
from avmae.interop.weights import OFFICIAL_BASE_URL, download_path, run_path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data" / "scenic"
# The official names whose family a committed test vector is (tiny, random weights): the import
# infers the same kind, modalities and encoder as from the released file. The three AudioSet
# unimodal classifiers have no vector of their own.
VECTORS = {"scenic/audioset-av": "audioset_pretrain.optimizer",
           "scenic/audioset-av-finetuned-av": "audioset_mbt.params",
           "scenic/audioset-audio": "audioset_audio_pretrain.optimizer",
           "scenic/vggsound-av": "vggsound_pretrain.params",
           "scenic/vggsound-av-finetuned-av": "vggsound_mbt.params",
           "scenic/vggsound-av-finetuned-audio": "vggsound_audio.params",
           "scenic/vggsound-av-finetuned-video": "vggsound_video.params"}
PREFIX = "/scenic-bucket/av_mae/"   # the official URL's path, kept under the loopback host


def vector(name: str) -> bytes:
    return (DATA / f"{VECTORS[name]}.msgpack").read_bytes()


class WeightsServer:
    """http.server in a thread: GET with Range (206 + Content-Range, 416 past the end), a
    `drop` count of responses cut off halfway (headers promise the whole body, half is sent, the
    socket is closed), and `requests`: (path, Range header or None) of every GET."""

    def __init__(self):
        self.files: dict[str, bytes] = {PREFIX + OFFICIAL_WEIGHTS[n].path: vector(n) for n in VECTORS}
        self.requests: list[tuple[str, str | None]] = []
        self.drop = 0
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                rng = self.headers.get("Range")
                server.requests.append((self.path, rng))
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                start = 0
                if rng:
                    start = int(re.fullmatch(r"bytes=(\d+)-", rng).group(1))
                    if start >= len(body):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(body)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                payload = body[start:]
                if server.drop:
                    server.drop -= 1
                    self.wfile.write(payload[:len(payload) // 2])
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                self.wfile.write(payload)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}{PREFIX}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()

    def ranges(self) -> list[str | None]:
        return [r for _, r in self.requests]


@pytest.fixture
def server(tmp_path, monkeypatch):
    s = WeightsServer()
    monkeypatch.setenv("AVMAE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("AVMAE_WEIGHTS_BASE_URL", s.url)
    monkeypatch.setattr(weights, "RETRY_WAIT", 0.0)
    yield s
    s.stop()


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, f"expected one line, got:\n{text}"
    return lines[0]


def error_line(stderr: str) -> str:
    """A command's failure: progress notes may come first, then exactly one error line, no traceback."""
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if ": error: " in line]
    assert len(errors) == 1 and stderr.strip().splitlines()[-1] == errors[0], stderr
    return errors[0]


def same_model(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert a.config.to_json() == b.config.to_json()
    assert getattr(a, "labels", None) == getattr(b, "labels", None)


# --- The table ------------------------------------------------------------------------------------
def test_the_table_names_the_ten_released_checkpoints():
    assert len(OFFICIAL_WEIGHTS) == 10
    hub = [w.hub_name for w in OFFICIAL_WEIGHTS.values()]
    assert len(set(hub)) == 10 and all(h.isidentifier() for h in hub)
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for w in OFFICIAL_WEIGHTS.values():
        assert w.url == OFFICIAL_BASE_URL + w.path and w.path.endswith("/checkpoint")
        assert w.preset in PRESETS
        # a classifier says where its class names come from; a pretraining model has none
        assert bool(w.labels) == ("finetuned" in w.name)
        assert f"`{w.name}`" in readme and w.url in readme and f"`{w.hub_name}`" in readme


# --- Downloading --------------------------------------------------------------------------------
def test_an_interrupted_download_resumes_with_a_range_request(server):
    name = "scenic/vggsound-av"
    server.drop = 1   # the first response stops halfway
    file = weights.download_weights(name, progress=False)
    ranges = server.ranges()
    assert ranges[0] is None and len(ranges) == 2, ranges
    resumed_at = int(re.fullmatch(r"bytes=(\d+)-", ranges[1]).group(1))
    assert 0 < resumed_at < len(vector(name))
    assert file.read_bytes() == vector(name)
    assert not file.with_name(file.name + ".part").exists()


def test_a_killed_download_leaves_only_a_part_file_that_the_next_call_resumes(server, monkeypatch):
    name = "scenic/audioset-av-finetuned-av"
    monkeypatch.setattr(weights, "RETRIES", 1)
    server.drop = 1
    with pytest.raises(ConfigError) as err:
        weights.download_weights(name, progress=False)
    assert ".part" in one_line(str(err.value))
    final = download_path(name)
    part = final.with_name(final.name + ".part")
    assert not final.exists(), "an interrupted download must not look complete"
    assert 0 < part.stat().st_size < len(vector(name))
    assert weights.cache_status(name).startswith("partial download")
    kept = part.stat().st_size
    assert weights.download_weights(name, progress=False).read_bytes() == vector(name)
    assert server.ranges() == [None, f"bytes={kept}-"]


def test_a_part_file_already_whole_is_used(server):
    name = "scenic/vggsound-av-finetuned-video"
    final = download_path(name)
    final.parent.mkdir(parents=True)
    final.with_name(final.name + ".part").write_bytes(vector(name))  # killed before the rename
    assert weights.download_weights(name, progress=False).read_bytes() == vector(name)
    assert server.ranges() == [f"bytes={len(vector(name))}-"]   # answered 416, nothing re-sent


def test_a_different_second_download_is_refused_with_one_line(server, tmp_path, capsys):
    name = "scenic/vggsound-av-finetuned-audio"
    first = weights.download_weights(name, progress=False)
    recorded = json.loads((tmp_path / "home" / "registry.json").read_text())["files"][name]
    assert recorded["bytes"] == len(vector(name))
    first.unlink()                                   # a later fetch (the cache was cleared)...
    path = PREFIX + OFFICIAL_WEIGHTS[name].path
    body = bytearray(vector(name))
    body[len(body) // 2] ^= 0xFF                     # ...gets a file one byte different
    server.files[path] = bytes(body)
    with pytest.raises(ConfigError) as err:
        weights.download_weights(name, progress=False)
    assert "differs from the file recorded" in one_line(str(err.value))
    final = download_path(name)
    assert not final.exists() and not final.with_name(final.name + ".part").exists()
    # the command line: the same refusal, one line, exit status 2; the registry is unchanged
    capsys.readouterr()
    assert main(["import-scenic", name, "--out", str(tmp_path / "run")]) == 2
    assert "differs from the file recorded" in error_line(capsys.readouterr().err)
    assert json.loads((tmp_path / "home" / "registry.json").read_text())["files"][name] == recorded
    # the real file again: accepted
    server.files[path] = vector(name)
    assert weights.download_weights(name, progress=False).read_bytes() == vector(name)


def test_a_cached_download_damaged_on_disk_is_fetched_again(server):
    name = "scenic/vggsound-av"
    file = weights.download_weights(name, progress=False)
    file.write_bytes(file.read_bytes()[:-1] + b"x")
    files = dict(server.files)
    server.files.clear()                 # the new download fails: the damaged file is not left behind
    with pytest.raises(ConfigError, match="HTTP 404"):
        weights.download_weights(name, progress=False)
    assert not file.exists()
    server.files.update(files)
    assert weights.download_weights(name, progress=False).read_bytes() == vector(name)
    assert server.ranges() == [None, None, None]


def test_one_downloader_per_file(server):
    fcntl = pytest.importorskip("fcntl")
    name = "scenic/vggsound-av"
    final = download_path(name)
    final.parent.mkdir(parents=True)
    part = final.with_name(final.name + ".part")
    with open(part, "ab") as other:          # another process's download in progress
        other.write(b"x")
        other.flush()
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(ConfigError, match="another process is downloading"):
            weights.download_weights(name, progress=False)
        assert part.read_bytes() == b"x" and server.requests == []


def test_a_missing_file_on_the_server_is_one_line(server, capsys):
    server.files.clear()
    assert main(["import-scenic", "scenic/audioset-av", "--out", "unused"]) == 2
    assert "HTTP 404" in error_line(capsys.readouterr().err)
    assert weights.cache_status("scenic/audioset-av") == "not cached"   # no empty .part left


# --- Loading by name ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(VECTORS))
def test_load_by_name_equals_importing_the_same_file(name, server, tmp_path):
    model = avmae.load(name)
    by_path = tmp_path / "by_path"  # the preset the import infers (test_scenic_import: the official setups)
    import_scenic(DATA / f"{VECTORS[name]}.msgpack", by_path, log=lambda *_: None)
    same_model(model, avmae.load(by_path))
    assert not download_path(name).exists(), "the download is removed once converted"
    _, _, _, meta = load_weights(run_path(name))
    assert json.loads(meta["source"])["name"] == name


def test_the_cache_is_used_without_a_server(server, monkeypatch):
    name = "scenic/audioset-av"
    first = avmae.load(name)
    n = len(server.requests)
    server.stop()
    monkeypatch.setenv("AVMAE_WEIGHTS_BASE_URL", "http://127.0.0.1:9/nothing-listens-here/")
    again = avmae.load(name)
    same_model(first, again)
    assert len(server.requests) == n
    server.stop = lambda: None  # already stopped


def test_an_existing_path_wins_over_a_name(server, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    import_scenic(DATA / "vggsound_video.params.msgpack", Path("scenic/audioset-av"), log=lambda *_: None)
    model = avmae.load("scenic/audioset-av")
    assert model.modalities == ["video"] and server.requests == []


def test_bad_names_get_one_line_listing_the_valid_ones(server, tmp_path, capsys):
    with pytest.raises(ConfigError) as err:
        avmae.load("scenic/audioset-avv")
    line = one_line(str(err.value))
    assert "scenic/audioset-avv" in line and all(n in line for n in OFFICIAL_WEIGHTS)
    assert main(["import-scenic", "scenic/vggsound", "--out", str(tmp_path / "run")]) == 2
    line = one_line(capsys.readouterr().err)   # nothing before it: no download was tried
    assert "scenic/vggsound" in line and all(n in line for n in OFFICIAL_WEIGHTS)
    assert server.requests == []


def test_import_scenic_takes_a_name_and_keeps_the_download(server, tmp_path, capsys):
    name, run = "scenic/vggsound-av-finetuned-av", tmp_path / "run"
    assert main(["import-scenic", name, "--out", str(run)]) == 0
    out = capsys.readouterr()
    assert f"avmae import-scenic {name} --labels FILE" in out.err   # the placeholder-names warning
    assert "next: avmae evaluate" in out.out
    assert download_path(name).read_bytes() == vector(name)       # kept, for another --labels
    by_path = tmp_path / "by_path"
    import_scenic(DATA / f"{VECTORS[name]}.msgpack", by_path, log=lambda *_: None)
    same_model(avmae.load(run), avmae.load(by_path))
    # a second import uses the cached download: no request
    n = len(server.requests)
    assert main(["import-scenic", name, "--out", str(tmp_path / "run2")]) == 0
    assert len(server.requests) == n


# --- avmae weights --------------------------------------------------------------------------------
def test_weights_command_shows_what_is_cached(server, tmp_path, capsys):
    def table() -> dict[str, str]:
        assert main(["weights"]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert lines[0].startswith(f"cache: {tmp_path / 'home'}")
        rows = {}
        for line in lines[2:2 + len(OFFICIAL_WEIGHTS)]:
            name, rest = line.split(None, 1)
            rows[name] = rest.split("  ")[0].strip()
        assert list(rows) == list(OFFICIAL_WEIGHTS)
        return rows

    assert set(table().values()) == {"not cached"}
    weights.download_weights("scenic/vggsound-av", progress=False)
    avmae.load("scenic/audioset-audio")
    rows = table()
    assert rows["scenic/vggsound-av"] == "downloaded" and rows["scenic/audioset-audio"] == "converted"
    assert sum(v == "not cached" for v in rows.values()) == 8
    assert main(["weights", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed["cache"] == str(tmp_path / "home")
    entry = next(w for w in listed["weights"] if w["name"] == "scenic/audioset-audio")
    assert entry["cached"] == "converted" and entry["hub_name"] == "audioset_audio"
    assert entry["url"] == server.url + OFFICIAL_WEIGHTS["scenic/audioset-audio"].path


# --- torch.hub ------------------------------------------------------------------------------------
def test_hubconf_has_one_entry_point_per_name():
    spec = importlib.util.spec_from_file_location("hubconf_under_test", ROOT / "hubconf.py")
    hubconf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hubconf)
    # what torch.hub.list shows: the public callables of hubconf
    entry_points = sorted(n for n in dir(hubconf) if callable(getattr(hubconf, n)) and not n.startswith("_"))
    assert entry_points == sorted(w.hub_name for w in OFFICIAL_WEIGHTS.values())
    for dep in hubconf.dependencies:
        assert importlib.util.find_spec(dep) is not None, dep
    with pytest.raises(ValueError, match="pretrained=True"):
        hubconf.vggsound_av(pretrained=False)


def test_torch_hub_load_by_name(server):
    model = torch.hub.load(str(ROOT), "vggsound_av_finetuned_video", source="local")
    same_model(model, avmae.load("scenic/vggsound-av-finetuned-video"))
    model = torch.hub.load(str(ROOT), "audioset_av", source="local", pretrained=True)
    assert model.config.model.encoder == "mid" and not model.training


def test_the_warning_of_a_classifier_loaded_by_name_names_the_command_that_adds_labels(server, tmp_path, capsys):
    name = "scenic/vggsound-av-finetuned-video"
    assert avmae.load(name).labels[:2] == ["class_000", "class_001"]
    command = re.search(r"`(avmae import-scenic [^`]*)`", capsys.readouterr().err).group(1)
    labels = tmp_path / "names.txt"
    labels.write_text("".join(f"sound {i}\n" for i in range(309)))
    argv = command.split()[1:]
    assert argv[argv.index("--out") + 1] == str(run_path(name)) and "--overwrite" in argv
    argv[argv.index("FILE")] = str(labels)
    n = len(server.requests)
    assert main(argv) == 0                     # the download is fetched again (load removed it)
    assert len(server.requests) == n + 1
    assert avmae.load(name).labels[:2] == ["sound 0", "sound 1"]
