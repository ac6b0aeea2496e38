"""The bad-input battery: every row of docs/bad-input.md is run here.

Each case prepares its input, runs the real command line (in-process), and
checks the exit code, that stderr is one line naming the problem, and that no
traceback appears. A last test checks that the docs table and these cases agree.
"""

import errno
import gzip
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mnistlab.cli import main
from mnistlab.data import idx
from mnistlab.data.registry import FILES
from tests.conftest import synthetic_arrays

DOC = Path(__file__).resolve().parents[2] / "docs" / "bad-input.md"


def write_dataset(folder, mutate=None):
    """The synthetic dataset's four files in `folder`; `mutate(stem, array) -> bytes|array|None`."""
    folder.mkdir(parents=True, exist_ok=True)
    (xtr, ytr), (xte, yte) = synthetic_arrays()
    for stem, arr in zip(FILES, (xtr, ytr, xte, yte)):
        data = mutate(stem, arr) if mutate else None
        if data is None:
            idx.write_idx(folder / (stem + ".gz"), arr)
        elif isinstance(data, bytes):
            (folder / (stem + ".gz")).write_bytes(data)
        else:
            idx.write_idx(folder / (stem + ".gz"), data)
    return folder


def only(target, fn):
    return lambda stem, arr: fn(arr) if stem == target else None


def save_model(path, build):
    import keras

    model = build(keras)
    model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
    model.save(path)
    return path


def lambda_model(keras):
    return keras.Sequential(
        [keras.Input((784,)), keras.layers.Lambda(lambda x: x * 1.0), keras.layers.Dense(10, activation="softmax")]
    )


def small_input_model(keras):
    return keras.Sequential(
        [keras.Input((32, 32, 1)), keras.layers.Flatten(), keras.layers.Dense(10, activation="softmax")]
    )


def dense_model(classes):
    return lambda keras: keras.Sequential([keras.Input((784,)), keras.layers.Dense(classes, activation="softmax")])


def full_disk(monkeypatch):
    class Full:
        def __init__(self, *a, **k):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("mnistlab.storage.files.open", Full, raising=False)


def no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


HOLDERS = []  # processes holding a folder's lock for a case; ended after each test


@pytest.fixture(autouse=True)
def end_holders():
    yield
    while HOLDERS:
        proc = HOLDERS.pop()
        proc.stdin.close()
        proc.wait(timeout=30)


