"""Beyond the notebook: the stronger models, the training recipe (augmentation, schedule, label
smoothing, weight decay), time to accuracy and presets."""

import json
from dataclasses import replace

import keras
import numpy as np
import pytest

from mnistlab import TrainConfig, train
from mnistlab.catalog import RECIPES
from mnistlab.cli import main
from mnistlab.data import Dataset
from mnistlab.data.augment import augment, copy_images, transforms, warp
from mnistlab.errors import UsageError
from mnistlab.inference import TestTimeAugmentation, evaluate, predict_proba
from mnistlab.models import build_model
from mnistlab.optimizers import EMA_START_SHARE, make_optimizer
from mnistlab.training.augmented import AugmentedBatches
from mnistlab.training.loop import make_model
from mnistlab.training.presets import PRESETS, preset
from tests.conftest import synthetic_arrays, write_dataset


@pytest.fixture(scope="module")
def synthetic():
    (xtr, ytr), (xte, yte) = synthetic_arrays(n_train=192, n_test=64)
    return Dataset("synthetic", xtr, ytr, xte, yte, tuple("0123456789"), "<memory>")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["convnet", "resnet"])
def test_new_model_trains_saves_and_reloads_in_stock_keras(name, synthetic, tmp_path):
    run = train(
        model=name,
        epochs=1,
        batch_size=64,
        filters=[4, 8] if name == "convnet" else [4, 8, 8],
        dataset=synthetic,
        out=str(tmp_path / name),
        verbose=0,
    )
    assert any(isinstance(layer, keras.layers.BatchNormalization) for layer in run.model.layers)
    config = json.loads((tmp_path / name / "config.json").read_text())
    assert {k: config[k] for k in RECIPES[name]} == RECIPES[name]  # the recipe actually used, recorded
    reloaded = keras.saving.load_model(tmp_path / name / "model.keras")  # plain Keras, no mnistlab objects
    x = synthetic.x_test[:8].reshape(-1, 28, 28, 1).astype("float32") / 255
    np.testing.assert_allclose(reloaded.predict(x, verbose=0), run.model.predict(x, verbose=0), atol=1e-5)
    assert 0 <= run.metrics["test_accuracy"] <= 1


def test_model_sizes_are_parameters():
    convnet = build_model("convnet", filters=[8, 16], hidden=[32])
    assert [layer.filters for layer in convnet.layers if isinstance(layer, keras.layers.Conv2D)] == [8, 8, 16, 16]
    resnet = build_model("resnet", filters=[8, 16])
    assert resnet.output_shape == (None, 10)
    assert {layer.filters for layer in resnet.layers if isinstance(layer, keras.layers.Conv2D)} == {8, 16}
    with pytest.raises(UsageError, match="dnn has no convolutions"):
        build_model("dnn", filters=[8])
    with pytest.raises(UsageError, match="two sizes"):
        build_model("cnn", filters=[8, 16, 32])


def test_augmentation_moves_pixels_as_asked():
    image = np.zeros((1, 28, 28), np.float32)
    image[0, 10:14, 8:12] = 1.0
    none = np.zeros(1, np.float32)
    moved = np.asarray(warp(image, none, np.ones(1, np.float32), np.array([[3.0, -2.0]], np.float32)))
    np.testing.assert_allclose(moved[0, 13:17, 6:10], 1.0, atol=1e-6)  # 3 down, 2 left
    assert moved.sum() == pytest.approx(16.0, abs=1e-4)
    quarter = np.asarray(
        warp(image, np.full(1, np.pi / 2, np.float32), np.ones(1, np.float32), np.zeros((1, 2), np.float32))
    )
    np.testing.assert_allclose(quarter[0], np.rot90(image[0]), atol=1e-5)  # a quarter turn, same pixels
    zoomed = np.asarray(warp(image, none, np.full(1, 2.0, np.float32), np.zeros((1, 2), np.float32)))
    assert zoomed.sum() == pytest.approx(64.0, rel=0.1)  # twice the side: four times the area


