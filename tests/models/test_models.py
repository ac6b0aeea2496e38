import inspect

import pytest

from mnistlab.catalog import DEFAULT_LR, MODEL_NAMES, OPTIMIZER_NAMES, RECIPES, SIZES
from mnistlab.errors import UsageError
from mnistlab.models import MODELS, build_model
from mnistlab.optimizers import learning_rate, make_optimizer


def layer_summary(model):
    out = []
    for layer in model.layers:
        cfg = layer.get_config()
        out.append(
            (
                type(layer).__name__,
                cfg.get("units") or cfg.get("filters") or cfg.get("rate") or cfg.get("pool_size"),
                cfg.get("activation"),
                cfg.get("kernel_size"),
            )
        )
    return out


def test_notebook_dnn_layer_for_layer():
    model = build_model("dnn")
    assert model.input_shape == (None, 784)
    assert layer_summary(model) == [
        ("Dense", 400, "relu", None),
        ("Dense", 100, "relu", None),
        ("Dropout", 0.5, None, None),
        ("Dense", 10, "softmax", None),
    ]
    assert model.count_params() == 784 * 400 + 400 + 400 * 100 + 100 + 100 * 10 + 10


def test_notebook_cnn_layer_for_layer():
    model = build_model("cnn")
    assert model.input_shape == (None, 28, 28, 1)
    assert layer_summary(model) == [
        ("Conv2D", 10, "relu", (5, 5)),
        ("MaxPooling2D", (2, 2), None, None),
        ("Conv2D", 20, "relu", (5, 5)),
        ("Dropout", 0.5, None, None),
        ("MaxPooling2D", (2, 2), None, None),
        ("Flatten", None, None, None),
        ("Dense", 320, "relu", None),
        ("Dropout", 0.5, None, None),
        ("Dense", 10, "softmax", None),
    ]
    assert model.count_params() == 260 + 5020 + 320 * 320 + 320 + 3210


def test_the_catalog_names_every_model_and_optimizer_with_its_defaults():
    assert tuple(MODELS) == MODEL_NAMES == tuple(SIZES) == tuple(RECIPES)
    for name, builder in MODELS.items():  # the builders' own sizes are the catalog's
        signature = inspect.signature(builder).parameters
        assert {size: signature[size].default for size in ("hidden", "filters") if size in signature} == SIZES[name]
    assert all(tuple(table) == OPTIMIZER_NAMES for table in DEFAULT_LR.values())


def test_sizes_and_dropout_are_parameters():
    model = build_model("dnn", hidden=[64], dropout=0.25)
    assert layer_summary(model)[:2] == [("Dense", 64, "relu", None), ("Dropout", 0.25, None, None)]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"name": "vgg"}, "unknown model 'vgg'"),
        ({"name": "dnn", "dropout": 1.0}, "dropout must be in"),
        ({"name": "dnn", "hidden": [0]}, "hidden size must be at least 1"),
    ],
)
def test_bad_model_parameters(kwargs, message):
    with pytest.raises(UsageError, match=message):
        build_model(**kwargs)


def test_optimizers_by_name_with_both_default_sets():
    assert type(make_optimizer("nadam")).__name__ == "Nadam"
    assert float(make_optimizer("Adadelta", defaults="notebook").learning_rate) == pytest.approx(1.0)
    assert float(make_optimizer("Adadelta").learning_rate) == pytest.approx(0.001)
    assert make_optimizer("Adagrad", defaults="notebook").initial_accumulator_value == 0.0  # Keras 2's
    assert make_optimizer("Adagrad").initial_accumulator_value == pytest.approx(0.1)
    assert float(make_optimizer("sgd", lr=0.3).learning_rate) == pytest.approx(0.3)
    for defaults, table in DEFAULT_LR.items():
        for name, lr in table.items():
            assert learning_rate(name, defaults=defaults) == lr
    with pytest.raises(UsageError, match="unknown optimizer 'adamw2'"):
        make_optimizer("adamw2")
    with pytest.raises(UsageError, match="lr must be positive"):
        make_optimizer("Adam", lr=-1)


def test_keras_defaults_table_matches_installed_keras():
    for name, lr in DEFAULT_LR["keras"].items():
        assert float(make_optimizer(name).learning_rate) == pytest.approx(lr)