def held_by_another_process(folder):
    """`folder`, locked by a second process (as a `mnistlab train` writing it would) until the test ends."""
    hold = (
        "import sys; from mnistlab.storage import RunFolder; f = RunFolder(sys.argv[1]).prepare(); "
        "print('held', flush=True); sys.stdin.read(); f.close()"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", hold, str(folder)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    HOLDERS.append(proc)
    assert proc.stdout.readline().strip() == "held"
    (folder / "config.json").write_text("the first writer's")
    return folder


IMG, LBL, TIMG, TLBL = FILES


def setup_case(case, tmp, monkeypatch):
    """Prepare the input for `case`; returns argv (strings) for mnistlab."""
    d = tmp / "data"
    data = ["--data-dir", str(d)]
    if case == "truncated-idx":
        write_dataset(d, only(IMG, lambda a: gzip.compress(idx.encode(a)[:-100])))
        return ["show", *data]
    if case == "truncated-gzip":
        write_dataset(d, only(IMG, lambda a: gzip.compress(idx.encode(a))[:500]))
        return ["show", *data]
    if case == "garbled-idx":
        write_dataset(d, only(TLBL, lambda a: np.random.default_rng(0).bytes(300)))
        return ["show", *data]
    if case == "wrong-magic":
        write_dataset(d, only(TIMG, lambda a: b"\x08\x03" + idx.encode(a)[2:]))
        return ["show", *data]
    if case == "unknown-type-code":
        write_dataset(d, only(LBL, lambda a: idx.encode(a)[:2] + b"\x42" + idx.encode(a)[3:]))
        return ["show", *data]
    if case == "count-mismatch":
        write_dataset(d, only(LBL, lambda a: a[:-3]))
        return ["show", *data, "--no-verify"]
    if case == "label-out-of-range":
        write_dataset(d, only(TLBL, lambda a: np.where(np.arange(len(a)) == 5, 12, a).astype(np.uint8)))
        return ["show", *data, "--no-verify"]
    if case == "altered-file":
        write_dataset(d)
        return ["show", *data]
    if case == "missing-dataset":
        from mnistlab.data import load

        monkeypatch.setattr(load, "SYSTEM_DIR", tmp / "system")
        monkeypatch.setenv("MNISTLAB_DATA", str(tmp / "empty"))
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp / "cache"))
        monkeypatch.setenv("MNISTLAB_MIRRORS", "http://127.0.0.1:9/")
        return ["show", "--dataset", "fashion-mnist"]
    if case == "unknown-dataset":
        return ["train", "--dataset", "cifar10"]
    if case == "unknown-model":
        return ["train", "--model", "vgg"]
    if case == "unknown-preset":
        return ["train", "--preset", "fastest"]
    if case == "target-out-of-range":
        return ["train", "--target-accuracy", "1.5"]
    if case == "target-zero":
        return ["train", "--target-accuracy", "0"]
    if case == "augment-out-of-range":
        return ["train", "--augment", "0.9"]
    if case == "unknown-schedule":
        return ["train", "--schedule", "linear"]
    if case == "label-smoothing-wrong-loss":
        return [
            "train",
            "--label-smoothing",
            "0.1",
            "--loss",
            "mean_squared_error",
            "--epochs",
            "1",
            "--out",
            str(tmp / "run"),
        ]
    if case == "unknown-optimizer":
        return ["train", "--optimizer", "adamw2", "--out", str(tmp / "run")]
    if case == "epochs-out-of-range":
        return ["train", "--epochs", "0"]
    if case == "budget-with-epochs":
        return ["train", "--time-budget", "20s", "--epochs", "3"]
    if case == "bad-duration":
        return ["train", "--time-budget", "5x"]
    if case == "members-out-of-range":
        return ["train", "--members", "0"]
    if case == "members-with-calibrate":
        return ["train", "--members", "2", "--calibrate"]
    if case == "batch-size-out-of-range":
        return ["train", "--batch-size", "-5"]
    if case == "index-out-of-range":
        write_dataset(d)
        return ["show", *data, "--no-verify", "--index", "100000"]
    if case == "unwritable-out":
        (tmp / "file").write_text("keep me")
        return ["train", "--out", str(tmp / "file" / "run")]
    if case == "full-disk":
        (tmp / "run").mkdir()
        (tmp / "run" / "config.json").write_text("earlier content")
        full_disk(monkeypatch)
        return ["train", "--epochs", "1", "--out", str(tmp / "run")]
    if case == "full-disk-checkpoint":
        write_dataset(d)
        monkeypatch.setattr(np, "savez", no_space)  # the checkpoint's arrays, on the background thread
        return ["train", "--epochs", "2", "--out", str(tmp / "run"), *data, "--no-verify", "-q"]
    if case == "full-disk-search":
        write_dataset(d)
        full_disk(monkeypatch)
        return ["search", *data, "--no-verify", "--out", str(tmp / "search"), "--grid", "optimizer=SGD"]
    if case == "folder-locked":
        held_by_another_process(tmp / "run")
        return ["train", "--epochs", "1", "--out", str(tmp / "run")]
    if case == "search-folder-locked":
        write_dataset(d)
        held_by_another_process(tmp / "search")
        return ["search", *data, "--no-verify", "--out", str(tmp / "search"), "--grid", "optimizer=SGD"]
    if case == "not-a-model":
        (tmp / "model.keras").write_text("hello")
        return ["evaluate", str(tmp / "model.keras")]
    if case == "damaged-model":
        (tmp / "model.keras").write_bytes(b"PK\x05\x06" + b"\x00" * 18)  # an empty zip archive
        return ["evaluate", str(tmp / "model.keras")]
    if case == "custom-code-model":
        save_model(tmp / "lambda.keras", lambda_model)
        write_dataset(d)
        return ["evaluate", str(tmp / "lambda.keras"), *data, "--no-verify"]
    if case == "wrong-image-size":
        save_model(tmp / "small.keras", small_input_model)
        write_dataset(d)
        return ["evaluate", str(tmp / "small.keras"), *data, "--no-verify"]
    if case.startswith("calibrate-"):
        if case != "calibrate-missing-run":
            (tmp / "run").mkdir()
            (tmp / "run" / "config.json").write_text('{"model": "dnn", "epochs": 1}')
        extra = {"calibrate-zero-images": ["--images", "0"], "calibrate-negative-images": ["--images", "-3"]}
        return ["calibrate", str(tmp / ("nowhere" if case == "calibrate-missing-run" else "run")), *extra.get(case, [])]
    if case == "resume-not-a-run":
        (tmp / "empty").mkdir()
        return ["train", "--resume", str(tmp / "empty")]
    if case in ("damaged-checkpoint", "corrupt-checkpoint"):
        (tmp / "run" / "checkpoint").mkdir(parents=True)
        (tmp / "run" / "config.json").write_text('{"model": "dnn", "epochs": 2}')
        (tmp / "run" / "checkpoint" / "state.json").write_text('{"epoch": 1, "file": "epoch-0001.npz"}')
        if case == "corrupt-checkpoint":
            (tmp / "run" / "checkpoint" / "epoch-0001.npz").write_bytes(b"PK\x03\x04 not a zip archive")
        return ["train", "--resume", str(tmp / "run"), "--data-dir", str(write_dataset(d)), "--no-verify"]
    if case.startswith("search-"):
        write_dataset(d)
        extra = {
            "search-unknown-parameter": ["--grid", "momentum=0.9"],
            "search-malformed-grid": ["--grid", "optimizer:SGD"],
            "search-bad-grid-file": ["--grid-file", str(tmp / "grid.yaml")],
            "search-cv-out-of-range": ["--cv", "1"],
            "search-range-in-grid": ["--grid", "lr=1e-4..1e-2:log"],
            "search-empty-range": [*STUDY, "--grid", "dropout=0.3..0.3"],
            "search-inverted-range": [*STUDY, "--grid", "lr=1e-2..1e-4"],
            "search-log-range-at-zero": [*STUDY, "--grid", "dropout=0..0.5:log"],
            "search-unknown-range-parameter": [*STUDY, "--grid", "momentum=0.8..0.99"],
            "search-study-without-budget": ["--strategy", "tpe"],
            "search-trials-for-a-grid": ["--trials", "5"],
            "search-bad-storage": [*STUDY, "--storage", "study.db"],
            "search-unopenable-storage": [*STUDY, "--storage", "sqlite:////no/such/folder/study.db"],
        }[case]
        (tmp / "grid.yaml").write_text("optimizer: [SGD, Adam\n")
        return ["search", *data, "--no-verify", "--out", str(tmp / "search"), *extra]
    if case.startswith("explain-"):
        models = {
            "explain-not-a-classifier": lambda: save_model(tmp / "three.keras", dense_model(3)),
            "explain-wrong-image-size": lambda: save_model(tmp / "small.keras", small_input_model),
            "explain-missing-run": lambda: tmp / "no-such-run",
        }
        model = models.get(case, lambda: save_model(tmp / "dense.keras", dense_model(10)))()
        picture = {"explain-not-an-image": b"hello, this is text\n", "explain-empty-image": b""}.get(case)
        if picture is None:
            Image.fromarray(synthetic_arrays()[1][0][0]).save(tmp / "digit.png")
        else:
            (tmp / "digit.png").write_bytes(picture)
        steps = ["--steps", "0"] if case == "explain-steps-zero" else []
        return ["explain", str(model), str(tmp / "digit.png"), "--out", str(tmp / "why"), *steps]
    if case.startswith("export-"):
        model = {
            "export-missing-run": lambda: tmp / "no-such-run",
            "export-damaged-model": lambda: empty_zip(tmp / "empty.keras"),
        }.get(case, lambda: save_model(tmp / "dense.keras", dense_model(10)))()
        (tmp / "file").write_text("keep me")
        extra = {"export-unwritable-out": ["--onnx", "--out", str(tmp / "file" / "model.onnx")], "export-no-format": []}
        return ["export", str(model), *extra.get(case, ["--onnx"])]
    if case == "damaged-onnx":
        (tmp / "run").mkdir()
        (tmp / "run" / "config.json").write_text('{"model": "dnn", "epochs": 1}')
        empty_zip(tmp / "run" / "model.keras")
        (tmp / "run" / "model.onnx").write_bytes(b"not an ONNX graph\n")
        Image.fromarray(synthetic_arrays()[1][0][0]).save(tmp / "digit.png")
        return ["predict", str(tmp / "run"), str(tmp / "digit.png")]
    if case == "train-export-no-onnx":
        monkeypatch.setitem(sys.modules, "jax2onnx", None)  # import jax2onnx raises ImportError
        return ["train", "--epochs", "1", "--out", str(tmp / "run"), "--export", "onnx"]
    if case.startswith("predict-"):
        from tests.inference.test_recognize import animated_gif, png_header

        model = save_model(
            tmp / "dense.keras",
            lambda keras: keras.Sequential([keras.Input((784,)), keras.layers.Dense(10, activation="softmax")]),
        )
        content = {
            "predict-not-an-image": b"hello, this is text\n",
            "predict-empty-image": b"",
            "predict-huge-image": png_header(20000, 20000),
            "predict-animated-gif": animated_gif(),
        }[case]
        (tmp / "digit.png").write_bytes(content)
        return ["predict", str(model), str(tmp / "digit.png")]
    raise KeyError(case)


