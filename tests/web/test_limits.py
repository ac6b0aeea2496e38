"""The web server on a shared or exposed machine, tested on a real uvicorn server on 127.0.0.1:
Host and Origin checks, slow, idle and oversized requests, a flood of predictions, and
`mnistlab serve` refusing a model that is not a digit classifier."""

import http.client
import io
import json
import os
import socket
import struct
import threading
import time
import tracemalloc
import zlib
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from mnistlab.cli import build_parser, main
from mnistlab.cli.serve import limits_of
from mnistlab.web.app import INLINE_BYTES, PHOTO_THREADS, create_app, listen, server
from mnistlab.web.hosts import allowed_hosts
from mnistlab.web.limits import RETRY_AFTER_S, Limits
from mnistlab.web.predictor import Predictor

TIMEOUT = 1.0  # the servers' request timeout here: short, so that the tests wait little


def digit_png(padding=0):
    """A 28x28 '1'; `padding` random bytes in a private chunk make the body that big at no
    decoding cost (the reader skips unknown chunks)."""
    image = Image.new("L", (28, 28))
    image.paste(255, (12, 4, 16, 24))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    png = buffer.getvalue()
    if not padding:
        return png
    data = os.urandom(padding)
    chunk = struct.pack(">I", len(data)) + b"prVt" + data + struct.pack(">I", zlib.crc32(b"prVt" + data))
    return png[:33] + chunk + png[33:]  # after the 8-byte signature and the 25-byte IHDR


ONE = digit_png()


@pytest.fixture(scope="module")
def predictor():
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input(shape=(784,)), keras.layers.Dense(10, activation="softmax")], name="tiny")
    return Predictor(model)


@contextmanager
def running(model, limits=Limits(request_timeout_s=TIMEOUT), **options):
    """The server `mnistlab serve` runs, in a thread; yields its port."""
    sock = listen("127.0.0.1", 0)
    uvicorn_server = server(model, sock, limits=limits, log_level="warning", **options)
    thread = threading.Thread(target=uvicorn_server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not uvicorn_server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.01)
    try:
        yield sock.getsockname()[1]
    finally:
        uvicorn_server.should_exit = True
        thread.join(30)
        sock.close()


@pytest.fixture(scope="module")
def port(predictor):
    with running(predictor, allow_hosts=["digits.lan"]) as port:
        yield port


