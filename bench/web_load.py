"""Load test of `mnistlab serve`: N predictions from C concurrent clients on loopback.

Starts the real server (`python -m mnistlab serve MODEL --port 0`) in its own
process, waits for it, then posts MNIST test digits as the drawing page sends
them (140x140 PNG, white ink on black; `--side 280` for the full canvas) from
C concurrent keep-alive clients, and reports p50/p90/p99 latency, throughput,
errors, and how many answers matched the digit's label. The clients are
threads with the standard library's http.client, which takes far less of the
shared CPUs per request than httpx (0.4 ms against 2.5 ms here).

With --abuse, four abusive clients hammer the server meanwhile, from a process
of their own (so that they do not take the well-behaved clients' GIL): slow
bodies (8 connections trickling a byte every 0.2 s), oversized bodies (9 MiB,
declared and chunked, back to back), garbage (broken images, wrong types,
huge dimensions, bytes that are not HTTP, a foreign Host), and many idle
connections (--idle, half of them with half a request head), each reopened
when the server closes it. The well-behaved clients then run for --seconds
(default 30, three of the server's 10 s request timeouts), and the report says
what each abuser got back.

    MNISTLAB_DATA=/work/shared/data .venv/bin/python bench/web_load.py     # trains the notebook DNN, 1 epoch
    .venv/bin/python bench/web_load.py --model runs/dnn --requests 2000 --clients 8 --json bench/out/web.json
    MNISTLAB_DATA=/work/shared/data .venv/bin/python bench/web_load.py --abuse
"""

import argparse
import collections
import http.client
import io
import itertools
import json
import multiprocessing
import os
import re
import selectors
import shlex
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

import numpy as np

READY = re.compile(r"Open (http://\S+) in a browser")


