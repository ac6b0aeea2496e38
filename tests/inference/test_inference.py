"""The one prediction path: mnistlab.predict, the web's Predictor and mnistlab.evaluate all get their
probabilities from inference.predict_proba, and its figures are model.evaluate's."""

import keras
import numpy as np
import pytest

import mnistlab
from mnistlab.data import for_input, one_hot
from mnistlab.inference import Forward, evaluate, predict_proba
from mnistlab.models import build_model
from mnistlab.web.predictor import Predictor


@pytest.fixture(scope="module")
def model(dnn_run):
    """The notebook DNN after one epoch on real MNIST: confident, not perfect."""
    from mnistlab import load_model

    return load_model(dnn_run)


@pytest.mark.slow
def test_predict_web_and_evaluate_share_one_path(model, mnist, monkeypatch):
    x, y = mnist.x_test[:200], mnist.y_test[:200]
    expected = np.asarray(model.predict(for_input(x, model), verbose=0))  # Keras' own, for reference

    def not_this_path(*args, **kwargs):
        raise AssertionError("model.predict / model.evaluate called: not the one prediction path")

    monkeypatch.setattr(model, "predict", not_this_path)
    monkeypatch.setattr(model, "evaluate", not_this_path)
    proba = predict_proba(model, x)
    assert proba.shape == (200, 10) and proba.dtype == np.float32
    np.testing.assert_array_equal(mnistlab.predict(model, x), proba)
    np.testing.assert_array_equal(mnistlab.predict(model, list(x)), proba)  # a list of 28x28 arrays
    np.testing.assert_array_equal(mnistlab.predict(model, x / 255), proba)  # floats in [0, 1]
    np.testing.assert_array_equal(predict_proba(model, x.reshape(200, 784)), proba)
    np.testing.assert_array_equal(predict_proba(model, x[..., None]), proba)
    predictor = Predictor(model)
    web = np.stack([predictor.predict(d.astype(np.float32) / 255) for d in x])
    np.testing.assert_allclose(web, proba, rtol=1e-5, atol=1e-7)  # batches of 1 vs one of 200
    np.testing.assert_allclose(proba, expected, rtol=1e-5, atol=1e-7)

    figures = mnistlab.evaluate(model, x, y)  # the public name is inference's function
    assert mnistlab.evaluate is evaluate
    assert figures["test_accuracy"] == np.mean(proba.argmax(1) == y)
    p = np.clip(proba / proba.sum(1, keepdims=True), 1e-7, 1 - 1e-7)
    assert figures["test_loss"] == pytest.approx(-np.log(p[np.arange(200), y]).mean(), rel=1e-5)


def test_evaluate_reproduces_model_evaluate_on_the_real_test_set(model, mnist):
    x, y = mnist.x_test, mnist.y_test
    keras_scores = model.evaluate(for_input(x, model), one_hot(y), batch_size=1000, verbose=0, return_dict=True)
    ours = evaluate(model, x, y)
    assert ours["test_accuracy"] == pytest.approx(float(keras_scores["accuracy"]), abs=1e-7)
    assert ours["test_loss"] == pytest.approx(float(keras_scores["loss"]), abs=1e-5)


def test_live_forward_follows_training_and_the_served_one_stays_frozen():
    keras.utils.set_random_seed(1)
    model = build_model("dnn")
    x = np.random.default_rng(0).integers(0, 256, (3, 28, 28), dtype=np.uint8)
    frozen = Forward(model, frozen=True)
    before = predict_proba(model, x)
    for v in model.trainable_variables:
        v.assign(v.value * 0.5)
    after = predict_proba(model, x)
    assert not np.allclose(after, before)
    np.testing.assert_array_equal(predict_proba(model, x, forward=frozen), before)


def test_batches_and_empty_input(model, mnist):
    x = mnist.x_test[:25]
    np.testing.assert_allclose(predict_proba(model, x, batch_size=7), predict_proba(model, x), rtol=1e-5, atol=1e-7)
    assert predict_proba(model, x[:0]).shape == (0, 10)
    assert mnistlab.predict(model, []).shape == (0, 10)
    with pytest.raises(mnistlab.MnistlabError, match="do not fit"):
        predict_proba(model, np.zeros((2, 27, 27), np.uint8))
