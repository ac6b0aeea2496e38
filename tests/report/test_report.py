"""report.html: a run folder's and a search folder's page, complete, self-contained, and
rendered by a real browser (headless Chromium, when installed)."""

import base64
import io
import os
import re
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mnistlab.cli import main
from mnistlab.storage import write_json

RUN_SECTIONS = {
    "summary": "Test results",
    "curves": "Learning curves",
    "confusion": "Confusion matrix",
    "per-class": "Per-class precision, recall and F1",
    "pairs": "Most confused pairs",
    "mistakes": "Misclassified test digits",
    "why": "Why this answer",
    "trust": "How far to trust it",
    "learned": "What it learned",
    "model": "Model",
    "config": "Configuration",
}


class Page(HTMLParser):
    """What a test needs from a page: sections and their headings, images, links, table rows."""

    def __init__(self, text):
        super().__init__()
        self.sections, self.images, self.links, self.figures, self.rows = {}, [], [], 0, {}
        self._section = self._heading = None
        self._row = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "section":
            self._section = attrs.get("id")
            self.rows[self._section] = []
        elif tag == "h2":
            self._heading = ""
        elif tag == "img":
            self.images.append(attrs.get("src", ""))
        elif tag == "a":
            self.links.append(attrs.get("href", ""))
        elif tag == "figure":
            self.figures += 1
        elif tag == "tr" and self._section:
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._row.append("")

    def handle_endtag(self, tag):
        if tag == "h2":
            self.sections[self._section] = self._heading
            self._heading = None
        elif tag == "tr" and self._row is not None:
            self.rows[self._section].append(self._row)
            self._row = None

    def handle_data(self, data):
        if self._heading is not None:
            self._heading += data
        if self._row:
            self._row[-1] += data


def external_references(text):
    """Anything the page would fetch: src/href that is not data: or #, url(...), @import, or an http(s) URL."""
    refs = re.findall(r"""(?:src|href)\s*=\s*["']?(?!data:|#)([^"'\s>]+)""", text)
    refs += re.findall(r"url\(|@import|https?://", text)
    return refs


@pytest.fixture(scope="module")
def run_dir(dnn_run, tmp_path_factory):
    """The shared run, copied: the report is written into it."""
    return Path(shutil.copytree(dnn_run, tmp_path_factory.mktemp("run") / "dnn1"))


@pytest.fixture(scope="module")
def report(run_dir):
    assert main(["report", str(run_dir)]) == 0
    return run_dir / "report.html"


@pytest.mark.slow
def test_run_report_has_every_section_and_fetches_nothing(report):
    text = report.read_text(encoding="utf-8")
    page = Page(text)
    assert page.sections == RUN_SECTIONS
    assert external_references(text) == []
    assert len(page.images) >= 2 + 2 + 60 and all(src.startswith("data:image/png;base64,") for src in page.images)
    assert sorted(page.links) == sorted("#" + sid for sid in RUN_SECTIONS)
    for src in page.images[:4]:  # curves and heat maps: real PNGs of a readable size
        image = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
        assert image.format == "PNG" and min(image.size) >= 300


def test_run_report_figures_match_scikit_learn(report, run_dir, mnist):
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    from mnistlab import load_model
    from mnistlab.inference import predict

    y = mnist.y_test
    pred = predict(load_model(run_dir), mnist.x_test).argmax(1)
    page = Page(report.read_text(encoding="utf-8"))
    per_class = page.rows["per-class"]
    assert per_class[0] == ["class", "precision", "recall", "F1", "test images"]
    precision, recall, f1, support = precision_recall_fscore_support(y, pred)
    for k, row in enumerate(per_class[1:11]):
        assert row == [str(k), f"{precision[k]:.4f}", f"{recall[k]:.4f}", f"{f1[k]:.4f}", str(support[k])]
    assert [r[0] for r in per_class[11:]] == ["macro average", "weighted average"]
    cm = confusion_matrix(y, pred)
    np.fill_diagonal(cm, 0)
    pairs = page.rows["pairs"][1:]
    assert [int(r[2]) for r in pairs] == sorted(cm.ravel(), reverse=True)[: len(pairs)]
    t, p = np.unravel_index(cm.argmax(), cm.shape)
    assert int(pairs[0][2]) == cm[t, p]
    # the gallery: the 60 most confident mistakes, captioned true / pred / confidence
    assert page.figures == min(60, int((pred != y).sum()))
    summary = report.read_text(encoding="utf-8")
    assert f"{int((pred != y).sum())} / 10000" in summary