def call(port, method="GET", path="/api/model", body=None, headers=()):
    """(status, headers with lower-case names, body) of one request on a fresh connection."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request(method, path, body=body, headers=dict(headers))
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def predict(port, body=ONE, **headers):
    return call(port, "POST", "/api/predict", body, {"Content-Type": "image/png", **headers})


def read_all(sock, timeout=5.0):
    """Everything the server sends until it closes the connection; fails if it does not within `timeout`."""
    sock.settimeout(timeout)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def test_only_the_bound_names_and_allowed_hosts_are_answered(port):
    for host in ("evil.example", f"evil.example:{port}", "10.1.2.3", f"127.0.0.1.evil.example:{port}"):
        status, _, body = call(port, headers={"Host": host})
        assert (status, body) == (400, b"Invalid host header"), host
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}", "digits.lan", f"DIGITS.lan:{port}"):
        status, _, body = call(port, headers={"Host": host})
        assert status == 200 and json.loads(body)["name"] == "tiny", host
    assert predict(port, Host="evil.example")[0] == 400


def test_a_wildcard_bind_answers_its_addresses_but_not_other_names(predictor):
    assert set(allowed_hosts("127.0.0.1")) == {"127.0.0.1", "localhost", "[::1]"}
    assert allowed_hosts("192.168.7.7", ["*.lan"]) == ["192.168.7.7", "*.lan"]
    hosts = allowed_hosts("0.0.0.0")
    assert socket.gethostname().lower() in hosts
    with TestClient(create_app(predictor, hosts=hosts, any_address=True)) as client:
        for host in ("192.168.7.7:8000", "[fe80::1]:8000", "localhost:8000", socket.gethostname()):
            assert client.get("/api/model", headers={"Host": host}).status_code == 200, host
        assert client.get("/api/model", headers={"Host": "evil.example:8000"}).status_code == 400


def test_the_json_api_is_same_origin_only(port):
    evil = {"Origin": "http://evil.example"}
    status, headers, body = predict(port, **evil)
    assert status == 403 and "access-control-allow-origin" not in headers
    assert "cross-origin" in json.loads(body)["error"]
    preflight = {**evil, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"}
    status, headers, _ = call(port, "OPTIONS", "/api/predict", headers=preflight)
    assert status >= 400 and not any(h.startswith("access-control-") for h in headers)
    form = b'--B\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\nContent-Type: image/png\r\n\r\n'
    status, headers, _ = call(
        port,
        "POST",
        "/api/predict",
        form + ONE + b"\r\n--B--\r\n",
        {**evil, "Content-Type": "multipart/form-data; boundary=B"},
    )  # needs no preflight
    assert status == 403 and "access-control-allow-origin" not in headers
    assert call(port, "GET", "/api/model", headers={"Origin": "null"})[0] == 403
    status, headers, _ = predict(port, Origin=f"http://127.0.0.1:{port}")  # the page's own requests
    assert status == 200 and "access-control-allow-origin" not in headers
    assert call(port, "GET", "/", headers=evil)[0] == 200  # a link to the page is fine


@pytest.mark.slow
def test_a_slow_body_is_cut_off_while_others_are_served(port):
    with socket.create_connection(("127.0.0.1", port)) as slow:
        # From before sending: the server may read the head and arm its timer before sendall returns.
        started = time.monotonic()
        slow.sendall(
            b"POST /api/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
            b"Content-Length: 100000\r\n\r\n"
        )
        stop = threading.Event()

        def trickle():  # a byte every 50 ms: 100 KB would take over an hour
            # It falls silent halfway to the cut-off: bytes still arriving when the server closes
            # would be unread there, and the kernel then answers with a reset that can destroy the 408
            # on its way (uvicorn does no lingering close). The server cuts at TIMEOUT after the head.
            while not stop.wait(0.05) and time.monotonic() - started < TIMEOUT / 2:
                try:
                    slow.send(b"\0")
                except OSError:
                    return

        threading.Thread(target=trickle, daemon=True).start()
        served = []
        while time.monotonic() - started < TIMEOUT * 0.8:
            served.append(predict(port)[0])
        answer = read_all(slow)
        stop.set()
    elapsed = time.monotonic() - started
    assert len(served) >= 3 and set(served) == {200}
    assert answer.startswith(b"HTTP/1.1 408 ") and b"connection: close" in answer.lower()
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1]) == {"error": f"request body not received within {TIMEOUT:g} s"}
    assert TIMEOUT <= elapsed < TIMEOUT + 3
    assert predict(port)[0] == 200


@pytest.mark.slow
def test_idle_connections_and_slow_or_huge_heads_are_closed(port):
    # From before connecting: the server arms its timer when it accepts, which can be before connect returns.
    started = time.monotonic()
    idle, slow_head, huge_head = (socket.create_connection(("127.0.0.1", port)) for _ in range(3))
    slow_head.sendall(b"POST /api/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-")
    try:
        huge_head.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"X-Pad: " + b"a" * 100_000 + b"\r\n\r\n")
    except OSError:  # the server may close before all of it is sent
        pass
    with idle, slow_head, huge_head:
        assert read_all(huge_head, timeout=TIMEOUT / 2).startswith(b"HTTP/1.1 400 ")  # at once, not waited out
        assert predict(port)[0] == 200  # meanwhile
        assert read_all(idle) == b"" and read_all(slow_head) == b""  # closed without an answer
    assert TIMEOUT <= time.monotonic() - started < TIMEOUT + 3
    with socket.create_connection(("127.0.0.1", port)) as kept:  # between requests, too
        kept.sendall(b"GET /api/model HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert b'"name":"tiny"' in read_all(kept, timeout=TIMEOUT + 3)


@pytest.mark.slow
def test_connections_over_the_limit_get_503(predictor):
    with running(predictor, Limits(request_timeout_s=5, max_connections=3)) as port:
        held = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
        try:
            time.sleep(0.2)  # the server has taken them
            assert predict(port)[0] == 503
        finally:
            for sock in held:
                sock.close()
        time.sleep(0.2)
        assert predict(port)[0] == 200


class SlowPredictor(Predictor):
    """Each prediction takes `delay` seconds; records how many ran at once."""

    def __init__(self, model, delay):
        self.delay, self.running, self.peak, self.lock = 0.0, 0, 0, threading.Lock()
        super().__init__(model)
        self.delay = delay

    def predict(self, image):
        with self.lock:
            self.running += 1
            self.peak = max(self.peak, self.running)
        try:
            time.sleep(self.delay)
            return super().predict(image)
        finally:
            with self.lock:
                self.running -= 1


@pytest.mark.slow
def test_a_flood_of_predictions_gets_503s_and_memory_stays_bounded(predictor):
    queue, flood, size = 4, 48, 600_000
    body = digit_png(padding=size)
    assert len(body) > INLINE_BYTES  # classified in worker threads, as photos are
    slow = SlowPredictor(predictor.model, delay=0.4)
    with running(slow, Limits(request_timeout_s=10, max_predictions=queue)) as port:
        start = threading.Barrier(flood)

        def one(_):
            start.wait()
            return predict(port, body)

        tracemalloc.start()
        try:
            with ThreadPoolExecutor(flood) as pool:
                answers = list(pool.map(one, range(flood)))
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        statuses = [status for status, _, _ in answers]
        assert set(statuses) <= {200, 503} and statuses.count(200) >= queue and statuses.count(503) >= flood // 2
        for status, headers, reply in answers:
            if status == 503:
                assert headers["retry-after"] == str(RETRY_AFTER_S)
                assert json.loads(reply)["error"].startswith(f"busy: {queue} predictions in flight")
        assert slow.peak <= PHOTO_THREADS
        # Holding every body takes twice flood x size (58 MB, as chunks and joined; measured
        # 60 MB with a queue of 48); the queue holds `queue` bodies (9.5 MB measured), and a
        # refused one no more than what reached the server before its 503 went out (asyncio
        # reads 256 KiB at a time).
        assert peak < 2 * queue * size + flood * 256 * 1024, peak
        with ThreadPoolExecutor(queue) as pool:  # every slot was given back
            assert [a[0] for a in pool.map(lambda _: predict(port, body), range(queue))] == [200] * queue


def test_serve_options_reach_the_server(tmp_path, predictor, monkeypatch, capsys):
    assert limits_of(build_parser().parse_args(["serve", "m.keras"])) == Limits()  # the help's defaults are true
    predictor.model.save(tmp_path / "model.keras")
    seen = {}
    monkeypatch.setattr("mnistlab.web.app.serve", lambda model, **options: seen.update(options, model=model))
    assert (
        main(
            [
                "serve",
                str(tmp_path),
                "--port",
                "0",
                "--allow-host",
                "digits.lan",
                "--allow-host",
                "*.lan",
                "--request-timeout",
                "3",
                "--max-predictions",
                "5",
                "--max-connections",
                "50",
            ]
        )
        == 0
    )
    assert seen["allow_hosts"] == ["digits.lan", "*.lan"] and seen["host"] == "127.0.0.1"
    assert seen["limits"] == Limits(request_timeout_s=3.0, max_predictions=5, max_connections=50)
    assert seen["model"].file == str(tmp_path / "model.keras")
    capsys.readouterr()
    for bad in ("evil.example:80", "http://evil.example", "ev*l.example"):
        assert main(["serve", str(tmp_path), "--port", "0", "--allow-host", bad]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("mnistlab serve: error: --allow-host") and "\n" not in err


@pytest.mark.parametrize(
    "inputs, outputs, problem",
    [
        ((5,), 10, "it takes input of shape (5,), not 28x28 images"),
        ((784,), 3, "it outputs shape (3,), not 10 class probabilities"),
    ],
)
def test_serve_refuses_a_model_that_is_not_a_digit_classifier(tmp_path, capsys, inputs, outputs, problem):
    import keras

    path = tmp_path / "other.keras"
    keras.Sequential([keras.Input(shape=inputs), keras.layers.Dense(outputs)]).save(path)
    assert main(["serve", str(path), "--port", "0"]) == 1
    err = capsys.readouterr().err
    assert err == f"mnistlab serve: error: {path} is not a digit classifier: {problem}\n"