def page_like_png(digit, side=140):
    """A 28x28 MNIST digit as the drawing page sends it: a side x side PNG, white on black."""
    from PIL import Image

    image = Image.fromarray(digit).resize((side, side), Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def train_model(folder):
    import mnistlab

    print("training the notebook DNN for 1 epoch ...", file=sys.stderr)
    mnistlab.train(model="dnn", epochs=1, out=folder, verbose=0)
    return folder


def start_server(model, log, extra=()):
    """The server process, the thread draining its log into `log`, and its base URL once it listens."""
    command = [sys.executable, "-m", "mnistlab", "serve", model, "--port", "0", *extra]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines = []
    for line in server.stderr:
        log.write(line)
        lines.append(line)
        found = READY.search(line)
        if found:
            # Keep reading its log: a full pipe would block the server.
            drain = threading.Thread(target=lambda: [log.write(line) for line in server.stderr])
            drain.start()
            return server, drain, found.group(1)
    server.wait()
    raise SystemExit(f"the server did not start: {' '.join(command)}\n{''.join(lines[-20:])}")


def cpu_seconds(pid):
    """User + system CPU time of a process so far (Linux), or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def peak_memory_mb(pid):
    """A process's peak resident memory so far (Linux VmHWM), in MB, or None."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return round(int(re.search(r"VmHWM:\s+(\d+) kB", f.read()).group(1)) / 1024, 1)
    except (OSError, AttributeError):
        return None


def client(address, bodies, pending, results):
    """One keep-alive client: posts bodies[i] for each index it takes from the shared `pending`."""
    connection = http.client.HTTPConnection(*address, timeout=30)  # sets TCP_NODELAY, as browsers do
    for i in pending:
        start = time.perf_counter()
        try:
            connection.request(
                "POST", "/api/predict", body=bodies[i % len(bodies)], headers={"Content-Type": "image/png"}
            )
            response = connection.getresponse()
            answer = json.loads(response.read())
            error = None if response.status == 200 else f"{response.status}: {answer.get('error')}"
        except Exception as e:  # a load test counts failures, it does not stop on them
            answer, error = None, f"{type(e).__name__}: {e}"
            connection.close()  # reconnects on the next request
        results.append((i, time.perf_counter() - start, answer, error))
    connection.close()


def phase(address, bodies, indices, clients):
    """Each index of `indices` posted once, from `clients` concurrent clients; one result per request:
    (index, seconds, answer or None, error or None)."""
    pending, results = SharedIterator(indices), []
    threads = [threading.Thread(target=client, args=(address, bodies, pending, results)) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


class SharedIterator:
    """The items, shared by threads; ends early once `until` (perf_counter) has passed."""

    def __init__(self, items, until=None):
        self.items, self.lock, self.until = iter(items), threading.Lock(), until

    def __iter__(self):
        return self

    def __next__(self):
        if self.until is not None and time.perf_counter() >= self.until:
            raise StopIteration
        with self.lock:
            return next(self.items)


def load(address, bodies, requests, clients, warmup, seconds=None):
    """Warm-up requests (not counted), then the measured ones (`requests` of them, or as many as
    `seconds` allow); returns (results, wall seconds)."""
    phase(address, bodies, range(warmup), clients)
    started = time.perf_counter()
    if seconds:
        indices = SharedIterator(itertools.count(), until=started + seconds)
        results = phase(address, bodies, indices, clients)
    else:
        results = phase(address, bodies, range(requests), clients)
    return results, time.perf_counter() - started


# -- the abusive clients: one process, a thread each, until `stop` is set ---------------------------

MiB = 1024 * 1024


def status_of(reply):
    """'408', '413', ... from the start of a raw HTTP reply; 'closed' when there was none."""
    found = re.match(rb"HTTP/1\.[01] (\d{3})", reply)
    return found.group(1).decode() if found else "closed"


def exchange(address, data, timeout=15.0, chunks=None):
    """Send `data` (then each of `chunks`) on a fresh connection and read the reply until the
    server closes or goes quiet; the reply's status, or 'closed'/'reset'."""
    try:
        with socket.create_connection(address, timeout=timeout) as sock:
            reply = b""
            try:
                sock.sendall(data)
                for chunk in chunks or ():
                    sock.sendall(chunk)
            except OSError:  # the server answered and closed while we were still sending
                pass
            try:
                while chunk := sock.recv(65536):
                    reply += chunk
                    if b"\r\n\r\n" in reply and b"connection: close" not in reply.lower():
                        break  # a keep-alive answer: its head is all we count
            except OSError:
                pass
            return status_of(reply) if reply else "reset"
    except OSError:
        return "refused"


def head(host, content_type="image/png", length=None, extra=b""):
    lines = [b"POST /api/predict HTTP/1.1", b"Host: " + host.encode(), b"Content-Type: " + content_type.encode()]
    lines += [b"Content-Length: %d" % length] if length is not None else [b"Transfer-Encoding: chunked"]
    return b"\r\n".join(lines) + b"\r\n" + extra + b"\r\n"


def slow_bodies(address, stop, outcomes, connections=8):
    """Connections that send a head, then a byte of body every 0.2 s, reopened when cut off."""

    def one():
        while not stop.is_set():
            started = time.monotonic()
            try:
                with socket.create_connection(address, timeout=60) as sock:
                    sock.sendall(head(f"{address[0]}:{address[1]}", length=50_000))
                    sock.setblocking(False)
                    reply, closed = b"", False
                    while not closed and not stop.wait(0.2):
                        try:
                            chunk = sock.recv(65536)
                            reply += chunk
                            closed = not chunk
                        except BlockingIOError:
                            pass
                        except OSError:
                            closed = True
                        try:
                            sock.send(b"\0")
                        except BlockingIOError:
                            pass
                        except OSError:
                            closed = True
                    if stop.is_set():
                        return
                    outcomes.append((status_of(reply) if reply else "closed", time.monotonic() - started))
            except OSError:
                outcomes.append(("refused", time.monotonic() - started))
                time.sleep(0.2)

    threads = [threading.Thread(target=one) for _ in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def oversized(address, stop, outcomes):
    """9 MiB bodies back to back: half with the length declared, half chunked with none."""
    host = f"{address[0]}:{address[1]}"
    body = os.urandom(9 * MiB)
    piece = 64 * 1024
    chunks = [b"%x\r\n" % piece + body[i : i + piece] + b"\r\n" for i in range(0, len(body), piece)] + [b"0\r\n\r\n"]
    for i in itertools.count():
        if stop.is_set():
            return
        if i % 2:
            outcomes.append((exchange(address, head(host, length=len(body)), chunks=[body]), 0))
        else:
            outcomes.append((exchange(address, head(host), chunks=chunks), 0))


def garbage(address, stop, outcomes):
    """Bad requests of every kind, back to back, each on a fresh connection."""
    from PIL import Image

    host = f"{address[0]}:{address[1]}"
    huge = io.BytesIO()
    Image.new("1", (8000, 8000)).save(huge, "PNG")  # 64 M pixels declared, a few KB sent
    kinds = [
        ("png-garbage", lambda: head(host, length=4096) + os.urandom(4096)),
        ("text", lambda: head(host, "text/plain", length=5) + b"hello"),
        ("huge-dimensions", lambda: head(host, length=len(huge.getvalue())) + huge.getvalue()),
        ("not-http", lambda: os.urandom(2048)),
        ("bad-length", lambda: head(host, length=None).replace(b"Transfer-Encoding: chunked", b"Content-Length: -7")),
        ("foreign-host", lambda: head("evil.example", length=4) + b"\x89PNG"),
    ]
    for _kind, make in itertools.cycle(kinds):
        if stop.is_set():
            return
        outcomes.append((exchange(address, make()), 0))


def idle_connections(address, stop, outcomes, count=200):
    """`count` connections that send nothing, or half a head, and wait; reopened once closed."""
    selector = selectors.DefaultSelector()

    def open_one(i):
        try:
            sock = socket.create_connection(address, timeout=10)
        except OSError:
            outcomes.append(("refused", 0))
            return
        if i % 2:
            sock.sendall(b"POST /api/predict HTTP/1.1\r\nHost: " + f"{address[0]}".encode())
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ, (i, time.monotonic()))

    for i in range(count):
        open_one(i)
    while not stop.is_set():
        for key, _ in selector.select(timeout=0.2):
            i, opened = key.data
            try:
                data = key.fileobj.recv(65536)
            except OSError:
                data = b""
            selector.unregister(key.fileobj)
            key.fileobj.close()
            outcomes.append((status_of(data) if data else "closed", time.monotonic() - opened))
            open_one(i)
    for key in list(selector.get_map().values()):
        key.fileobj.close()


def abuse(address, stop, results, idle):
    """Run the four abusers until `stop`; put {abuser: [(outcome, seconds)]} on `results`."""
    outcomes = {name: [] for name in ("slow_body", "oversized", "garbage", "idle_connections")}
    threads = [
        threading.Thread(target=slow_bodies, args=(address, stop, outcomes["slow_body"])),
        threading.Thread(target=oversized, args=(address, stop, outcomes["oversized"])),
        threading.Thread(target=garbage, args=(address, stop, outcomes["garbage"])),
        threading.Thread(target=idle_connections, args=(address, stop, outcomes["idle_connections"], idle)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    results.put(outcomes)


def abuse_summary(outcomes, seconds):
    """Per abuser: attempts, their outcomes by count, and (slow and idle ones) median seconds held."""
    summary = {}
    for name, items in outcomes.items():
        counts = collections.Counter(outcome for outcome, _ in items)
        entry = {"attempts": len(items), "per_s": round(len(items) / seconds, 1), "outcomes": dict(counts)}
        held = [s for _, s in items if s]
        if held:
            entry["median_held_s"] = round(float(np.median(held)), 2)
        summary[name] = entry
    return summary


def forward_latency(model_path, repeats=300):
    """Median ms for one 28x28 image: Keras' predict and predict_on_batch against the server's Predictor."""
    from mnistlab import load_model
    from mnistlab.web.predictor import Predictor

    model = load_model(model_path)
    image = np.random.default_rng(0).random((28, 28), dtype=np.float32)
    batch = image.reshape((1,) + tuple(model.input_shape[1:]))
    predictor = Predictor(model)
    ways = {
        "keras_predict": lambda: model.predict(batch, verbose=0),
        "keras_predict_on_batch": lambda: model.predict_on_batch(batch),
        "keras_call": lambda: np.asarray(model(batch, training=False)),
        "server_predictor": lambda: predictor.predict(image),
    }
    medians = {}
    for name, call in ways.items():
        call()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            call()
            times.append(time.perf_counter() - start)
        medians[name + "_ms"] = round(float(np.median(times)) * 1e3, 3)
    return medians


def summarize(results, labels, wall, clients):
    seconds = np.array([r[1] for r in results if r[3] is None])
    errors = [r[3] for r in results if r[3] is not None]
    correct = sum(r[2]["digit"] == labels[r[0] % len(labels)] for r in results if r[3] is None)
    ms = (lambda q: round(float(np.percentile(seconds, q)) * 1e3, 2)) if len(seconds) else (lambda q: None)
    return {
        "requests": len(results),
        "clients": clients,
        "errors": len(errors),
        "p50_ms": ms(50),
        "p90_ms": ms(90),
        "p99_ms": ms(99),
        "max_ms": ms(100),
        "throughput_rps": round(len(results) / wall, 1),
        "agree_with_label": round(correct / max(len(seconds), 1), 4),
        "first_errors": errors[:3],
        "load_average": [round(v, 2) for v in os.getloadavg()],
        "cpus": os.cpu_count(),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help=".keras file or run folder (default: train the notebook DNN for 1 epoch)")
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--digits", type=int, default=200, help="distinct MNIST test digits to cycle through")
    ap.add_argument("--side", type=int, default=140, help="PNG side in pixels (the page sends 140)")
    ap.add_argument(
        "--forward",
        action="store_true",
        help="also time one forward pass each way (Keras predict, predict_on_batch, call, the server's)",
    )
    ap.add_argument(
        "--abuse",
        action="store_true",
        help="four abusive clients meanwhile: slow bodies, oversized ones, garbage, idle connections",
    )
    ap.add_argument(
        "--seconds",
        type=float,
        help="run the measured clients this long instead of --requests (default with --abuse: 30)",
    )
    ap.add_argument("--idle", type=int, default=200, help="idle connections the abuser holds (default: 200)")
    ap.add_argument("--server-args", default="", help="more options for `mnistlab serve`, e.g. '--request-timeout 5'")
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args()
    seconds = args.seconds or (30.0 if args.abuse else None)

    from mnistlab.data import load_dataset

    data = load_dataset("mnist")
    bodies = [page_like_png(d, args.side) for d in data.x_test[: args.digits]]
    labels = data.y_test[: args.digits].tolist()
    with tempfile.TemporaryDirectory() as tmp, open(os.path.join(tmp, "server.log"), "w") as log:
        model = args.model or train_model(os.path.join(tmp, "dnn"))
        server, drain, url = start_server(model, log, shlex.split(args.server_args))
        parts = urllib.parse.urlsplit(url)
        address = (parts.hostname, parts.port)
        abusers = None
        try:
            if args.abuse:
                spawn = multiprocessing.get_context("spawn")
                stop, outcomes = spawn.Event(), spawn.Queue()
                abusers = spawn.Process(target=abuse, args=(address, stop, outcomes, args.idle))
                abusers.start()
                time.sleep(3)  # they are all at it before the first measured request
            before = cpu_seconds(server.pid)
            results, wall = load(address, bodies, args.requests, args.clients, args.warmup, seconds)
            after = cpu_seconds(server.pid)
            if abusers:
                stop.set()
                abused = abuse_summary(outcomes.get(timeout=120), wall + 3)
                abusers.join(30)
            peak_mb = peak_memory_mb(server.pid)
        finally:
            if abusers and abusers.is_alive():
                abusers.terminate()
            server.terminate()
            server.wait(30)
            drain.join()
        log.flush()
        with open(log.name) as f:
            server_log = f.read()
        forward = forward_latency(model) if args.forward else None  # the server has stopped: a quiet CPU
    figures = summarize(results, labels, wall, args.clients)
    if before is not None and after is not None and not args.abuse:  # warm-up requests ran in between
        figures["server_cpu_ms_per_request"] = round((after - before) / (len(results) + args.warmup) * 1e3, 2)
    elif before is not None and after is not None:  # the abusers' share is in it too
        figures["server_cpu_share"] = round((after - before) / wall, 2)
    figures["server_peak_mb"] = peak_mb
    figures["server_tracebacks"] = server_log.count("Traceback")
    if abusers:
        figures["abusive"] = abused
    if forward:
        figures["forward"] = forward
    figures |= {"side": args.side, "model": args.model or "notebook DNN, 1 epoch"}
    line = json.dumps(figures)
    print(line)
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            f.write(line + "\n")
    return 1 if figures["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
