"""ONNX export (mnistlab.export, `mnistlab export`): onnxruntime gives what Keras gives.

Each model kind is exported and run by onnxruntime on real MNIST test images, in two batch sizes
(the batch dimension is dynamic): every predicted class equals Keras', every probability is within
1e-4 of Keras'. Skips where onnxruntime or jax2onnx (the onnx extra) is not installed."""

import numpy as np
import pytest

from mnistlab.cli import main
from mnistlab.data.preprocess import for_input
from mnistlab.inference import predict_proba
from mnistlab.models import build_model

ort = pytest.importorskip("onnxruntime", reason="onnxruntime not installed: pip install 'mnistlab[onnx]'")
pytest.importorskip("jax2onnx", reason="jax2onnx not installed: pip install 'mnistlab[onnx]'")

TOLERANCE = 1e-4


def onnx_probabilities(path, x, batch):
    """onnxruntime's probabilities for float32 `x`, `batch` images a call."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (name,) = [i.name for i in session.get_inputs()]
    return np.concatenate([session.run(None, {name: x[i : i + batch]})[0] for i in range(0, len(x), batch)])


def assert_round_trip(model, path, images, batches=(1000, 37)):
    from mnistlab.export import export

    export(model, path)
    x = for_input(images, model)  # float32 in [0, 1], the model's input shape
    expected = predict_proba(model, x, calibrated=False)
    for batch in batches:
        got = onnx_probabilities(path, x, batch)
        assert got.shape == expected.shape and got.dtype == np.float32
        np.testing.assert_array_equal(got.argmax(axis=1), expected.argmax(axis=1))
        np.testing.assert_allclose(got, expected, rtol=0, atol=TOLERANCE)


@pytest.mark.slow
def test_trained_dnn_on_all_test_images(dnn_run, mnist, tmp_path):
    from mnistlab.storage import load_model

    assert_round_trip(load_model(dnn_run), tmp_path / "dnn.onnx", mnist.x_test, batches=(10000, 999))


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["dnn", "cnn", "convnet", "resnet"])
def test_each_model(kind, mnist, tmp_path):
    """A small model of each kind, a few steps trained (so batch normalization's statistics move)."""
    model = build_model(kind)
    model.compile(loss="sparse_categorical_crossentropy", optimizer="adam")
    x = for_input(mnist.x_train[:256], model)
    model.fit(x, mnist.y_train[:256], batch_size=64, epochs=1, verbose=0)
    assert_round_trip(model, tmp_path / f"{kind}.onnx", mnist.x_test[:1000])


def test_an_ensemble(mnist, tmp_path):
    """--members' model: nested networks (with batch norm) averaged by a Keras layer."""
    from mnistlab.training.ensemble import averaged

    members = []
    for seed in (0, 1):
        model = build_model("convnet", filters=[4, 8], hidden=[16])
        model.compile(loss="sparse_categorical_crossentropy", optimizer="adam")
        x = for_input(mnist.x_train[256 * seed : 256 * (seed + 1)], model)
        model.fit(x, mnist.y_train[256 * seed : 256 * (seed + 1)], batch_size=64, epochs=1, verbose=0)
        members.append(model)
    assert_round_trip(averaged(members, "categorical_crossentropy"), tmp_path / "ensemble.onnx", mnist.x_test[:500])


@pytest.mark.slow
def test_cli_writes_the_file(run_copy, tmp_path, capsys):
    assert main(["export", str(run_copy), "--onnx"]) == 0
    assert "(n, 784)" in capsys.readouterr().out
    assert (run_copy / "model.onnx").stat().st_size > 0
    keras_file = tmp_path / "copy.keras"
    keras_file.write_bytes((run_copy / "model.keras").read_bytes())
    assert main(["export", str(keras_file), "--onnx"]) == 0
    assert (tmp_path / "copy.onnx").is_file()
    assert main(["export", str(keras_file), "--onnx", "--out", str(tmp_path / "named.onnx")]) == 0
    assert (tmp_path / "named.onnx").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".part") or ".onnx." in p.name]