def test_augmented_batches_are_fresh_each_epoch_and_reproducible(synthetic):
    import jax

    x, y = synthetic.x_train[:, :, :, None], np.eye(10, dtype=np.float32)[synthetic.y_train]
    config = TrainConfig(batch_size=64, augment=0.1, seed=5)
    first = AugmentedBatches(x, y, config)
    again = AugmentedBatches(x, y, config)
    np.testing.assert_array_equal(first[1][0], again[1][0])
    resumed = AugmentedBatches(x, y, config, initial_epoch=1)
    first.on_epoch_end()
    np.testing.assert_array_equal(first[0][0], resumed[0][0])  # a resumed run draws what the whole run drew
    assert first[0][0].shape == (64, 28, 28, 1) and first[0][0].dtype == np.float32
    assert first[0][0].max() <= 1.0
    assert not np.array_equal(first[0][0], again[0][0])
    # each image keeps its label: nothing moves at strength 0, and the labels follow the order
    still = AugmentedBatches(x, y, replace(config, augment=0.0))
    batch_x, batch_y = still[0]
    match = [np.flatnonzero((x.reshape(len(x), -1) == np.round(img.reshape(-1) * 255)).all(axis=1)) for img in batch_x]
    assert all(len(m) >= 1 and (y[m[0]] == label).all() for m, label in zip(match, batch_y))
    assert augment(x[:4], jax.random.key(0), 0.0).dtype == np.uint8
    np.testing.assert_array_equal(augment(x[:4], jax.random.key(0), 0.0), x[:4])


def test_flips_mirror_about_half_the_images_and_nothing_else():
    import jax

    image = np.zeros((1, 28, 28), np.float32)
    image[0, 10:14, 3:9] = 1.0
    none, one = np.zeros(1, np.float32), np.ones(1, np.float32)
    mirrored = np.asarray(warp(image, none, one, np.zeros((1, 2), np.float32), -one))
    np.testing.assert_array_equal(mirrored, image[:, :, ::-1])
    x = (np.random.default_rng(3).random((400, 28, 28)) * 255).astype(np.uint8)
    flipped = augment(x, jax.random.key(1), 0.0, flip=True)
    same, mirror = [(flipped == x).all(axis=(1, 2)), (flipped == x[:, :, ::-1]).all(axis=(1, 2))]
    assert (same ^ mirror).all() and 150 < mirror.sum() < 250
    # Flips are their own random stream: with them off, augmentation draws what it drew before they existed.
    np.testing.assert_array_equal(augment(x, jax.random.key(1), 0.1), augment(x, jax.random.key(1), 0.1, False))
    on = augment(x, jax.random.key(1), 0.1, flip=True)
    assert not np.array_equal(on, augment(x, jax.random.key(1), 0.1))


@pytest.mark.slow
def test_the_best_preset_flips_clothes_and_never_digits(tmp_path, capsys):
    assert not preset("best").get("flip") and preset("best", "fashion-mnist")["flip"] is True
    assert preset(None) == {} and preset("fast99", "fashion-mnist") == PRESETS["fast99"]
    data = write_dataset(tmp_path / "fashion-mnist", synthetic_arrays(n_train=128, n_test=32))
    out = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--preset",
                "best",
                "--dataset",
                "fashion-mnist",
                "--epochs",
                "1",
                "--filters",
                "4,8",
                "--hidden",
                "8",
                "-q",
                "--data-dir",
                str(data),
                "--no-verify",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    config = json.loads((out / "config.json").read_text())
    assert (config["flip"], config["augment"], config["dataset"]) == (True, 0.05, "fashion-mnist")
    assert config["model"] == preset("best")["model"] == "convnet"
    assert preset("best")["members"] == 2 and config["members"] == 1  # clothes: one network, not an ensemble
    metrics = json.loads((out / "metrics.json").read_text())
    assert config["tta"] == metrics["tta_copies"] == 8 and 0 <= metrics["tta_test_accuracy"] <= 1
    assert f"test accuracy {metrics['tta_test_accuracy']:.4f}" in capsys.readouterr().out.split("augmentation")[1]


