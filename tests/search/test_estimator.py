"""MnistClassifier: a real scikit-learn classifier (clone, GridSearchCV,
cross_val_score, Pipeline) that trains through training.loop.fit.

Sizes are chosen so every fit compiles once: 128 training images, batch 64.
"""

import dataclasses

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

from mnistlab.errors import UsageError
from mnistlab.search.estimator import MnistClassifier
from mnistlab.training import loop
from mnistlab.training.config import TrainConfig
from tests.conftest import synthetic_arrays

FAST = {"epochs": 1, "batch_size": 64}


@pytest.fixture(scope="module")
def data():
    (x, y), (xt, yt) = synthetic_arrays(n_train=256, n_test=64, seed=1)
    return x, y, xt, yt


@pytest.fixture(scope="module")
def fitted(data):
    x, y, _, _ = data
    return MnistClassifier(optimizer="Adam", lr=0.01, **FAST).fit(x[:128], y[:128])


def test_parameters_and_defaults_are_train_configs():
    params = MnistClassifier().get_params()
    params.pop("verbose")
    defaults = dataclasses.asdict(TrainConfig())
    assert params == {k: defaults[k] for k in params}
    assert set(params) == {
        "model",
        "optimizer",
        "lr",
        "batch_size",
        "epochs",
        "hidden",
        "dropout",
        "optimizer_defaults",
        "seed",
        "loss",
        "filters",
        "augment",
        "flip",
        "elastic",
        "erase",
        "schedule",
        "warmup",
        "label_smoothing",
        "weight_decay",
        "ema",
    }


def test_clone_and_set_params_keep_values():
    est = MnistClassifier(optimizer="SGD", hidden=[32, 16], lr=0.05)
    copy = clone(est)
    assert copy is not est and copy.get_params() == est.get_params()
    assert copy.hidden is not est.hidden  # clone deep-copies, so one cannot change the other
    copy.set_params(optimizer="Nadam", dropout=0.2)
    assert (copy.optimizer, copy.dropout, est.optimizer) == ("Nadam", 0.2, "SGD")


def test_fit_goes_through_the_training_loop(data, monkeypatch):
    calls = []
    real_fit = loop.fit

    def spy(model, x, y, validation_data, config, **kwargs):
        calls.append((x.shape, y.shape, config.optimizer, config.epochs))
        return real_fit(model, x, y, validation_data, config, **kwargs)

    monkeypatch.setattr(loop, "fit", spy)
    x, y, _, _ = data
    est = MnistClassifier(optimizer="RMSprop", **FAST).fit(x[:128], y[:128])
    assert calls == [((128, 784), (128, 10), "RMSprop", 1)]
    assert set(est.history_) >= {"loss", "accuracy"}


def test_predictions_from_any_input_form(fitted, data):
    _, _, xt, yt = data
    proba = fitted.predict_proba(xt)
    assert proba.shape == (64, 10) and np.allclose(proba.sum(axis=1), 1, atol=1e-4)
    pred = fitted.predict(xt)
    assert pred.dtype.kind == "i" and np.array_equal(pred, proba.argmax(axis=1))
    # the same images flat, or as preprocessed floats, give the same predictions
    assert np.array_equal(fitted.predict(xt.reshape(64, 784)), pred)
    assert np.array_equal(fitted.predict(xt.astype(np.float32) / 255), pred)
    assert fitted.score(xt, yt) == pytest.approx(np.mean(pred == yt))
    assert fitted.score(xt, yt) > 0.5  # the synthetic task is learnable in one epoch
    assert list(fitted.classes_) == list(range(10))


def test_labels_must_be_digits(data):
    x, _, _, _ = data
    with pytest.raises(UsageError, match="0-9"):
        MnistClassifier(**FAST).fit(x[:8], np.array([0, 1, 2, 3, 4, 5, 6, 12]))
    with pytest.raises(UsageError, match="0-9"):
        MnistClassifier(**FAST).fit(x[:4], np.array([0.5, 1, 2, 3]))


@pytest.mark.slow
def test_grid_search_and_pipeline_accept_it(data):
    x, y, _, _ = data
    grid = GridSearchCV(MnistClassifier(**FAST), {"optimizer": ["SGD", "Adam"]}, cv=2, refit=False)
    grid.fit(x, y)
    scores = grid.cv_results_["mean_test_score"]
    assert [p["optimizer"] for p in grid.cv_results_["params"]] == ["SGD", "Adam"]
    assert grid.best_params_ == {"optimizer": "Adam"} and scores[1] > scores[0]

    # a Pipeline step in front: the classifier takes the float images it hands on; scaled as
    # mnistlab scales uint8 images, the folds train and score exactly as in the grid search
    pipe = make_pipeline(
        FunctionTransformer(lambda a: a.reshape(len(a), -1).astype(np.float32) / np.float32(255)),
        MnistClassifier(optimizer="Adam", **FAST),
    )
    adam = [grid.cv_results_["split0_test_score"][1], grid.cv_results_["split1_test_score"][1]]
    assert list(cross_val_score(pipe, x, y, cv=2)) == pytest.approx(adam)


def test_initial_weights_depend_on_the_seed_alone():
    """Not on Python's global random state, which a Dask worker's other threads also draw from."""
    import random

    from mnistlab.models import build_model, seeded

    def weights(model):
        return [w.copy() for w in model.get_weights()]

    random.seed(1)
    a = seeded(build_model("dnn", hidden=[16, 8]), 7)
    random.seed(2)
    b = seeded(build_model("dnn", hidden=[16, 8]), 7)
    c = seeded(build_model("dnn", hidden=[16, 8]), 8)
    assert all(np.array_equal(u, v) for u, v in zip(weights(a), weights(b)))
    assert not np.array_equal(weights(a)[0], weights(c)[0])
    dropout_seeds = [layer.seed for layer in a.layers if hasattr(layer, "rate")]
    assert len(dropout_seeds) == 1 and None not in dropout_seeds
    assert dropout_seeds == [layer.seed for layer in b.layers if hasattr(layer, "rate")]
