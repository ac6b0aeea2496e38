"""The light prediction path: a run folder's model.onnx through onnxruntime, without Keras or JAX.

    onnx_for(model)          RUN/model.onnx when `model` (a run folder, or its model.keras) has one
                             that is not older than model.keras, else None: then Keras is used
    OnnxModel(path, T)       the ONNX file loaded: predict_proba(x) -> (n, classes) probabilities,
                             calibrated by temperature T as inference.predict_proba calibrates
    OnnxModel.for_run(model) the same, with the run folder's temperature.json read
    scores(p, y)             {"test_loss", "test_accuracy"} as inference.evaluate computes them

mnistlab predict and mnistlab evaluate (without --tta) take this path when onnx_for finds a file
(mnistlab export RUN --onnx, or train --export onnx, writes it); a damaged model.onnx is one clear
error (exit 1), not a fallback. The web server (web.predictor.load_predictor) takes it too, but
falls back to model.keras after one notice line: a server is better up than not. This module
imports NumPy and mnistlab's Keras-free layers only; onnxruntime is imported when a file is loaded.
"""

import os

import numpy as np

from mnistlab.calibration import evaluation_scores
from mnistlab.data.preprocess import for_input
from mnistlab.errors import MnistlabError, first_line
from mnistlab.storage import RunFolder, model_path
from mnistlab.system import EVAL_BATCH

ONNX = RunFolder.ONNX
EPSILON = 1e-7  # Keras' backend.epsilon(): categorical_crossentropy clips probabilities to [eps, 1 - eps]


def onnx_for(model):
    """The model.onnx beside `model`'s model.keras (`model`: a run folder or its model.keras) when it
    exists and is not older than model.keras (a model trained again after its export is not
    answered by the stale file), else None."""
    keras_path = model_path(model)
    if os.path.basename(keras_path) != RunFolder.MODEL:
        return None
    path = os.path.join(os.path.dirname(keras_path), ONNX)
    if not os.path.isfile(path):
        return None
    if os.path.isfile(keras_path) and os.path.getmtime(path) < os.path.getmtime(keras_path):
        return None
    return path


class OnnxModel:
    """An exported model (mnistlab.export's graph: "pixels" float32 in [0, 1] in the model's input
    shape -> "probabilities") in an onnxruntime session; `temperature` (or None) calibrates its
    probabilities as a run folder's temperature.json calibrates the Keras model's."""

    def __init__(self, path, temperature=None):
        self.path = os.fspath(path)
        self.temperature = temperature
        try:
            import onnxruntime
        except ImportError as e:
            raise MnistlabError(
                f'{self.path}: running it needs onnxruntime ({e}): pip install "mnistlab[onnx]"'
            ) from None
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # errors only: a warning on stderr would break the one-line rule
        try:
            self.session = onnxruntime.InferenceSession(self.path, options, providers=["CPUExecutionProvider"])
            (graph_input,) = self.session.get_inputs()
            self.output_name = self.session.get_outputs()[0].name
        except Exception as e:  # onnxruntime raises its own kinds (Fail, InvalidGraph, ...) for a bad file
            raise MnistlabError(
                f"{self.path}: cannot load the ONNX model ({first_line(e)}); export it again with "
                "mnistlab export RUN --onnx, or delete it to use model.keras"
            ) from None
        self.input_name = graph_input.name
        self.input_shape = tuple(int(d) for d in graph_input.shape[1:])  # past the dynamic batch axis

    @classmethod
    def for_run(cls, model, path=None):
        """The model.onnx of run folder `model` (or `path`), with the folder's temperature."""
        run = RunFolder.holding(model_path(model))
        temperature = run.read_temperature() if run is not None else None
        return cls(path or onnx_for(model), temperature)

    def predict_proba(self, x, batch_size=EVAL_BATCH) -> np.ndarray:
        """(n, classes) float32 probabilities for pixels `x` (uint8 0-255 or floats in [0, 1], any
        layout with the input's number of values per sample), calibrated by the temperature if any."""
        x = for_input(x, self.input_shape)
        chunks = [
            np.asarray(self.session.run([self.output_name], {self.input_name: x[start : start + batch_size]})[0])
            for start in range(0, len(x), batch_size)
        ]
        probabilities = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros((0, 10), np.float32)
        if self.temperature is not None:
            from mnistlab.calibration import apply_temperature

            probabilities = apply_temperature(probabilities, self.temperature)
        return probabilities


def scores(probabilities, y, batch_size=EVAL_BATCH):
    """{"test_loss", "test_accuracy"} of `probabilities` for integer labels `y`, as
    inference.evaluate gives them: Keras' categorical crossentropy (normalised, clipped to
    [1e-7, 1 - 1e-7]) in float32, each batch's mean weighted by its size, and argmax accuracy."""
    y = np.asarray(y, dtype=np.int64)
    probabilities = np.asarray(probabilities, np.float32)
    p = probabilities / probabilities.sum(axis=1, keepdims=True)
    p = np.clip(p, np.float32(EPSILON), np.float32(1 - EPSILON))
    losses = -np.log(p[np.arange(len(y)), y]).astype(np.float32)
    return evaluation_scores(losses, probabilities, y, batch_size)
