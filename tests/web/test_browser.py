"""End to end: `mnistlab serve` with a model trained here on real MNIST, and the
page driven in headless Chromium (Debian's, through Playwright): a vertical
stroke reads as 1, a closed loop as 0, an uploaded file as the model says.
Screenshots go to test-artifacts/."""

import math
import os
import queue
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from mnistlab.inference import predict

CHROMIUM = os.environ.get("MNISTLAB_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not os.access(CHROMIUM, os.X_OK), reason=f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    ),
]


@pytest.fixture(scope="module")
def run_folder(dnn_run):
    return dnn_run


class Server:
    """`mnistlab serve` as a user runs it, on a free port that it picks and reports."""

    START_S = 180  # loading Keras and compiling take a while on a busy 2-core machine

    def __init__(self, model):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mnistlab", "serve", str(model), "--port", "0"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines = queue.Queue()  # its log, read continually so that a full pipe never blocks it
        threading.Thread(
            target=lambda: [self.lines.put(line) for line in self.process.stderr] + [self.lines.put("")], daemon=True
        ).start()
        self._url = None

    @property
    def url(self):
        """Waits for the server to listen (the browser starts meanwhile)."""
        log, deadline = [], time.monotonic() + self.START_S
        while self._url is None:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                line = ""
            if not line:
                pytest.fail("mnistlab serve did not start:\n" + "".join(log))
            log.append(line)
            if found := re.search(r"Open (http://127\.0\.0\.1:\d+) in a browser", line):
                self._url = found.group(1)
        return self._url

    def stop(self):
        self.process.terminate()
        self.process.wait(30)


@pytest.fixture(scope="module")
def page(run_folder):
    from playwright.sync_api import sync_playwright

    server = Server(run_folder)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 900, "height": 700})
            page.goto(server.url)
            yield page
            browser.close()
    finally:
        server.stop()


def canvas_box(page):
    box = page.locator("#pad").bounding_box()
    return box["x"], box["y"], box["width"], box["height"]


def draw(page, points, pause_ms=10):
    """One pointer stroke through `points` given as fractions of the canvas."""
    x0, y0, w, h = canvas_box(page)
    page.mouse.move(x0 + points[0][0] * w, y0 + points[0][1] * h)
    page.mouse.down()
    for fx, fy in points[1:]:
        page.mouse.move(x0 + fx * w, y0 + fy * h, steps=2)
        page.wait_for_timeout(pause_ms)
    page.mouse.up()


def shown_digit(page, expected, artifact):
    """Wait for the page to show `expected`; keep a screenshot either way."""
    try:
        page.wait_for_function("d => document.getElementById('digit').textContent === d", arg=expected, timeout=15_000)
        page.wait_for_timeout(250)  # let the bars' transition finish for the picture
    finally:
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / artifact))
    return page.text_content("#digit")


def test_vertical_stroke_reads_as_one_while_drawing(page):
    x0, y0, w, h = canvas_box(page)
    requests = []

    def sent(request):
        if "/api/predict" in request.url:
            requests.append(request)

    page.on("request", sent)
    page.mouse.move(x0 + 0.5 * w, y0 + 0.15 * h)
    page.mouse.down()
    for i in range(1, 21):  # slowly enough for the throttle to send more than once
        page.mouse.move(x0 + 0.5 * w, y0 + (0.15 + 0.035 * i) * h)
        page.wait_for_timeout(15)
    # The answer arrives while the pointer is still down: updated as you draw.
    page.wait_for_function("document.getElementById('digit').textContent !== '–'", timeout=15_000)
    page.mouse.up()
    assert shown_digit(page, "1", "web_one.png") == "1"
    page.remove_listener("request", sent)
    assert len(requests) >= 2
    assert re.fullmatch(r"\d+\.\d% sure", page.text_content("#confidence"))
    bars = page.eval_on_selector_all("#bars .fill", "els => els.map(e => parseFloat(e.style.height))")
    assert len(bars) == 10 and max(bars) == bars[1] and 99 <= sum(bars) <= 101


def test_clear_then_closed_loop_reads_as_zero(page):
    page.click("#clear")
    assert page.text_content("#digit") == "–"
    ink = page.evaluate("""() => {
        const c = document.getElementById('pad'), d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let lit = 0; for (let i = 0; i < d.length; i += 4) lit += d[i] > 0; return lit; }""")
    assert ink == 0
    loop = [
        (0.5 + 0.2 * math.sin(2 * math.pi * t / 36), 0.5 - 0.32 * math.cos(2 * math.pi * t / 36)) for t in range(37)
    ]
    draw(page, loop)
    assert shown_digit(page, "0", "web_zero.png") == "0"
    # The map of what made the answer, drawn beside it: coloured on the ring, white elsewhere.
    page.wait_for_function("document.getElementById('heat').dataset.shown === '1'", timeout=15_000)
    heat = page.evaluate("""() => Array.from(document.getElementById('heat').getContext('2d')
        .getImageData(0, 0, 28, 28).data)""")
    pixels = [heat[i : i + 3] for i in range(0, len(heat), 4)]
    marked = [p for p in pixels if p != [255, 255, 255]]
    assert 20 <= len(marked) <= 28 * 28 // 2  # the ring's pixels (ink, colours), not the whole square
    assert any(r > 200 and r - g > 60 for r, g, b in marked)  # red: pixels that spoke for the zero
    assert pixels[0] == [255, 255, 255]  # a corner, far from the ink, counted for nothing
    page.click("#clear")
    assert page.evaluate("document.getElementById('heat').dataset.shown") == ""


def test_uploaded_file_reads_as_the_model_says(page, mnist, run_folder, tmp_path):
    from PIL import Image

    from mnistlab import load_model

    digit = tmp_path / "digit.png"
    Image.fromarray(mnist.x_test[0]).save(digit)
    expected = str(int(predict(load_model(run_folder), [digit]).argmax()))
    page.click("#clear")
    page.set_input_files("#upload", str(digit))
    assert shown_digit(page, expected, "web_upload.png") == expected
    assert "digit.png" in page.text_content("#status")
    page.set_input_files("#upload", {"name": "notes.txt", "mimeType": "text/plain", "buffer": b"hello"})
    page.wait_for_function("document.getElementById('status').classList.contains('error')", timeout=15_000)
    assert "not an image" in page.text_content("#status")
