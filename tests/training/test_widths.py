"""Shared programs (fastpath/widths.py): a study's trials of other hidden widths and dropout rates
train through one compiled program, as they would through their own."""

import contextlib

import numpy as np
import pytest

from mnistlab.search.estimator import MnistClassifier
from mnistlab.training.fastpath import engine as fast_engine
from mnistlab.training.fastpath import shared_programs
from mnistlab.training.fastpath.widths import bucket, runtime_rate

N = 1200


def fit(mnist, shared, **params):
    x, y = mnist.x_train[:N], mnist.y_train[:N]
    estimator = MnistClassifier(epochs=2, batch_size=64, optimizer="Adam", lr=2e-3, **params)
    if shared:
        with shared_programs():
            return estimator.fit(x[:1000], y[:1000], validation_data=(x[1000:], y[1000:]))
    return estimator.fit(x[:1000], y[:1000], validation_data=(x[1000:], y[1000:]))


def trained(estimator):
    return [np.asarray(v) for v in estimator.model_.trainable_variables + estimator.model_.optimizer.variables]


def test_buckets_and_runtime_rates():
    assert [bucket(n) for n in (1, 16, 17, 32, 33, 100, 128, 129, 512)] == [16, 16, 32, 32, 64, 128, 128, 256, 512]
    assert [runtime_rate(r) for r in (0.0, 0.5, 0.25, 0.3, 0.123)] == [False, False, False, True, True]


@pytest.mark.slow
@pytest.mark.parametrize("model", ["cnn", "dnn"])
def test_an_unpadded_model_trains_bit_for_bit_as_through_its_own_program(mnist, model):
    """Width 128 needs no padding: a runtime dropout rate alone changes nothing, to the bit."""
    hidden = [128] if model == "cnn" else [256, 128]
    own, shared = (fit(mnist, flag, model=model, hidden=hidden, dropout=0.3) for flag in (False, True))
    assert own.history_ == shared.history_
    for a, b in zip(trained(own), trained(shared)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
@pytest.mark.parametrize("model", ["cnn", "dnn"])
def test_a_padded_model_trains_as_unpadded_up_to_rounding(mnist, model):
    """Zero units padded to 128 stay zero, and the dropout masks are the unpadded layer's: the
    trained values differ from the model's own program by rounding only; the model keeps its shapes."""
    hidden = [100] if model == "cnn" else [300, 77]
    own, shared = (fit(mnist, flag, model=model, hidden=hidden, dropout=0.37) for flag in (False, True))
    np.testing.assert_allclose(own.history_["loss"], shared.history_["loss"], rtol=1e-5)
    assert abs(own.history_["val_accuracy"][-1] - shared.history_["val_accuracy"][-1]) <= 1 / 200
    for a, b in zip(trained(own), trained(shared)):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, atol=2e-5)


@pytest.mark.slow
def test_trials_of_other_widths_and_rates_share_one_engine(mnist):
    fast_engine._engines.clear()
    fit(mnist, True, model="cnn", hidden=[70], dropout=0.31)
    fit(mnist, True, model="cnn", hidden=[101], dropout=0.17)  # the same bucket (128), another rate
    assert len(fast_engine._engines) == 1
    fit(mnist, True, model="cnn", hidden=[200], dropout=0.17)  # bucket 256: a program of its own
    fit(mnist, False, model="cnn", hidden=[101], dropout=0.17)  # outside a study: the model's own
    assert len(fast_engine._engines) == 3


@pytest.mark.slow
def test_trials_of_other_optimizers_and_batch_sizes_share_one_evaluation(mnist):
    """Evaluation depends on neither: one compiled validation program for the structure."""
    fast_engine._engines.clear()
    fast_engine._evaluations.clear()
    fit(mnist, True, model="cnn", hidden=[70], dropout=0.31)
    x, y = mnist.x_train[:N], mnist.y_train[:N]

    def second(shared):
        estimator = MnistClassifier(epochs=1, batch_size=32, optimizer="Nadam", model="cnn", hidden=[90], dropout=0.2)
        with shared_programs() if shared else contextlib.nullcontext():
            return estimator.fit(x[:1000], y[:1000], validation_data=(x[1000:], y[1000:])).history_

    shared = second(True)
    engines = list(fast_engine._engines.values())
    assert len(engines) == 2 and engines[0].evaluate is engines[1].evaluate
    assert len(fast_engine._evaluations) == 1
    own = second(False)  # through programs of its own: the same scores, up to the padding's rounding
    assert abs(shared["val_accuracy"][0] - own["val_accuracy"][0]) <= 1 / 200
    # The rounding grows over the epoch's 32 Nadam steps: equal through XLA's route, within 1e-4 with
    # the AVX-512 kernels (Zen 4), 0.33% apart with the AVX2 kernels (Zen 3; equal there without
    # dropout, so likely the dropped product's summing order, which the padded width changes; XLA's
    # route at width 96: 0.13%).
    np.testing.assert_allclose(shared["val_loss"], own["val_loss"], rtol=1e-2)


def test_initial_weights_drawn_flat_are_keras_own():
    from mnistlab.training.compile import make_model
    from mnistlab.training.config import TrainConfig
    from mnistlab.training.fastpath.widths import flat_draws

    config = TrainConfig(model="cnn", hidden=[77], optimizer="Adam")
    own = make_model(config, 1000, layer_seeds=True)
    with flat_draws():
        flat = make_model(config, 1000, layer_seeds=True)
    for a, b in zip(own.weights, flat.weights):
        np.testing.assert_array_equal(np.asarray(a.value), np.asarray(b.value))