def test_run_report_lists_layers_and_config(report, run_dir):
    import json

    from mnistlab import load_model

    model = load_model(run_dir)
    page = Page(report.read_text(encoding="utf-8"))
    layers = page.rows["model"][1:]
    assert [r[0] for r in layers] == [layer.name for layer in model.layers]
    assert sum(int(r[3].replace(",", "")) for r in layers) == model.count_params()
    config = json.loads((run_dir / "config.json").read_text())
    shown = dict(page.rows["config"][1:])
    assert shown["model"] == "dnn" and shown["batch_size"] == "64" and set(shown) == set(config)


@pytest.mark.slow
def test_gallery_size_option(run_dir, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    assert main(["report", str(copy), "--gallery", "5"]) == 0
    assert f"report: {copy / 'report.html'}" in capsys.readouterr().out
    assert Page((copy / "report.html").read_text(encoding="utf-8")).figures == 5


@pytest.mark.slow
def test_run_report_draws_missing_curves(run_dir, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    os.remove(copy / "accuracy.png")
    os.remove(copy / "loss.png")
    (copy / "report.html").unlink(missing_ok=True)
    assert main(["report", str(copy), "--gallery", "1"]) == 0
    text = (copy / "report.html").read_text(encoding="utf-8")
    curves = text[text.index('id="curves"') : text.index('id="confusion"')]
    assert curves.count("data:image/png;base64,") == 2


@pytest.mark.slow
def test_train_report_flag_writes_the_page(synthetic_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--epochs",
                "1",
                "--data-dir",
                str(synthetic_dir),
                "--no-verify",
                "--out",
                str(out),
                "--quiet",
                "--report",
            ]
        )
        == 0
    )
    assert f"report: {out / 'report.html'}" in capsys.readouterr().out
    page = Page((out / "report.html").read_text(encoding="utf-8"))
    assert page.sections == RUN_SECTIONS


def write_search_folder(folder):
    """A search folder as mnistlab's search writes it, with the search's own writers."""
    from mnistlab.search import results as tables
    from mnistlab.search.plots import search_scores_png
    from mnistlab.storage import SearchFolder

    candidates = [{"optimizer": name} for name in ("SGD", "RMSprop", "Adam", "Nadam")]
    scores = [[0.87, 0.88], [0.95, 0.96], [0.96, 0.958], [0.96, 0.955]]
    rows = tables.summarise(candidates, scores, [[3.0, 3.2]] * 4, [[0.1, 0.1]] * 4)
    folder.mkdir()
    tables.write_results(str(folder), rows)
    best = tables.best_index(rows)
    SearchFolder(folder).save_scores(
        search_scores_png(
            [tables.label(r["params"]) for r in rows],
            [r["mean_test_score"] for r in rows],
            [r["std_test_score"] for r in rows],
            best=best,
        )
    )
    write_json(
        folder / "best.json",
        {
            "best_params": rows[best]["params"],
            "best_score": rows[best]["mean_test_score"],
            "cv": 2,
            "test_metrics": {"test_accuracy": 0.961},
        },
    )
    return rows


def test_search_report_sorted_table_and_chart(tmp_path):
    folder = tmp_path / "search"
    rows = write_search_folder(folder)
    assert main(["report", str(folder)]) == 0
    text = (folder / "report.html").read_text(encoding="utf-8")
    page = Page(text)
    assert set(page.sections) >= {"best", "scores", "results"}
    assert external_references(text) == []
    assert len(page.images) == 1 and page.images[0].startswith("data:image/png;base64,")
    table = page.rows["results"]
    assert table[0][:2] == ["rank", "optimizer"]
    ranks = [int(r[0]) for r in table[1:]]
    assert ranks == sorted(ranks) == sorted(r["rank_test_score"] for r in rows)
    assert table[1][1] == "Adam" and "0.9610" in text  # best mean 0.959; refit test accuracy shown