def test_cosine_schedule_warms_up_then_decays():
    optimizer = make_optimizer("Adam", lr=0.01, schedule="cosine", total_steps=100, warmup=0.2, weight_decay=0.05)
    schedule = optimizer.learning_rate if callable(optimizer.learning_rate) else optimizer._learning_rate
    rates = [float(schedule(step)) for step in (0, 20, 60, 100)]
    assert rates[0] == pytest.approx(0.001)
    assert rates[1] == pytest.approx(0.01)
    assert rates[1] > rates[2] > rates[3] and rates[3] == pytest.approx(0.0, abs=1e-6)
    assert optimizer.weight_decay == pytest.approx(0.05)
    with pytest.raises(ValueError, match="training steps"):
        make_optimizer("Adam", schedule="cosine")


def test_a_moving_average_over_a_short_run_forgets_its_first_weights():
    """Keras' average starts from the first step's weights: a run too short for the momentum asked gets a
    lower one, which leaves them at most EMA_START_SHARE of the average at its end."""
    for steps in (100, 844, 6000):
        momentum = make_optimizer("Adam", ema=0.999, total_steps=steps).ema_momentum
        assert momentum < 0.999 and momentum**steps == pytest.approx(EMA_START_SHARE)
    for steps in (7000, 20_000, None):  # long enough, or not known
        optimizer = make_optimizer("Adam", ema=0.999, total_steps=steps)
        assert optimizer.use_ema and optimizer.ema_momentum == 0.999


def test_label_smoothing_reaches_the_loss():
    model = make_model(TrainConfig(model="cnn", label_smoothing=0.1), n_train=640)
    assert model.loss.get_config()["label_smoothing"] == pytest.approx(0.1)
    with pytest.raises(UsageError, match="label_smoothing needs loss categorical_crossentropy"):
        TrainConfig(model="cnn", label_smoothing=0.1, loss="mean_squared_error")


def test_notebook_models_keep_the_notebook_recipe_and_the_fast_path_takes_the_convnet(synthetic):
    from mnistlab.training import fastpath

    config = TrainConfig(model="cnn").resolved()
    assert (config.augment, config.schedule, config.label_smoothing, config.weight_decay) == (0, "constant", 0, 0)
    assert (
        fastpath.check(
            make_model(TrainConfig(model="cnn", schedule="cosine", weight_decay=0.01, label_smoothing=0.1), n_train=640)
        )
        is None
    )
    assert fastpath.check(make_model(TrainConfig(model="convnet"), n_train=640)) is None  # batch norm lowered
    assert "Functional" in fastpath.check(make_model(TrainConfig(model="resnet"), n_train=640))  # Keras' fit


@pytest.mark.slow
def test_fast_path_trains_on_each_epochs_augmented_images(synthetic, monkeypatch):
    from mnistlab.training import augmented

    seen = []
    real = augmented.epoch_images
    monkeypatch.setattr(augmented, "epoch_images", lambda *a: seen.append(a[1:]) or real(*a))
    run = train(
        model="cnn",
        filters=[4, 8],
        hidden=[16],
        augment=0.1,
        engine="fast",
        epochs=2,
        seed=4,
        dataset=synthetic,
        verbose=0,
    )
    # (strength, seed, epoch, flip, erase, elastic): fresh each epoch
    assert seen == [(0.1, 4, 0, False, 0.0, 0.0), (0.1, 4, 1, False, 0.0, 0.0)]
    again = train(
        model="cnn",
        filters=[4, 8],
        hidden=[16],
        augment=0.1,
        engine="fast",
        epochs=2,
        seed=4,
        dataset=synthetic,
        verbose=0,
    )
    assert again.history == run.history
    plain = train(
        model="cnn",
        filters=[4, 8],
        hidden=[16],
        augment=0.0,
        engine="fast",
        epochs=2,
        seed=4,
        dataset=synthetic,
        verbose=0,
    )
    assert plain.history["loss"] != run.history["loss"]


