"""The web server on a run folder's model.onnx (web.predictor.OnnxPredictor): the same JSON as the
Keras path for real test images, plain predictions without Keras or JAX, Keras loaded only for an
explanation, and a damaged model.onnx served through model.keras after one notice line. Skips
without the onnx extra."""

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from mnistlab.cli import main
from mnistlab.web.app import create_app
from mnistlab.web.predictor import OnnxPredictor, Predictor, load_predictor

pytest.importorskip("onnxruntime", reason="onnxruntime not installed: pip install 'mnistlab[onnx]'")
pytest.importorskip("jax2onnx", reason="jax2onnx not installed: pip install 'mnistlab[onnx]'")

ROOT = Path(__file__).resolve().parents[2]
IMAGES = 24


def png(pixels):
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture
def exported(run_copy):
    """run_copy, calibrated (so that both paths must apply the temperature) and exported."""
    (run_copy / "temperature.json").write_text(json.dumps({"temperature": 1.7}))
    assert main(["export", str(run_copy), "--onnx"]) == 0
    return run_copy


@pytest.mark.slow
def test_same_json_from_either_path(exported, mnist):
    onnx = load_predictor(exported)
    assert isinstance(onnx, OnnxPredictor)
    keras_path = Predictor.load(exported)
    bodies = [png(x) for x in mnist.x_test[:IMAGES]]
    answers = []
    for predictor in (onnx, keras_path):
        with TestClient(create_app(predictor)) as client:
            answers.append(
                [client.post("/api/predict", content=b, headers={"Content-Type": "image/png"}).json() for b in bodies]
            )
    from_onnx, from_keras = answers
    with TestClient(create_app(keras_path)) as client:
        keras_description = client.get("/api/model").json()
    assert [a["digit"] for a in from_onnx] == [a["digit"] for a in from_keras]
    assert all(set(a) == {"digit", "probabilities"} for a in from_onnx + from_keras)
    np.testing.assert_allclose(
        [a["probabilities"] for a in from_onnx], [a["probabilities"] for a in from_keras], rtol=0, atol=1e-5
    )
    assert sum(a["digit"] == y for a, y in zip(from_onnx, mnist.y_test[:IMAGES])) >= IMAGES - 2  # a trained model

    assert onnx._keras is None  # plain predictions never loaded Keras' model
    with TestClient(create_app(onnx)) as client:
        explained = client.post("/api/predict?explain=1", content=bodies[0], headers={"Content-Type": "image/png"})
        described = client.get("/api/model").json()
    assert explained.status_code == 200
    expected = keras_path.explain(keras_path_image(bodies[0]), from_keras[0]["digit"])
    np.testing.assert_allclose(explained.json()["explanation"], np.round(expected, 6), atol=1e-5)
    assert described == keras_description


def keras_path_image(body):
    from mnistlab.data.digits import to_mnist
    from mnistlab.data.images import load_image

    return to_mnist(load_image(io.BytesIO(body)))


@pytest.mark.slow
def test_plain_predictions_import_neither_keras_nor_jax(exported, mnist):
    script = (
        "import sys\n"
        "from fastapi.testclient import TestClient\n"
        "from mnistlab.web.app import create_app\n"
        f"with TestClient(create_app({str(exported)!r})) as client:\n"
        f"    answer = client.post('/api/predict', content=sys.stdin.buffer.read(), "
        "headers={'Content-Type': 'image/png'}).json()\n"
        "print(answer['digit'])\n"
        "print(sorted(m for m in ('keras', 'jax', 'jaxlib', 'tensorflow') if m in sys.modules))\n"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run(
        [sys.executable, "-c", script], input=png(mnist.x_test[0]), capture_output=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.decode().split() == [str(mnist.y_test[0]), "[]"]


@pytest.mark.slow
def test_a_damaged_model_onnx_is_one_notice_then_model_keras(exported, mnist, capsys):
    onnx = exported / "model.onnx"
    onnx.write_bytes(b"not an ONNX graph\n")
    predictor = load_predictor(exported)
    assert isinstance(predictor, Predictor)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "notice:" in err and str(onnx) in err and "serving model.keras" in err
    with TestClient(create_app(predictor)) as client:
        answer = client.post("/api/predict", content=png(mnist.x_test[0]), headers={"Content-Type": "image/png"})
    assert answer.status_code == 200 and answer.json()["digit"] == mnist.y_test[0]
