"""Temperature scaling (mnistlab.calibration, training.calibrate, `mnistlab calibrate`, `train --calibrate`):
an over-confident model's probabilities get a temperature above 1 and a lower calibration error, the
predicted classes never change, and a calibrated run folder's model gives calibrated probabilities to
predict, evaluate and the web predictor with the same accuracy."""

import json

import numpy as np
import pytest

from mnistlab.calibration import (
    apply_temperature,
    calibration_scores,
    expected_calibration_error,
    fit_temperature,
    log_loss,
    reliability_curve,
)
from mnistlab.cli import main
from mnistlab.errors import MnistlabError
from mnistlab.storage import RunFolder, temperature_of


def softmax(logits):
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def calibrated_set(n=4000, seed=0):
    """(logits, labels): labels drawn from softmax(logits), so softmax(logits) is calibrated."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 2.0, (n, 10))
    p = softmax(logits)
    labels = (p.cumsum(axis=1) < rng.random((n, 1))).sum(axis=1).clip(0, 9)
    return logits, labels


@pytest.mark.slow  # scipy.optimize's first import
def test_over_confident_probabilities_get_a_temperature_above_one():
    logits, labels = calibrated_set()
    over = softmax(3 * logits)  # three times sharper than the truth: over-confident
    temperature = fit_temperature(over, labels)
    assert 2.5 < temperature < 3.5  # the truth's 3, within what 4000 samples tell
    fixed = apply_temperature(over, temperature)
    assert expected_calibration_error(fixed, labels) < expected_calibration_error(over, labels) / 3
    assert log_loss(fixed, labels) < log_loss(over, labels)
    np.testing.assert_array_equal(fixed.argmax(axis=1), over.argmax(axis=1))  # no class changes
    np.testing.assert_allclose(fixed.sum(axis=1), 1, atol=1e-5)


def test_under_confident_probabilities_get_a_temperature_below_one():
    logits, labels = calibrated_set(seed=1)
    under = softmax(logits / 2)
    temperature = fit_temperature(under, labels)
    assert 0.4 < temperature < 0.6
    fixed = apply_temperature(under, temperature)
    assert expected_calibration_error(fixed, labels) < expected_calibration_error(under, labels)
    np.testing.assert_array_equal(fixed.argmax(axis=1), under.argmax(axis=1))


def test_calibrated_probabilities_keep_a_temperature_near_one():
    logits, labels = calibrated_set(seed=2)
    assert 0.85 < fit_temperature(softmax(logits), labels) < 1.15
    np.testing.assert_array_equal(apply_temperature(softmax(logits), 1.0), softmax(logits))


def test_expected_calibration_error_by_hand():
    # two bins used: confidence 0.9 (right 1 of 2: gap 0.4) and 0.6 (right 2 of 2: gap 0.4)
    p = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.4, 0.6]])
    labels = np.array([0, 1, 0, 1])
    assert expected_calibration_error(p, labels) == pytest.approx(0.4)
    assert expected_calibration_error(np.eye(3), np.arange(3)) == pytest.approx(0.0)  # sure and right


@pytest.mark.slow  # scikit-learn's first import
def test_reliability_curve_by_hand():
    p = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.4, 0.6]])
    accuracy, confidence = reliability_curve(p, np.array([0, 1, 0, 1]))
    np.testing.assert_allclose(accuracy, [1.0, 0.5])  # the 0.6 bin, then the 0.9 bin
    np.testing.assert_allclose(confidence, [0.6, 0.9])


@pytest.mark.slow  # scikit-learn's first import (log_loss)
def test_scores_name_metrics_json_keys():
    logits, labels = calibrated_set(n=500, seed=3)
    scores = calibration_scores(softmax(2 * logits), labels, 2.0)
    assert set(scores) == {
        "temperature",
        "calibration_error",
        "calibration_error_calibrated",
        "test_log_loss",
        "test_log_loss_calibrated",
    }
    assert scores["calibration_error_calibrated"] < scores["calibration_error"]


@pytest.mark.slow
def test_the_trained_models_sharpened_probabilities_are_fixed(dnn_run, mnist):
    from mnistlab.inference import predict_proba

    model = RunFolder(dnn_run).load_model()
    p = predict_proba(model, mnist.x_train[-5000:], calibrated=False) ** 3
    p /= p.sum(axis=1, keepdims=True)  # over-confident
    temperature = fit_temperature(p, mnist.y_train[-5000:])
    assert temperature > 1.5
    test = predict_proba(model, mnist.x_test, calibrated=False) ** 3
    test /= test.sum(axis=1, keepdims=True)
    fixed = apply_temperature(test, temperature)
    assert expected_calibration_error(fixed, mnist.y_test) < expected_calibration_error(test, mnist.y_test)
    np.testing.assert_array_equal(fixed.argmax(axis=1), test.argmax(axis=1))


def json_out(capsys, argv):
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.slow
def test_calibrate_stores_the_temperature_and_calibrates_predict_evaluate_and_serve(run_copy, mnist, capsys, tmp_path):
    from mnistlab.inference import predict_proba
    from mnistlab.web.predictor import Predictor

    folder = RunFolder(run_copy)
    before = json_out(capsys, ["evaluate", str(run_copy), "--json"])
    assert "temperature" not in before
    stack = tmp_path / "digits.npy"
    np.save(stack, mnist.x_test[:50])
    raw = json_out(capsys, ["predict", str(run_copy), str(stack), "--json"])

    assert main(["calibrate", str(run_copy), "--images", "3000"]) == 0
    line = capsys.readouterr().out
    assert "temperature" in line and "->" in line
    temperature = folder.read_temperature()
    assert temperature is not None and temperature > 0
    stored = json.loads((run_copy / "temperature.json").read_text())
    assert stored["images"] == 3000 and "seen in training" in stored["fitted_on"]
    metrics = folder.read_metrics()
    for key in ("calibration_error", "calibration_error_calibrated", "test_log_loss", "test_log_loss_calibrated"):
        assert 0 <= metrics[key] < 1, key
    assert metrics["temperature"] == pytest.approx(temperature)
    assert metrics["test_accuracy"] == pytest.approx(before["test_accuracy"])  # the run's own figures kept

    after = json_out(capsys, ["evaluate", str(run_copy), "--json"])
    assert after["temperature"] == pytest.approx(temperature)
    assert after["test_accuracy"] == before["test_accuracy"]  # accuracy never changes
    assert after["test_loss"] != before["test_loss"]  # the loss is of calibrated probabilities
    assert after["test_loss"] == pytest.approx(metrics["test_log_loss_calibrated"], abs=1e-3)

    calibrated = json_out(capsys, ["predict", str(run_copy), str(stack), "--json"])
    assert [r["digit"] for r in calibrated] == [r["digit"] for r in raw]
    expected = apply_temperature(np.array([r["probabilities"] for r in raw], np.float32), temperature)
    np.testing.assert_allclose([r["probabilities"] for r in calibrated], expected, atol=2e-5)

    predictor = Predictor.load(run_copy)
    assert predictor.describe()["temperature"] == pytest.approx(temperature)
    np.testing.assert_allclose(predictor.predict(mnist.x_test[0] / 255.0), calibrated[0]["probabilities"], atol=2e-5)
    model = folder.load_model()  # as trained: no temperature
    assert temperature_of(model) is None
    np.testing.assert_allclose(predict_proba(model, mnist.x_test[:50]), raw_probabilities(raw), atol=2e-6)


def raw_probabilities(rows):
    return np.array([r["probabilities"] for r in rows], np.float32)


@pytest.mark.slow
def test_train_calibrate_fits_on_the_held_out_images(synthetic_dir, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "--epochs", "1", "--data-dir", str(synthetic_dir), "--no-verify", "-q"]
    assert main([*argv, "--validation-split", "0.25", "--calibrate", "--out", str(out)]) == 0
    assert "temperature" in capsys.readouterr().out
    stored = json.loads((out / "temperature.json").read_text())
    assert stored["images"] == 64 and "held out" in stored["fitted_on"]  # a quarter of 256
    assert {"calibration_error", "test_log_loss_calibrated", "temperature"} <= set(RunFolder(out).read_metrics())
    assert not (out / ".lock").exists()


@pytest.mark.slow
def test_train_calibrate_holds_images_out_by_default(synthetic_dir, tmp_path, capsys):
    """Fitted on images the model trained on, a temperature comes out too low: without
    --validation-split, --calibrate holds 1/12 of the training images out for it."""
    out = tmp_path / "run"
    argv = ["train", "--epochs", "1", "--data-dir", str(synthetic_dir), "--no-verify", "-q", "--calibrate"]
    assert main([*argv, "--out", str(out)]) == 0
    assert "held out to fit the temperature on" in capsys.readouterr().out
    stored = json.loads((out / "temperature.json").read_text())
    assert stored["images"] == round(256 / 12) and "held out" in stored["fitted_on"]
    assert json.loads((out / "config.json").read_text())["validation_split"] == pytest.approx(1 / 12)


def test_a_damaged_temperature_is_one_clear_error(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "temperature.json").write_text('{"temperature": -1}')
    with pytest.raises(MnistlabError, match="not a valid temperature"):
        RunFolder(tmp_path).read_temperature()
    with pytest.raises(ValueError):
        RunFolder(tmp_path).write_calibration({"temperature": 0}, {})
    assert RunFolder(tmp_path / "nowhere").read_temperature() is None


@pytest.mark.parametrize(
    "case, expected_exit, fragment",
    [
        ("missing-run", 1, "no such run folder"),
        ("no-model", 1, "holds no model.keras"),
        ("zero-images", 2, "--images"),
        ("negative-images", 2, "--images"),
    ],
)
def test_calibrate_bad_input(case, expected_exit, fragment, tmp_path, capsys):
    run = tmp_path / "run"
    if case != "missing-run":
        run.mkdir()
        (run / "config.json").write_text('{"model": "dnn"}')
    extra = {"zero-images": ["--images", "0"], "negative-images": ["--images", "-3"]}.get(case, [])
    try:
        code = main(["calibrate", str(run), *extra])
    except SystemExit as e:  # argparse's usage errors
        code = e.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code == expected_exit
    assert fragment in err[-1]
    if code == 1:
        assert len(err) == 1
    assert not (run / "temperature.json").exists()
