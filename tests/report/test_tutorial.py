"""docs/tutorial.ipynb runs top to bottom in a real Jupyter kernel, on MNIST; its outputs show the
learning curves, the misclassified digits and the search's table; no cell prints escape codes;
rendered to HTML (and painted by headless Chromium, when installed) its pictures are there.

The committed notebook keeps its outputs (so it reads on GitHub); to refresh them:
    python tests/report/test_tutorial.py
"""

import base64
import importlib.util
import io
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

nbformat = pytest.importorskip("nbformat")
pytest.importorskip("nbclient")
if importlib.util.find_spec("ipykernel") is None:  # not imported: it would make this process look like a kernel
    pytest.skip("ipykernel not installed (pip install -e '.[test]')", allow_module_level=True)

TUTORIAL = Path(__file__).resolve().parents[2] / "docs" / "tutorial.ipynb"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ESCAPE = "\x1b["


def execute(notebook, cwd):
    """Run every cell of `notebook` in a fresh python3 kernel (this interpreter) in folder `cwd`."""
    from nbclient import NotebookClient

    NotebookClient(
        notebook,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(cwd)}},
        coalesce_streams=True,
        record_timing=False,
    ).execute()
    return notebook


def cell(notebook, code):
    """The one code cell whose source holds `code`."""
    found = [c for c in notebook.cells if c.cell_type == "code" and code in c.source]
    assert len(found) == 1, code
    return found[0]


def pngs(c):
    """Every PNG a cell shows: image/png outputs and data: images inside its HTML outputs."""
    found = []
    for output in c.outputs:
        data = output.get("data", {})
        if "image/png" in data:
            found.append(base64.b64decode(data["image/png"]))
        found += [
            base64.b64decode(b) for b in re.findall(r'src="data:image/png;base64,([^"]+)"', data.get("text/html", ""))
        ]
    return [Image.open(io.BytesIO(png)) for png in found]


def html(c):
    return "".join(o.get("data", {}).get("text/html", "") for o in c.outputs)


def stream(c, name):
    return "".join(o.text for o in c.outputs if o.output_type == "stream" and o.name == name)


def check_outputs(notebook):
    """What the tutorial's reader must see, wherever the notebook was run."""
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert all(c.execution_count for c in code), "every code cell ran"
    assert not [o for c in code for o in c.outputs if o.output_type == "error"]
    for name in ("dnn", "cnn"):  # each run shows its figures: its two learning curves, then a look inside
        shown = cell(notebook, f'{name}_run = mnistlab.train(model="{name}"')
        assert "test accuracy" in html(shown) and f"tutorial-runs/{name}" in html(shown)
        figures = pngs(shown)
        assert len(figures) == 6 and all(im.size == (600, 400) for im in figures[:2])
        assert "How far to trust it" in html(shown)
        assert "Epoch 1/" in stream(shown, "stdout")  # the progress bar, as text (no ipywidgets here)
    [both] = pngs(cell(notebook, "mnistlab.compare("))
    assert both.size[0] >= 1000
    mistakes = cell(notebook, "misclassified")
    count = re.search(r"(\d+) of 10000 test digits misclassified", stream(mistakes, "stdout"))
    assert count and 0 < int(count.group(1)) < 5000
    [gallery] = pngs(mistakes)
    assert gallery.size[0] >= 800 and ink(gallery) > 0.05  # sixteen dark digits on white
    table = html(cell(notebook, "mnistlab.list_runs("))
    assert table.count("<tr>") == 3 and ">dnn<" in table and ">cnn<" in table
    search = cell(notebook, "cv=2,")  # the grid search (the tuning study is the cell after)
    assert "<table>" in html(search) and ">SGD<" in html(search) and ">Adam<" in html(search)
    assert len(pngs(search)) == 1  # the score chart
    study = cell(notebook, 'strategy="tpe"')
    assert "tpe study: 8 trials" in html(study) and ">complete<" in html(study)
    assert len(pngs(study)) >= 2  # the optimization history and the learning curves
    printed = [o.text for c in code for o in c.outputs if o.output_type == "stream"]
    assert printed and not [t for t in printed if ESCAPE in t], "no escape codes printed into a cell"


def ink(image):
    pixels = np.asarray(image.convert("L"))
    return float((pixels < 128).mean())


@pytest.fixture(scope="module")
def executed(mnist, tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        # A kernel spec "python3" in the user's Jupyter folder could name another Python: not this one's.
        patch.setenv("JUPYTER_DATA_DIR", str(tmp_path_factory.mktemp("jupyter")))
        return execute(nbformat.read(TUTORIAL, as_version=4), tmp_path_factory.mktemp("tutorial"))


@pytest.mark.slow
def test_the_tutorial_runs_and_shows_its_figures(executed):
    check_outputs(executed)


def test_the_committed_tutorial_keeps_its_outputs():
    check_outputs(nbformat.read(TUTORIAL, as_version=4))


@pytest.mark.slow
def test_the_rendered_tutorial_shows_its_pictures(executed, tmp_path):
    from nbconvert import HTMLExporter

    # No MathJax or require.js from a CDN: the page must render offline.
    page, _ = HTMLExporter(mathjax_url="", require_js_url="").from_notebook_node(executed)
    images = re.findall(r'<img[^>]+src="data:image/png;base64,', page)
    assert len(images) >= 1 + 2 + 2 + 1 + 1 + 1  # digits, two runs' curves, comparison, mistakes, search chart
    path = tmp_path / "tutorial.html"
    path.write_text(page, encoding="utf-8")
    if CHROMIUM is None:
        pytest.skip("headless Chromium not installed (Debian: apt-get install chromium): HTML checked only")
    shot = tmp_path / "tutorial.png"
    with tempfile.TemporaryDirectory() as profile:
        done = subprocess.run(
            [
                CHROMIUM,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                f"--user-data-dir={profile}",
                f"--screenshot={shot}",
                "--window-size=1200,9000",
                path.as_uri(),
            ],
            capture_output=True,
            timeout=120,
        )
    assert shot.is_file(), done.stderr.decode(errors="replace")[-2000:]
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    blue = (pixels[..., 2] - pixels[..., 0] > 80) & (pixels[..., 2] > 150)  # matplotlib's first colour
    orange = (pixels[..., 0] - pixels[..., 2] > 120) & (pixels[..., 0] > 200)  # its second
    painted = np.flatnonzero((pixels < 200).any(axis=(1, 2)))
    assert painted.max() > 3000  # a long page, not an empty one or an error message
    assert ink(Image.open(shot).crop((0, 0, 1200, int(painted.max())))) > 0.02  # text, tables, digits
    assert blue.mean() > 0.0005 and orange.mean() > 0.0002, (blue.mean(), orange.mean())  # the curves painted
    rows_with_curves = np.flatnonzero(blue.any(axis=1))
    assert rows_with_curves.max() - rows_with_curves.min() > 2000  # pictures all down the page, not one


if __name__ == "__main__":  # refresh the committed outputs
    with tempfile.TemporaryDirectory() as work:
        notebook = execute(nbformat.read(TUTORIAL, as_version=4), work)
    check_outputs(notebook)
    nbformat.write(notebook, TUTORIAL)
    print(f"{TUTORIAL}: executed and saved", file=sys.stderr)
