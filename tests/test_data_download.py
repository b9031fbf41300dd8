"""Downloads against a local HTTP server: mirrors, checksums, retries, cache, offline."""

import gzip
import hashlib
import http.server
import os
import socket
import threading

import numpy as np
import pytest

from npcnn.data import (
    DATASETS,
    ChecksumError,
    DataError,
    DatasetSpec,
    DownloadError,
    FileSpec,
    default_cache_dir,
    load_dataset,
    load_split,
)
from npcnn.data import download as download_module
from npcnn.data.datasets import IDX_FILE_NAMES
from npcnn.data.idx import encode_idx

CLASSES = ("zero", "one", "two")


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        server = self.server
        with server.lock:
            server.requests.append(self.path)
            queue = server.routes.get(self.path)
            behaviour = (queue.pop(0) if len(queue) > 1 else queue[0]) if queue else ("status", 404)
        kind, value = behaviour
        if kind == "status":
            self.send_error(value)
        elif kind == "drop":
            self.close_connection = True  # no response at all
        elif kind == "short":
            self.send_response(200)
            self.send_header("Content-Length", str(len(value) + 1000))
            self.end_headers()
            self.wfile.write(value[: len(value) // 2])
            self.close_connection = True
        else:
            self.send_response(200)
            self.send_header("Content-Length", str(len(value)))
            self.end_headers()
            self.wfile.write(value)

    def log_message(self, *args):
        pass


class LocalServer:
    """A threaded HTTP server on 127.0.0.1; ``routes`` maps a path to a list of
    behaviours, consumed one per request (the last one repeats)."""

    def __init__(self):
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.routes = {}
        self.httpd.requests = []
        self.httpd.lock = threading.Lock()
        # A short poll interval keeps shutdown() (once per test) fast.
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()

    def mirror(self, prefix):
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{prefix}/"

    def serve(self, prefix, name, *behaviours):
        self.httpd.routes[f"/{prefix}/{name}"] = list(behaviours)

    @property
    def requests(self):
        return list(self.httpd.requests)

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    srv = LocalServer()
    yield srv
    srv.close()


@pytest.fixture(autouse=True)
def _no_retry_wait(monkeypatch):
    monkeypatch.setattr(download_module, "RETRY_DELAY", 0.0)


@pytest.fixture
def closed_port_mirror():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/mirror/"


def _toy_arrays():
    rng = np.random.default_rng(0)
    return [
        rng.integers(0, 256, (12, 28, 28), dtype=np.uint8),
        rng.integers(0, 3, 12).astype(np.uint8),
        rng.integers(0, 256, (5, 28, 28), dtype=np.uint8),
        rng.integers(0, 3, 5).astype(np.uint8),
    ]


def _gz(array, level=9):
    return gzip.compress(encode_idx(array), compresslevel=level, mtime=0)


@pytest.fixture
def toy():
    """The toy data set's arrays, its published .gz files and their checksums."""
    arrays = _toy_arrays()
    blobs = dict(zip(IDX_FILE_NAMES, (_gz(a) for a in arrays), strict=True))
    md5 = {n: hashlib.md5(b).hexdigest() for n, b in blobs.items()}
    sha = {
        n: hashlib.sha256(encode_idx(a)).hexdigest()
        for n, a in zip(IDX_FILE_NAMES, arrays, strict=True)
    }
    return arrays, blobs, md5, sha


def _spec(mirrors, md5=None, sha=None, search_dirs=()):
    files = tuple(FileSpec(n, (md5 or {}).get(n), (sha or {}).get(n)) for n in IDX_FILE_NAMES)
    return DatasetSpec("toy", CLASSES, files, tuple(mirrors), tuple(search_dirs))


def _serve_all(server, prefix, blobs, kind="ok"):
    for name, blob in blobs.items():
        server.serve(prefix, name, (kind, blob))


def _assert_equal(ds, arrays):
    for got, want in zip(
        (ds.train_images, ds.train_labels, ds.test_images, ds.test_labels), arrays, strict=True
    ):
        np.testing.assert_array_equal(got, want)


def _leftovers(directory):
    return [p.name for p in directory.rglob("*") if p.name.startswith(".")]


def test_download_verify_and_cache_reuse(server, toy, tmp_path):
    arrays, blobs, md5, _ = toy
    _serve_all(server, "m1", blobs)
    spec = _spec([server.mirror("m1")], md5=md5)
    ds = load_dataset(spec=spec, cache_dir=tmp_path, progress=False)
    _assert_equal(ds, arrays)
    assert ds.name == "toy" and ds.classes == list(CLASSES)
    assert ds.train_labels.dtype == np.int64
    assert sorted(server.requests) == sorted(f"/m1/{n}" for n in IDX_FILE_NAMES)
    assert sorted(p.name for p in (tmp_path / "toy").iterdir()) == sorted(IDX_FILE_NAMES)
    assert (tmp_path / "toy" / IDX_FILE_NAMES[0]).read_bytes() == blobs[IDX_FILE_NAMES[0]]

    again = load_dataset(spec=spec, cache_dir=tmp_path, progress=False)
    assert len(server.requests) == 4  # the second load made no request
    _assert_equal(again, arrays)


def test_registry_entry_and_env_cache_dir(server, toy, tmp_path, monkeypatch):
    arrays, blobs, md5, _ = toy
    _serve_all(server, "m1", blobs)
    monkeypatch.setitem(DATASETS, "toy", _spec([server.mirror("m1")], md5=md5))
    monkeypatch.setenv("NPCNN_DATA", str(tmp_path / "env"))
    assert default_cache_dir() == tmp_path / "env"
    ds = load_dataset("Toy", progress=False)
    _assert_equal(ds, arrays)
    assert (tmp_path / "env" / "toy" / IDX_FILE_NAMES[1]).is_file()


def test_recompressed_copy_accepted_when_sha256_known(server, toy, tmp_path):
    arrays, _, md5, sha = toy
    for name, array in zip(IDX_FILE_NAMES, arrays, strict=True):
        recompressed = gzip.compress(encode_idx(array), compresslevel=1, mtime=12345)
        assert hashlib.md5(recompressed).hexdigest() != md5[name]
        server.serve("m1", name, ("ok", recompressed))
    ds = load_dataset(spec=_spec([server.mirror("m1")], md5=md5, sha=sha), cache_dir=tmp_path)
    _assert_equal(ds, arrays)


def test_sha256_mismatch_is_detected(server, toy, tmp_path):
    _, blobs, _, sha = toy
    _serve_all(server, "m1", blobs)
    sha = dict(sha, **{IDX_FILE_NAMES[2]: "0" * 64})
    with pytest.raises(ChecksumError, match=r"expected sha256 of the decompressed bytes 0{64}"):
        load_dataset(spec=_spec([server.mirror("m1")], sha=sha), cache_dir=tmp_path)


def test_corrupt_first_mirror_falls_back_to_second(server, toy, tmp_path):
    arrays, blobs, md5, _ = toy
    for name, blob in blobs.items():
        server.serve("bad", name, ("ok", blob[:-8] + b"\x00" * 8))
        server.serve("good", name, ("ok", blob))
    spec = _spec([server.mirror("bad"), server.mirror("good")], md5=md5)
    ds = load_dataset(spec=spec, cache_dir=tmp_path)
    _assert_equal(ds, arrays)
    name = IDX_FILE_NAMES[0]
    assert server.requests.count(f"/bad/{name}") == 1  # a checksum failure is not retried
    assert server.requests.count(f"/good/{name}") == 1
    assert _leftovers(tmp_path) == []


def test_all_mirrors_corrupt_raises_with_expected_and_actual(server, toy, tmp_path):
    _, blobs, md5, _ = toy
    name = IDX_FILE_NAMES[0]
    corrupt = blobs[name][:-8] + b"\x00" * 8
    for prefix in ("a", "b"):
        _serve_all(server, prefix, blobs)
        server.serve(prefix, name, ("ok", corrupt))
    spec = _spec([server.mirror("a"), server.mirror("b")], md5=md5)
    with pytest.raises(ChecksumError) as info:
        load_dataset(spec=spec, cache_dir=tmp_path)
    message = str(info.value)
    assert name in message
    assert md5[name] in message
    assert hashlib.md5(corrupt).hexdigest() in message
    assert server.mirror("a") + name in message and server.mirror("b") + name in message
    assert not (tmp_path / "toy" / name).exists()
    assert _leftovers(tmp_path) == []


def test_non_gzip_body_fails_md5_check(server, toy, tmp_path):
    # An HTML error page served with status 200 must not pass as a decompressed copy.
    _, blobs, md5, _ = toy
    _serve_all(server, "m1", blobs)
    server.serve("m1", IDX_FILE_NAMES[1], ("ok", b"<html>not here</html>"))
    with pytest.raises(ChecksumError, match=IDX_FILE_NAMES[1]):
        load_dataset(spec=_spec([server.mirror("m1")], md5=md5), cache_dir=tmp_path)


def test_partial_transfer_is_retried_then_next_mirror(server, toy, tmp_path):
    arrays, blobs, md5, _ = toy
    _serve_all(server, "short", blobs, kind="short")
    _serve_all(server, "good", blobs)
    spec = _spec([server.mirror("short"), server.mirror("good")], md5=md5)
    ds = load_dataset(spec=spec, cache_dir=tmp_path)
    _assert_equal(ds, arrays)
    name = IDX_FILE_NAMES[0]
    assert server.requests.count(f"/short/{name}") == download_module.DEFAULT_ATTEMPTS
    assert _leftovers(tmp_path) == []


def test_partial_transfer_everywhere_is_an_error(server, toy, tmp_path):
    _, blobs, md5, _ = toy
    _serve_all(server, "short", blobs, kind="short")
    with pytest.raises(DownloadError, match=r"received \d+ of \d+ bytes"):
        load_dataset(spec=_spec([server.mirror("short")], md5=md5), cache_dir=tmp_path)
    assert _leftovers(tmp_path) == []
    assert not (tmp_path / "toy").exists()  # nothing, not even an empty folder


@pytest.mark.parametrize("failure", [("status", 503), ("drop", None), ("short", b"x" * 100)])
def test_transient_failure_is_retried_on_the_same_mirror(server, toy, tmp_path, failure):
    arrays, blobs, md5, _ = toy
    for name, blob in blobs.items():
        server.serve("m1", name, failure, ("ok", blob))
    spec = _spec([server.mirror("m1"), server.mirror("never")], md5=md5)
    ds = load_dataset(spec=spec, cache_dir=tmp_path)
    _assert_equal(ds, arrays)
    assert all(path.startswith("/m1/") for path in server.requests)
    assert len(server.requests) == 8


def test_not_found_moves_on_without_retry(server, toy, tmp_path):
    arrays, blobs, md5, _ = toy
    _serve_all(server, "good", blobs)  # nothing under /gone/: 404
    spec = _spec([server.mirror("gone"), server.mirror("good")], md5=md5)
    _assert_equal(load_dataset(spec=spec, cache_dir=tmp_path), arrays)
    assert server.requests.count(f"/gone/{IDX_FILE_NAMES[0]}") == 1


def test_offline_gives_one_message_with_files_urls_and_place(
    toy, tmp_path, closed_port_mirror, monkeypatch
):
    monkeypatch.delenv("NPCNN_DATA", raising=False)
    _, _, md5, _ = toy
    second = closed_port_mirror.replace("/mirror/", "/second/")
    spec = _spec([closed_port_mirror, second], md5=md5)
    with pytest.raises(DownloadError) as info:
        load_dataset(spec=spec, cache_dir=tmp_path)
    assert not isinstance(info.value, ChecksumError)
    message = str(info.value)
    for name in IDX_FILE_NAMES:
        assert closed_port_mirror + name in message
    assert second in message
    assert str(tmp_path / "toy") in message
    assert "NPCNN_DATA" in message
    assert _leftovers(tmp_path) == []
    assert not (tmp_path / "toy").exists()  # no empty folder left in the cache


def test_download_false_never_touches_the_network(server, toy, tmp_path):
    _, blobs, md5, _ = toy
    _serve_all(server, "m1", blobs)
    with pytest.raises(DownloadError, match="download=False") as info:
        load_dataset(spec=_spec([server.mirror("m1")], md5=md5), cache_dir=tmp_path, download=False)
    assert server.requests == []
    assert IDX_FILE_NAMES[3] in str(info.value)


def test_files_in_search_dir_used_without_network(toy, tmp_path, closed_port_mirror):
    arrays, _, md5, sha = toy
    system = tmp_path / "usr-share"
    system.mkdir()
    for name, array in zip(IDX_FILE_NAMES, arrays, strict=True):
        # Recompressed, as Debian ships them: only the sha256 can vouch for them.
        (system / name).write_bytes(gzip.compress(encode_idx(array), compresslevel=1))
    spec = _spec([closed_port_mirror], md5=md5, sha=sha, search_dirs=[str(system)])
    ds = load_dataset(spec=spec, cache_dir=tmp_path / "cache")
    _assert_equal(ds, arrays)
    assert ds.source == str(system)
    assert not (tmp_path / "cache").exists()


def test_decompressed_files_placed_by_hand_are_accepted(toy, tmp_path, closed_port_mirror):
    arrays, _, md5, _ = toy
    target = tmp_path / "toy"
    target.mkdir()
    for name, array in zip(IDX_FILE_NAMES, arrays, strict=True):
        (target / name.removesuffix(".gz")).write_bytes(encode_idx(array))
    ds = load_dataset(spec=_spec([closed_port_mirror], md5=md5), cache_dir=tmp_path)
    _assert_equal(ds, arrays)


def test_corrupt_cached_file_raises_with_hint(toy, tmp_path, closed_port_mirror):
    _, blobs, md5, _ = toy
    target = tmp_path / "toy"
    target.mkdir()
    for name, blob in blobs.items():
        (target / name).write_bytes(blob)
    bad = gzip.compress(encode_idx(np.zeros(12, np.uint8)), mtime=0)
    (target / IDX_FILE_NAMES[1]).write_bytes(bad)
    with pytest.raises(ChecksumError, match="delete the file") as info:
        load_dataset(spec=_spec([closed_port_mirror], md5=md5), cache_dir=tmp_path)
    assert str(target / IDX_FILE_NAMES[1]) in str(info.value)


def test_progress_bar_goes_to_stderr(server, toy, tmp_path, capsys):
    pytest.importorskip("tqdm")
    _, blobs, md5, _ = toy
    _serve_all(server, "m1", blobs)
    load_dataset(spec=_spec([server.mirror("m1")], md5=md5), cache_dir=tmp_path, progress=True)
    err = capsys.readouterr().err
    assert IDX_FILE_NAMES[0] in err and "B" in err


def test_unknown_name_lists_the_known_ones(tmp_path):
    with pytest.raises(DataError, match=r"unknown data set 'no-such-set'.*fashion-mnist"):
        load_dataset("no-such-set", cache_dir=tmp_path)


def test_builtin_specs_are_complete():
    assert {"sample", "mnist", "fashion-mnist", "kmnist"} <= set(DATASETS)
    for name in ("mnist", "fashion-mnist", "kmnist"):
        spec = DATASETS[name]
        assert [f.name for f in spec.files] == list(IDX_FILE_NAMES)
        assert all(f.md5 and len(f.md5) == 32 for f in spec.files)
        assert spec.mirrors and all(m.startswith(("http://", "https://")) for m in spec.mirrors)
        assert len(set(spec.classes)) == 10
    assert DATASETS["kmnist"].classes[:3] == ("o", "ki", "su")
    assert DATASETS["fashion-mnist"].classes[0] == "T-shirt/top"
    assert "/usr/share/datasets/fashion-mnist" in DATASETS["fashion-mnist"].search_dirs


DEBIAN = "/usr/share/datasets/fashion-mnist"


@pytest.mark.skipif(
    not os.path.isdir(DEBIAN), reason="Debian's dataset-fashion-mnist not installed"
)
def test_debian_fashion_mnist_found_offline_and_verified(tmp_path):
    ds = load_dataset("fashion-mnist", cache_dir=tmp_path, download=False)
    assert ds.source == DEBIAN
    assert ds.train_images.shape == (60000, 28, 28) and ds.test_images.shape == (10000, 28, 28)
    assert np.bincount(ds.train_labels).tolist() == [6000] * 10


def test_load_split_downloads_only_the_files_of_its_split(server, toy, tmp_path):
    arrays, blobs, md5, _ = toy
    _serve_all(server, "m1", blobs)
    test = load_split("toy", "test", spec=_spec([server.mirror("m1")], md5), cache_dir=tmp_path)
    np.testing.assert_array_equal(test.images, arrays[2])
    np.testing.assert_array_equal(test.labels, arrays[3])
    assert test.classes == list(CLASSES) and test.split == "test"
    assert sorted(server.requests) == [f"/m1/{name}" for name in sorted(IDX_FILE_NAMES[2:])]
    assert sorted(p.name for p in (tmp_path / "toy").iterdir()) == sorted(IDX_FILE_NAMES[2:])


def test_load_split_offline_names_only_the_missing_files_of_its_split(toy, tmp_path):
    _, _, md5, _ = toy
    with pytest.raises(DownloadError) as info:
        load_split("toy", "test", spec=_spec([], md5), cache_dir=tmp_path)
    assert IDX_FILE_NAMES[2] in info.value.summary and IDX_FILE_NAMES[0] not in info.value.summary
