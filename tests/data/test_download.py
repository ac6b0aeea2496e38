"""Downloads against a real HTTP server on 127.0.0.1 serving fixtures:
good, failing (HTTP 500), truncated, wrong content and slow mirrors."""

import hashlib
import http.server
import threading
import time

import pytest
from urllib3.util import Retry, Timeout

from mnistlab.data import download as dl
from mnistlab.data import idx, load_dataset
from mnistlab.data.registry import FILES, DatasetSpec
from mnistlab.errors import DataError

FAST_RETRY = Retry(total=2, backoff_factor=0, status_forcelist=(500, 502, 503), raise_on_status=True)
SHORT_TIMEOUT = Timeout(connect=2.0, read=0.5)


class Server:
    """Serves `files` ({name: bytes}) under several behaviours chosen by the URL's first part."""

    def __init__(self, files):
        self.files = files
        self.hits = []
        self.fail_first = {}  # path -> how many 500s before serving
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                server.hits.append(self.path)
                mode, _, name = self.path.strip("/").partition("/")
                body = server.files.get(name)
                if body is None:
                    return self.send_error(404)
                if mode == "flaky" and server.fail_first.get(self.path, 0) > 0:
                    server.fail_first[self.path] -= 1
                    return self.send_error(500)
                if mode == "broken":
                    return self.send_error(500)
                if mode == "wrong":
                    body = body[::-1]
                if mode == "slow":
                    time.sleep(2)
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: len(body) // 2] if mode == "truncated" else body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def served(synthetic_dir):
    files = {stem + ".gz": (synthetic_dir / (stem + ".gz")).read_bytes() for stem in FILES}
    md5 = {stem: hashlib.md5(idx.read_bytes(synthetic_dir / (stem + ".gz"))).hexdigest() for stem in FILES}
    server = Server(files)
    yield server, DatasetSpec("synthetic", md5, (), tuple("0123456789"))
    server.close()


def fetch_all(spec, folder, mirrors):
    dl.download(spec, folder, mirrors=mirrors, retries=FAST_RETRY, timeout=SHORT_TIMEOUT)


def assert_complete(folder, spec):
    names = sorted(p.name for p in folder.iterdir())
    assert names == sorted(stem + ".gz" for stem in FILES), names  # no .part left behind
    for stem, md5 in spec.md5.items():
        assert hashlib.md5(idx.read_bytes(folder / (stem + ".gz"))).hexdigest() == md5


@pytest.mark.slow
def test_good_mirror(served, tmp_path):
    server, spec = served
    fetch_all(spec, tmp_path / "out", [server.url + "/good/"])
    assert_complete(tmp_path / "out", spec)


@pytest.mark.slow
@pytest.mark.parametrize("bad", ["broken", "truncated", "wrong", "slow", "missing"])
def test_bad_mirror_falls_through_to_the_next(served, tmp_path, bad):
    server, spec = served
    fetch_all(spec, tmp_path / "out", [f"{server.url}/{bad}/", server.url + "/good/"])
    assert_complete(tmp_path / "out", spec)
    assert any(h.startswith(f"/{bad}/") for h in server.hits)


@pytest.mark.slow
def test_transient_500_is_retried_on_the_same_mirror(served, tmp_path):
    server, spec = served
    for stem in FILES:
        server.fail_first[f"/flaky/{stem}.gz"] = 2
    fetch_all(spec, tmp_path / "out", [server.url + "/flaky/"])
    assert_complete(tmp_path / "out", spec)
    assert len(server.hits) == 3 * len(FILES)


@pytest.mark.slow
@pytest.mark.parametrize(
    "bad, reason", [("broken", "500"), ("truncated", "IncompleteRead"), ("wrong", "checksum mismatch")]
)
def test_all_mirrors_bad_leaves_nothing_and_says_why(served, tmp_path, bad, reason):
    server, spec = served
    with pytest.raises(DataError) as err:
        fetch_all(spec, tmp_path / "out", [f"{server.url}/{bad}/"])
    assert reason in str(err.value) and "from any mirror" in str(err.value)
    assert list((tmp_path / "out").iterdir()) == []


@pytest.mark.slow
def test_load_dataset_downloads_real_mnist_into_the_cache(tmp_path, monkeypatch, mnist):
    """The whole path on real files: not found locally -> mirror -> cache -> verified load."""
    src = mnist.folder
    from pathlib import Path

    server = Server({p.name: p.read_bytes() for p in Path(src).glob("*.gz")})
    try:
        monkeypatch.delenv("MNISTLAB_DATA", raising=False)
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
        monkeypatch.setenv("MNISTLAB_MIRRORS", f"{server.url}/broken/,{server.url}/good/")
        data = load_dataset("mnist")
    finally:
        server.close()
    assert data.folder == str(tmp_path / "mnistlab" / "mnist")
    assert (data.x_test == mnist.x_test).all() and (data.y_train == mnist.y_train).all()


@pytest.mark.slow
def test_no_network_error_says_where_to_put_files(tmp_path, monkeypatch):
    monkeypatch.delenv("MNISTLAB_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("MNISTLAB_MIRRORS", "http://127.0.0.1:9/")  # nothing listens on port 9
    from mnistlab.data import load as load_mod

    monkeypatch.setattr(load_mod, "SYSTEM_DIR", tmp_path / "sys")
    monkeypatch.setattr(dl, "RETRY", FAST_RETRY)
    with pytest.raises(DataError) as err:
        load_dataset("fashion-mnist")
    msg = str(err.value)
    assert "could not download" in msg and "put train-images-idx3-ubyte.gz" in msg
    assert not (tmp_path / "mnistlab" / "fashion-mnist").exists() or not any(
        (tmp_path / "mnistlab" / "fashion-mnist").iterdir()
    )
