"""Load test of `mnistlab serve`: N predictions from C concurrent clients on loopback.

Starts the real server (`python -m mnistlab serve MODEL --port 0`) in its own
process, waits for it, then posts MNIST test digits as the drawing page sends
them (140x140 PNG, white ink on black; `--side 280` for the full canvas) from
C concurrent keep-alive clients, and reports p50/p90/p99 latency, throughput,
errors, and how many answers matched the digit's label. The clients are
threads with the standard library's http.client, which takes far less of the
shared CPUs per request than httpx (0.4 ms against 2.5 ms here).

    MNISTLAB_DATA=/work/shared/data .venv/bin/python bench/web_load.py     # trains the notebook DNN, 1 epoch
    .venv/bin/python bench/web_load.py --model runs/dnn --requests 2000 --clients 8 --json bench/out/web.json
"""
import argparse
import http.client
import io
import json
import os
import re
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


def start_server(model, log):
    """The server process, the thread draining its log into `log`, and its base URL once it listens."""
    command = [sys.executable, "-m", "mnistlab", "serve", model, "--port", "0"]
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


def client(address, bodies, pending, results):
    """One keep-alive client: posts bodies[i] for each index it takes from the shared `pending`."""
    connection = http.client.HTTPConnection(*address, timeout=30)  # sets TCP_NODELAY, as browsers do
    for i in pending:
        start = time.perf_counter()
        try:
            connection.request("POST", "/api/predict", body=bodies[i % len(bodies)],
                               headers={"Content-Type": "image/png"})
            response = connection.getresponse()
            answer = json.loads(response.read())
            error = None if response.status == 200 else f"{response.status}: {answer.get('error')}"
        except Exception as e:  # noqa: BLE001  (a load test counts failures, it does not stop on them)
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
    def __init__(self, items):
        self.items, self.lock = iter(items), threading.Lock()

    def __iter__(self):
        return self

    def __next__(self):
        with self.lock:
            return next(self.items)


def load(url, bodies, requests, clients, warmup):
    """Warm-up requests (not counted), then the measured ones; returns (results, wall seconds)."""
    parts = urllib.parse.urlsplit(url)
    address = (parts.hostname, parts.port)
    phase(address, bodies, range(warmup), clients)
    started = time.perf_counter()
    results = phase(address, bodies, range(requests), clients)
    return results, time.perf_counter() - started


def forward_latency(model_path, repeats=300):
    """Median ms for one 28x28 image: Keras' predict and predict_on_batch against the server's Predictor."""
    from mnistlab.evaluation import load_model
    from mnistlab.web.predictor import Predictor

    model = load_model(model_path)
    image = np.random.default_rng(0).random((28, 28), dtype=np.float32)
    batch = image.reshape((1,) + tuple(model.input_shape[1:]))
    predictor = Predictor(model)
    ways = {"keras_predict": lambda: model.predict(batch, verbose=0),
            "keras_predict_on_batch": lambda: model.predict_on_batch(batch),
            "keras_call": lambda: np.asarray(model(batch, training=False)),
            "server_predictor": lambda: predictor.predict(image)}
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
    return {"requests": len(results), "clients": clients, "errors": len(errors), "p50_ms": ms(50),
            "p90_ms": ms(90), "p99_ms": ms(99), "max_ms": ms(100), "throughput_rps": round(len(results) / wall, 1),
            "agree_with_label": round(correct / max(len(seconds), 1), 4), "first_errors": errors[:3],
            "load_average": [round(v, 2) for v in os.getloadavg()], "cpus": os.cpu_count()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help=".keras file or run folder (default: train the notebook DNN for 1 epoch)")
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--digits", type=int, default=200, help="distinct MNIST test digits to cycle through")
    ap.add_argument("--side", type=int, default=140, help="PNG side in pixels (the page sends 140)")
    ap.add_argument("--forward", action="store_true",
                    help="also time one forward pass each way (Keras predict, predict_on_batch, call, the server's)")
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args()

    from mnistlab.data import load_dataset

    data = load_dataset("mnist")
    bodies = [page_like_png(d, args.side) for d in data.x_test[:args.digits]]
    labels = data.y_test[:args.digits].tolist()
    with tempfile.TemporaryDirectory() as tmp, open(os.path.join(tmp, "server.log"), "w") as log:
        model = args.model or train_model(os.path.join(tmp, "dnn"))
        server, drain, url = start_server(model, log)
        try:
            before = cpu_seconds(server.pid)
            results, wall = load(url, bodies, args.requests, args.clients, args.warmup)
            after = cpu_seconds(server.pid)
        finally:
            server.terminate()
            server.wait(30)
            drain.join()
        forward = forward_latency(model) if args.forward else None  # the server has stopped: a quiet CPU
    figures = summarize(results, labels, wall, args.clients)
    if before is not None and after is not None:  # warm-up requests included: they ran between the two reads
        figures["server_cpu_ms_per_request"] = round((after - before) / (args.requests + args.warmup) * 1e3, 2)
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