@pytest.mark.slow
def test_search_report_draws_a_missing_chart(tmp_path):
    folder = tmp_path / "search"
    write_search_folder(folder)
    os.remove(folder / "scores.png")
    assert main(["report", str(folder)]) == 0
    assert len(Page((folder / "report.html").read_text(encoding="utf-8")).images) == 1


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: None, "no such folder"),
        (lambda p: p.mkdir(), "neither a run folder"),
        (lambda p: (p.mkdir(), (p / "results.json").write_text("{not json")), "cannot read it as JSON"),
    ],
)
def test_report_errors_are_one_line(tmp_path, capsys, make, message):
    folder = tmp_path / "x"
    make(folder)
    assert main(["report", str(folder)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("mnistlab report: error: ") and message in err


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def chromium(*args, timeout=120):
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run(
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
                *args,
            ],
            capture_output=True,
            timeout=timeout,
        )


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed (Debian: apt-get install chromium)")
def test_chromium_renders_the_report(report, tmp_path):
    shot = tmp_path / "report.png"
    done = chromium(f"--screenshot={shot}", "--window-size=1200,4000", report.as_uri())
    assert shot.is_file(), done.stderr.decode(errors="replace")[-2000:]
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert pixels.shape == (4000, 1200, 3)
    ink = (pixels.min(axis=2) < 200).mean()
    blue = ((pixels[..., 2] - pixels[..., 0] > 60) & (pixels[..., 2] > 100)).mean()  # heat-map cells
    assert ink > 0.03, ink  # text, charts and digits drawn, not an empty page
    assert blue > 0.005, blue  # the embedded heat maps decoded and painted
    dom = chromium("--dump-dom", report.as_uri()).stdout.decode()
    assert Page(dom).sections == RUN_SECTIONS


def test_run_summary_shows_the_test_time_augmented_accuracy_beside_the_plain_one():
    from mnistlab.report.run_page import summary

    y, pred = np.array([0, 1, 2, 3]), np.array([0, 1, 2, 0])
    probabilities = np.eye(4)[pred] * 0.9 + 0.025
    plain = summary({"test_accuracy": 0.75, "test_loss": 0.5}, y, pred, probabilities)
    assert "0.7500" in plain and "test-time" not in plain
    with_copies = summary(
        {"test_accuracy": 0.75, "test_loss": 0.5, "tta_test_accuracy": 0.8125, "tta_copies": 8}, y, pred, probabilities
    )
    assert "0.8125" in with_copies and "test-time augmentation (8 copies)" in with_copies
    older = summary(
        {"test_accuracy": 0.75, "test_loss": 0.5, "tta_test_accuracy": 0.8125, "tta_views": 4}, y, pred, probabilities
    )  # metrics.json before the copies had one name
    assert "test-time augmentation (4 copies)" in older


def section_text(text, sid):
    """The HTML of section `sid` of a page."""
    start = text.index(f'<section id="{sid}">')
    return text[start : text.index("</section>", start)]


def png_of_src(src):
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))).convert("RGB"))


def panels(pixels):
    """How many panels figures.filters_png drew: runs of non-grey columns in each band of non-grey rows."""
    from mnistlab.report.figures import PANEL_GREY

    ink = (pixels != PANEL_GREY).any(axis=2)

    def runs(mask):  # (starts, ends) of the runs of True
        edges = np.diff(np.concatenate([[0], mask.astype(int), [0]]))
        return np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)

    count = 0
    for top, bottom in zip(*runs(ink.any(axis=1))):
        count += len(runs(ink[top:bottom].any(axis=0))[0])
    return count


