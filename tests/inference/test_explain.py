"""mnistlab.explain: integrated-gradients maps that are complete, depend on what the model learned, and
`mnistlab explain`, which draws them."""

import numpy as np
import pytest
from PIL import Image

import mnistlab
from mnistlab.cli import main
from mnistlab.explain import explain
from mnistlab.inference import predict_proba


def completeness_errors(model, x, steps):
    """|sum of each map - (p(x) - p(black))| / |p(x) - p(black)|, for the predicted class."""
    maps = explain(model, x, steps=steps)
    rows = np.arange(len(x))
    p = predict_proba(model, x)
    target = p.argmax(axis=1)
    delta = p[rows, target] - predict_proba(model, np.zeros_like(x))[rows, target]
    assert np.abs(delta).min() > 0.05  # a difference worth attributing
    return np.abs(maps.sum(axis=(1, 2)) - delta) / np.abs(delta)


@pytest.fixture(scope="module")
def dnn(dnn_run):
    return mnistlab.load_model(dnn_run)


@pytest.fixture(scope="module")
def small_cnn(mnist):
    """A small CNN, trained for one pass over 4000 MNIST digits (about 90%)."""
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Conv2D(8, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(16, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile(loss="sparse_categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
    model.fit(mnist.x_train[:4000, :, :, None] / np.float32(255), mnist.y_train[:4000], epochs=1, verbose=0)
    return model


@pytest.mark.slow
def test_complete_on_the_trained_dnn(dnn, mnist):
    errors = completeness_errors(dnn, mnist.x_test[:40], steps=64)
    assert errors.max() < 0.02, errors


@pytest.mark.slow
def test_complete_on_a_cnn(small_cnn, mnist):
    errors = completeness_errors(small_cnn, mnist.x_test[:20], steps=64)
    assert errors.max() < 0.02, errors


@pytest.mark.slow
def test_more_steps_close_the_sums(dnn, mnist):
    x = mnist.x_test[:20]
    assert completeness_errors(dnn, x, steps=128).mean() < completeness_errors(dnn, x, steps=4).mean() / 4


@pytest.mark.slow
def test_maps_depend_on_the_learned_weights(dnn, mnist):
    """Adebayo et al.'s sanity check: the same architecture with fresh random weights gives other maps
    (compared on the ink, where integrated gradients' factor x - baseline lets a map be non-zero)."""
    import keras

    x = mnist.x_test[:16]
    target = predict_proba(dnn, x).argmax(axis=1)
    trained = explain(dnn, x, target=target)
    again = explain(dnn, x, target=target)
    fresh = explain(keras.models.clone_model(dnn), x, target=target)  # clone_model draws new weights
    ink = x > 0

    def correlation(a, b):
        return np.mean([np.corrcoef(a[i][ink[i]], b[i][ink[i]])[0, 1] for i in range(len(x))])

    assert correlation(trained, again) > 0.999
    assert abs(correlation(trained, fresh)) < 0.4


@pytest.mark.slow
def test_forms_targets_and_baselines(dnn, mnist):
    x = mnist.x_test[:5]
    maps = explain(dnn, x)
    assert maps.shape == (5, 28, 28) and maps.dtype == np.float32
    np.testing.assert_allclose(explain(dnn, x / np.float32(255)), maps, atol=1e-7)  # floats in [0, 1] too
    np.testing.assert_allclose(explain(dnn, x.reshape(5, 784)), maps, atol=1e-7)
    np.testing.assert_allclose(explain(dnn, x[2:3])[0], maps[2], atol=1e-7)  # batched as one at a time
    chunked = explain(dnn, mnist.x_test[:20], steps=255)  # 8 images a call: 3 calls, the last one padded
    np.testing.assert_allclose(chunked[:5], explain(dnn, x, steps=255), atol=1e-7)
    np.testing.assert_allclose(chunked[16:], explain(dnn, mnist.x_test[16:20], steps=255), atol=1e-7)
    assert np.abs(maps[np.asarray(x) == 0]).max() == 0  # black pixels equal the black baseline
    other = explain(dnn, x, target=3)
    assert not np.allclose(other, maps)
    grey = np.full((28, 28), 128, np.uint8)
    from_grey = explain(dnn, x, baseline=grey, steps=64)
    p = predict_proba(dnn, x)
    k = p.argmax(axis=1)
    delta = p[np.arange(5), k] - predict_proba(dnn, grey[None])[0, k]
    np.testing.assert_allclose(from_grey.sum(axis=(1, 2)), delta, rtol=0.02, atol=2e-3)
    assert explain(dnn, x[:0]).shape == (0, 28, 28)
    with pytest.raises(mnistlab.UsageError):
        explain(dnn, x, steps=0)
    with pytest.raises(mnistlab.UsageError):
        explain(dnn, x, target=10)


def test_the_package_names_it():
    assert mnistlab.explain is not None and "explain" in mnistlab.__all__
    assert callable(mnistlab.explain)  # the function, or the module once imported, which calls it


@pytest.mark.slow
def test_cli_writes_a_figure_per_picture(dnn_run, mnist, tmp_path, capsys, monkeypatch):
    for i in range(2):
        Image.fromarray(mnist.x_test[i]).save(tmp_path / f"digit{i}.png")
    np.save(tmp_path / "stack.npy", mnist.x_test[2:4])
    out = tmp_path / "why"
    pictures = [str(tmp_path / "digit0.png"), str(tmp_path / "digit1.png"), str(tmp_path / "stack.npy")]
    assert main(["explain", str(dnn_run), *pictures, "--out", str(out), "--steps", "8"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    names = ["digit0-explain.png", "digit1-explain.png", "stack-0-explain.png", "stack-1-explain.png"]
    assert sorted(p.name for p in out.iterdir()) == names
    for line, name, label in zip(lines, names, mnist.y_test[:4]):
        _, digit, probability, path = line.split()
        assert path == str(out / name) and digit == str(label) and 0.5 < float(probability) <= 1
        with Image.open(path) as figure:
            assert figure.format == "PNG" and figure.width > 2 * figure.height
    # default: the current folder
    monkeypatch.chdir(tmp_path)
    assert main(["explain", str(dnn_run), "digit0.png"]) == 0
    assert (tmp_path / "digit0-explain.png").is_file()
