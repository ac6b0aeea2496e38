"""A run folder calibrated: the temperature fitted on held-out images and stored beside the model
(`mnistlab calibrate`, `mnistlab train --calibrate`; the arithmetic is mnistlab.calibration's)."""

from mnistlab.calibration import calibration_scores, fit_temperature
from mnistlab.inference import predict_proba
from mnistlab.storage import RunFolder
from mnistlab.training.config import TrainConfig
from mnistlab.training.prepare import split_validation

IMAGES = 10_000  # the training set's last images fitted on, where a run held none out


def fitting_images(config, data, images=IMAGES):
    """(x, y, where): the images to fit the temperature on and what they are. A run trained with a
    validation split held those images out: the last `images` of them. Otherwise the last `images`
    of the training set, which the model was trained on (so it is somewhat over-confident on them,
    and the temperature fitted there errs on the low side)."""
    _, _, held_out = split_validation(data.x_train, data.y_train, config)
    if held_out is not None:
        x, y = held_out
        return x[-images:], y[-images:], "held out by the run's validation split"
    return data.x_train[-images:], data.y_train[-images:], "the last training images (seen in training)"


def calibrate(folder, model=None, data=None, images=IMAGES, safe_mode=True):
    """Fit `folder`'s temperature, write temperature.json and the test figures before and after it
    into metrics.json; returns those figures (calibration.calibration_scores plus calibration_images).
    `model` and `data` spare loading them again when the caller holds them (train --calibrate)."""
    from mnistlab.data import load_dataset

    folder = folder if isinstance(folder, RunFolder) else RunFolder(folder)
    if model is None:
        folder.require_model()
    config = TrainConfig.from_folder(folder)
    if model is None:
        model = folder.load_model(safe_mode=safe_mode)  # as trained: its probabilities uncalibrated
    if data is None:
        data = load_dataset(config.dataset, config.data_dir, verify=config.verify_data)
    x, y, where = fitting_images(config, data, images)
    temperature = fit_temperature(predict_proba(model, x, calibrated=False), y)
    scores = calibration_scores(predict_proba(model, data.x_test, calibrated=False), data.y_test, temperature)
    scores["calibration_images"] = len(y)
    with RunFolder(folder.path):  # locked while written (train --calibrate holds it: counted, not taken again)
        folder.write_calibration({"temperature": temperature, "images": len(y), "fitted_on": where}, scores)
    return scores