def empty_zip(path):
    path.write_bytes(b"PK\x05\x06" + b"\x00" * 18)  # an empty zip archive: a damaged .keras file
    return path


STUDY = ["--strategy", "tpe", "--trials", "5"]  # a sampled study (search --strategy random|tpe)


def doc_rows():
    """case -> (message fragment, exit code) from the table in docs/bad-input.md."""
    rows = {}
    for line in DOC.read_text().splitlines():
        m = re.match(r"\|\s*`([a-z0-9-]+)`\s*\|[^|]*\|\s*(.+?)\s*\|\s*(\d)\s*\|\s*$", line)
        if m:
            rows[m.group(1)] = (m.group(2).strip("` ").replace("\\|", "|"), int(m.group(3)))
    return rows


ROWS = doc_rows()


@pytest.mark.parametrize("case", sorted(ROWS))
def test_bad_input(case, tmp_path, monkeypatch, capsys):
    fragment, expected_exit = ROWS[case]
    argv = setup_case(case, tmp_path, monkeypatch)
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's own usage errors
        code = e.code
    err = capsys.readouterr().err
    assert code == expected_exit, err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert fragment in last, last
    if code == 1:
        assert len(err.strip().splitlines()) == 1, err
    if case == "train-export-no-onnx":
        assert not (tmp_path / "run").exists()  # refused before the run folder was made
    if case == "unwritable-out":
        assert (tmp_path / "file").read_text() == "keep me"
    if case.startswith("full-disk"):
        assert "No space left on device" in last
    if case == "full-disk":
        assert (tmp_path / "run" / "config.json").read_text() == "earlier content"
        assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["config.json"]
    if case.endswith("folder-locked"):  # the refused process wrote nothing there
        folder = tmp_path / ("search" if case.startswith("search") else "run")
        assert sorted(p.name for p in folder.iterdir()) == [".lock", "config.json"]
        assert (folder / "config.json").read_text() == "the first writer's"


def test_unsafe_loads_custom_code(tmp_path, capsys):
    save_model(tmp_path / "lambda.keras", lambda_model)
    d = write_dataset(tmp_path / "data")
    assert (
        main(["evaluate", str(tmp_path / "lambda.keras"), "--data-dir", str(d), "--no-verify", "--unsafe", "--json"])
        == 0
    )
    assert '"test_accuracy"' in capsys.readouterr().out


def test_table_has_enough_rows():
    assert len(ROWS) >= 15
