"""The light prediction path (mnistlab.onnx_model): a run folder's model.onnx through onnxruntime
gives predict's and evaluate's answers of today's Keras path, on the real test set (classes and
accuracy identical, probabilities and loss within 1e-4, calibrated the same way), without importing
Keras or JAX; train --export onnx writes the file. Skips without the onnx extra."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mnistlab.cli import main
from mnistlab.onnx_model import OnnxModel, onnx_for

pytest.importorskip("onnxruntime", reason="onnxruntime not installed: pip install 'mnistlab[onnx]'")
pytest.importorskip("jax2onnx", reason="jax2onnx not installed: pip install 'mnistlab[onnx]'")

TOLERANCE = 1e-4
ROOT = Path(__file__).resolve().parents[2]


def test_onnx_for_takes_a_run_folders_file_not_older_than_model_keras(tmp_path):
    (tmp_path / "model.keras").write_bytes(b"k")
    assert onnx_for(tmp_path) is None  # no model.onnx
    (tmp_path / "model.onnx").write_bytes(b"o")
    os.utime(tmp_path / "model.keras", (1000, 1000))
    os.utime(tmp_path / "model.onnx", (1000, 1000))
    assert onnx_for(tmp_path) == str(tmp_path / "model.onnx")  # as old: exported right after
    assert onnx_for(tmp_path / "model.keras") == str(tmp_path / "model.onnx")
    os.utime(tmp_path / "model.keras", (2000, 2000))  # trained again after the export: stale
    assert onnx_for(tmp_path) is None
    (tmp_path / "other.keras").write_bytes(b"k")
    assert onnx_for(tmp_path / "other.keras") is None  # a bare model file: today's path


@pytest.mark.slow
@pytest.mark.parametrize("temperature", [None, 1.7])
def test_same_answers_as_keras_on_the_test_set(run_copy, mnist, temperature, capsys):
    from mnistlab.inference import evaluate, predict_proba
    from mnistlab.storage import load_model

    if temperature:
        (run_copy / "temperature.json").write_text(json.dumps({"temperature": temperature}))
    model = load_model(run_copy)  # today's path, the run's temperature attached
    expected = predict_proba(model, mnist.x_test)
    expected_metrics = evaluate(model, mnist.x_test, mnist.y_test)
    assert main(["export", str(run_copy), "--onnx"]) == 0
    assert onnx_for(run_copy)
    light = OnnxModel.for_run(run_copy)
    assert light.temperature == temperature
    got = light.predict_proba(mnist.x_test)
    assert got.shape == expected.shape and got.dtype == np.float32
    np.testing.assert_array_equal(got.argmax(axis=1), expected.argmax(axis=1))
    np.testing.assert_allclose(got, expected, rtol=0, atol=TOLERANCE)

    capsys.readouterr()
    assert main(["evaluate", str(run_copy), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["test_accuracy"] == expected_metrics["test_accuracy"]
    assert abs(metrics["test_loss"] - expected_metrics["test_loss"]) <= TOLERANCE
    assert metrics.get("temperature") == temperature


@pytest.mark.slow
def test_light_path_imports_neither_keras_nor_jax(run_copy, mnist, tmp_path):
    from PIL import Image

    assert main(["export", str(run_copy), "--onnx"]) == 0
    Image.fromarray(mnist.x_test[0]).save(tmp_path / "one.png")
    script = (
        "import sys\n"
        "from mnistlab.cli import main\n"
        f"assert main(['predict', {str(run_copy)!r}, {str(tmp_path / 'one.png')!r}, '--json']) == 0\n"
        f"assert main(['evaluate', {str(run_copy)!r}, '--json']) == 0\n"
        "print(sorted(m for m in ('keras', 'jax', 'jaxlib', 'tensorflow') if m in sys.modules))\n"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[-1] == "[]", done.stdout
    assert '"digit": 7' in done.stdout and '"test_accuracy"' in done.stdout


@pytest.mark.slow
def test_train_export_onnx_writes_the_run_folders_model_onnx(synthetic_dir, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "--epochs", "1", "--data-dir", str(synthetic_dir), "--no-verify", "-q", "--out", str(out)]
    assert main(argv) == 0  # the default where the onnx extra is installed, a file more in the run folder
    assert "ONNX model" not in capsys.readouterr().out
    assert (out / "model.onnx").stat().st_mtime >= (out / "model.keras").stat().st_mtime
    assert onnx_for(out) == str(out / "model.onnx")
    assert not [p.name for p in out.iterdir() if p.name.startswith("model.onnx.")]  # no temporary left
    assert OnnxModel.for_run(out).predict_proba(np.zeros((2, 28, 28), np.uint8)).shape == (2, 10)


@pytest.mark.slow
def test_train_export_none_and_a_failed_default_export(synthetic_dir, tmp_path, capsys, monkeypatch):
    """--export none writes no model.onnx; a default export that fails is one notice line, and the
    run is saved and exits 0; asked for with --export onnx, the same failure is the run's error."""
    argv = ["train", "--epochs", "1", "--data-dir", str(synthetic_dir), "--no-verify", "-q", "--out"]
    assert main([*argv, str(tmp_path / "plain"), "--export", "none"]) == 0
    assert not (tmp_path / "plain" / "model.onnx").exists()
    assert main([*argv, str(tmp_path / "asked"), "--export", "onnx"]) == 0
    assert f"ONNX model: {tmp_path / 'asked' / 'model.onnx'}" in capsys.readouterr().out
    import mnistlab.export

    def broken(model):
        raise RuntimeError("no converter for this graph\nsecond line")

    monkeypatch.setattr(mnistlab.export, "convert", broken)
    capsys.readouterr()
    assert main([*argv, str(tmp_path / "failed")]) == 0
    err = capsys.readouterr().err
    assert "notice: model.onnx not written (RuntimeError: no converter for this graph)" in err
    assert "second line" not in err and "Traceback" not in err
    assert (tmp_path / "failed" / "model.keras").exists() and not (tmp_path / "failed" / "model.onnx").exists()
    assert main([*argv, str(tmp_path / "asked-failed"), "--export", "onnx"]) == 1
    assert "internal error: RuntimeError: no converter for this graph" in capsys.readouterr().err