@pytest.mark.slow
def test_target_accuracy_stops_early_and_records_the_time(synthetic, tmp_path):
    run = train(
        model="dnn",
        hidden=[64],
        epochs=8,
        batch_size=32,
        lr=0.003,
        target_accuracy=0.5,
        dataset=synthetic,
        out=str(tmp_path / "t"),
        verbose=0,
    )
    metrics = json.loads((tmp_path / "t" / "metrics.json").read_text())
    assert metrics["epochs"] < 8
    assert run.history["val_accuracy"][-1] >= 0.5 > max(run.history["val_accuracy"][:-1], default=0)
    assert 0 < metrics["time_to_target_s"] <= metrics["train_seconds"]
    missed = train(model="dnn", hidden=[8], epochs=1, target_accuracy=1.0, dataset=synthetic, verbose=0)
    assert missed.metrics["time_to_target_s"] is None and missed.metrics["epochs"] == 1


@pytest.mark.slow
def test_preset_on_the_command_line_and_explicit_options_win(tmp_path, monkeypatch, capsys):
    data = write_dataset(tmp_path / "mnist", synthetic_arrays(n_train=256, n_test=64))
    out = tmp_path / "run"
    code = main(
        [
            "train",
            "--preset",
            "fast99",
            "--epochs",
            "1",
            "--target-accuracy",
            "0.2",
            "-q",
            "--data-dir",
            str(data),
            "--no-verify",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    config = json.loads((out / "config.json").read_text())
    assert config["epochs"] == 1 and config["target_accuracy"] == 0.2  # given: they win
    assert {k: config[k] for k in ("model", "batch_size", "lr", "schedule")} == {
        k: PRESETS["fast99"][k] for k in ("model", "batch_size", "lr", "schedule")
    }
    assert json.loads((out / "metrics.json").read_text())["time_to_target_s"] > 0


def test_test_time_augmentation_averages_the_image_and_its_transformed_copies(synthetic):
    model = train(model="dnn", hidden=[32], epochs=2, dataset=synthetic, verbose=0).model
    x = synthetic.x_test
    tta = TestTimeAugmentation(copies=3, strength=0.1, seed=5)
    copies = [x] + [copy_images(x, 0.1, 5, i) for i in range(3)]
    assert not np.array_equal(copies[1], x) and not np.array_equal(copies[1], copies[2])
    expected = np.mean([predict_proba(model, c) for c in copies], axis=0)
    np.testing.assert_allclose(predict_proba(model, x, tta=tta), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(predict_proba(model, x, tta=TestTimeAugmentation(0, 0.1)), predict_proba(model, x))
    with pytest.raises(UsageError, match="augment > 0 or flip"):
        TestTimeAugmentation(copies=2, strength=0.0)


def test_tta_is_scored_beside_the_plain_test_score(synthetic, tmp_path, capsys):
    run = train(
        model="dnn", hidden=[32], epochs=2, augment=0.1, tta=2, dataset=synthetic, out=str(tmp_path / "r"), verbose=0
    )
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    tta = TestTimeAugmentation(2, 0.1, seed=0)
    assert metrics["tta_copies"] == 2 and metrics["tta_seconds"] > 0
    with_tta = evaluate(run.model, synthetic.x_test, synthetic.y_test, tta=tta)
    assert metrics["tta_test_accuracy"] == with_tta["test_accuracy"]
    assert metrics["test_accuracy"] == evaluate(run.model, synthetic.x_test, synthetic.y_test)["test_accuracy"]
    assert json.loads((tmp_path / "r" / "config.json").read_text())["tta"] == 2  # a rerun scores the same
    with pytest.raises(UsageError, match="augment > 0 or flip"):  # the notebook's CNN has no augmentation
        train(model="cnn", tta=2, dataset=synthetic, epochs=1, verbose=0)
    with pytest.raises(SystemExit) as usage:
        main(["train", "--tta", "-1"])
    assert usage.value.code == 2
    assert "tta must be at least 0" in capsys.readouterr().err


@pytest.mark.slow
def test_evaluate_scores_a_run_folder_with_the_copies_its_training_drew(tmp_path, capsys):
    data = write_dataset(tmp_path / "mnist", synthetic_arrays(n_train=128, n_test=32))
    out = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--model",
                "dnn",
                "--hidden",
                "16",
                "--epochs",
                "1",
                "--augment",
                "0.1",
                "--tta",
                "3",
                "--seed",
                "2",
                "-q",
                "--data-dir",
                str(data),
                "--no-verify",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert main(["evaluate", str(out), "--tta", "3", "--json", "--data-dir", str(data), "--no-verify"]) == 0
    scored = json.loads(capsys.readouterr().out)
    trained = json.loads((out / "metrics.json").read_text())
    assert scored["tta_test_accuracy"] == trained["tta_test_accuracy"]  # the same copies: augment 0.1, seed 2
    assert scored["tta_test_loss"] == pytest.approx(trained["tta_test_loss"], rel=1e-6)
    assert main(["evaluate", str(out / "model.keras"), "--data-dir", str(data), "--no-verify"]) == 0
    assert "test-time" not in capsys.readouterr().out
    bare = tmp_path / "bare.keras"
    bare.write_bytes((out / "model.keras").read_bytes())
    assert main(["evaluate", str(bare), "--tta", "2", "--data-dir", str(data), "--no-verify"]) == 2
    assert "--tta needs a run folder" in capsys.readouterr().err


def test_elastic_distortions_and_erasing_change_images_as_they_say(synthetic):
    import jax

    x = synthetic.x_train[:512]
    key = jax.random.key(3)
    plain = augment(x, key, 0.0)
    np.testing.assert_array_equal(plain, x)
    # erasing: about the share asked blanked, each in one rectangle of 2-25% of the image, nothing else touched
    erased = augment(x, key, 0.0, erase=0.5)
    changed = erased != x
    assert np.all(erased[changed] == 0)
    hit = [i for i in range(len(x)) if (erased[i] != x[i]).any()]
    assert 0.35 < len(hit) / len(x) <= 0.5 + 0.1  # a blank rectangle may fall on background only
    for i in hit:
        rows, cols = np.nonzero(changed[i].reshape(28, 28))
        assert (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1) <= 0.25 * 784 + 28
    # elastic: smooth small moves keep most of each image's ink, but move it, and reproducibly
    bent = augment(x, key, 0.0, elastic=1.0)
    np.testing.assert_array_equal(bent, augment(x, key, 0.0, elastic=1.0))
    ink, bent_ink = x.reshape(len(x), -1).astype(float).sum(1), bent.reshape(len(x), -1).astype(float).sum(1)
    assert np.median(bent_ink / ink) == pytest.approx(1.0, abs=0.1)
    assert np.mean(bent != x) > 0.05
    # a stronger field moves more
    assert np.abs(augment(x, key, 0.0, elastic=3.0).astype(float) - x).mean() > np.abs(bent.astype(float) - x).mean()
    # they draw from streams of their own: the affine part is the one transforms(key) gives without them
    affine = warp(x.astype(np.float32) / 255.0, *transforms(key, len(x), 0.1))
    expected = np.round(np.clip(np.asarray(affine), 0, 1) * 255).astype(np.uint8)
    assert np.mean(augment(x, key, 0.1) != expected) < 0.001  # float rounding of a few pixels at most
    with_erase = augment(x, key, 0.1, erase=0.5)
    kept = with_erase != 0
    assert np.mean(with_erase[kept] != expected[kept]) < 0.001