def test_run_report_looks_inside_the_model(report, run_dir, mnist):
    from mnistlab import load_model
    from mnistlab.calibration import expected_calibration_error, log_loss
    from mnistlab.inference import predict_proba

    text = report.read_text(encoding="utf-8")
    model = load_model(run_dir)
    y = mnist.y_test.astype(int)
    probabilities = predict_proba(model, mnist.x_test, calibrated=False)
    pred = probabilities.argmax(axis=1)
    images = {sid: Page(section_text(text, sid)).images for sid in ("why", "trust", "learned")}
    assert all(src.startswith("data:image/png;base64,") for srcs in images.values() for src in srcs)
    assert [len(images[sid]) for sid in ("why", "trust", "learned")] == [1, 1, 2]
    # why: the six most confident mistakes, named in the figure's description
    wrong = np.flatnonzero(pred != y)
    top = wrong[np.argsort(-probabilities[wrong, pred[wrong]], kind="stable")][:6]
    why = section_text(text, "why")
    assert all(f"{i} (true {y[i]}, predicted {pred[i]})" in why for i in top)
    assert png_of_src(images["why"][0]).shape[1] >= 6 * 100
    # trust: the cards are calibration's figures on the same probabilities (the run is not calibrated)
    trust = section_text(text, "trust")
    assert f"<b>{expected_calibration_error(probabilities, y):.4f}</b><span>expected calibration error</span>" in trust
    assert f"<b>{log_loss(probabilities, y):.4f}</b><span>test log-loss</span>" in trust
    # learned: the dense first layer's first 16 units, one panel each; the PCA map
    learned = section_text(text, "learned")
    assert "first 16 of the 400 units" in learned and "16 first-layer filters" in learned
    assert panels(png_of_src(images["learned"][0])) == 16
    assert "first 2000 test images" in learned and "PCA" in learned


def test_trust_shows_before_and_after_a_temperature(dnn_run, mnist):
    from mnistlab import load_model
    from mnistlab.calibration import calibration_scores
    from mnistlab.inference import predict, predict_proba
    from mnistlab.report.insight import trust
    from mnistlab.storage.model_file import set_temperature

    model = load_model(dnn_run)
    x, y = mnist.x_test[:2000], mnist.y_test[:2000].astype(int)
    scores = calibration_scores(predict_proba(model, x), y, 1.7)
    set_temperature(model, 1.7)
    html = trust(model, x, y, predict(model, x))
    assert html.count("data:image/png;base64,") == 1
    for key, label in (
        ("calibration_error", "expected calibration error, before calibration"),
        ("calibration_error_calibrated", "expected calibration error, after calibration"),
        ("test_log_loss", "test log-loss, before calibration"),
        ("test_log_loss_calibrated", "test log-loss, after calibration"),
    ):
        assert f"<b>{scores[key]:.4f}</b><span>{label}</span>" in html
    assert "<b>1.700</b><span>temperature</span>" in html


@pytest.mark.parametrize("name, shown", [("cnn", 10), ("convnet", 32), ("resnet", 16)])
def test_filters_of_a_first_convolution(name, shown):
    from mnistlab.models import build_model
    from mnistlab.report.insight import filters

    html = filters(build_model(name))
    assert f"{shown} first-layer filters" in html and "first convolution" in html
    assert panels(png_of_src(Page(html).images[0])) == shown


def test_no_filters_for_a_model_without_a_conv_or_dense_first_layer():
    import keras

    from mnistlab.report.insight import filters

    model = keras.Sequential(
        [keras.Input((28, 28, 1)), keras.layers.BatchNormalization(), keras.layers.Flatten(), keras.layers.Dense(10)]
    )
    html = filters(model)
    assert "No filters shown" in html and "BatchNormalization" in html and "<img" not in html


@pytest.mark.slow
def test_notebook_display_of_a_run_looks_inside_the_model(dnn_run):
    from mnistlab import load_model
    from mnistlab.report.insight import SECTIONS
    from mnistlab.report.notebook import run_html
    from mnistlab.storage import RunFolder
    from mnistlab.training.config import TrainConfig
    from mnistlab.training.loop import Run

    folder = RunFolder(dnn_run)
    run = Run(
        TrainConfig(model="dnn", epochs=1),
        load_model(dnn_run),
        folder.read_history(),
        folder.read_metrics(),
        str(dnn_run),
    )
    html = run_html(run)
    for sid, heading in SECTIONS.items():
        assert f'<div id="{sid}"><h4>{heading}</h4>' in html
        start = html.index(f'<div id="{sid}">')
        assert "data:image/png;base64," in html[start : start + 2000]
    assert html.count("data:image/png;base64,") == 2 + 4  # the learning curves and the four new figures


def test_an_ensembles_hidden_layer_map_is_its_last_members():
    from mnistlab.models import build_model
    from mnistlab.report.insight import hidden_features
    from mnistlab.training.ensemble import averaged

    model = averaged([build_model("dnn", hidden=[8]), build_model("dnn", hidden=[6])], "categorical_crossentropy")
    x = np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    assert hidden_features(model, x).shape == (5, 6)  # the inputs of member_1's last Dense layer
