"""A scikit-learn classifier over mnistlab's models, for GridSearchCV,
cross_val_score and Pipeline, as the notebook's KerasClassifier was.

It subclasses Keras' own scikit-learn wrapper and keeps its tags, metadata
routing and classifier behaviour (score is accuracy). It replaces three parts:
  * the model: built from parameters named as TrainConfig names them (so a grid
    varies `optimizer` or `hidden` directly, not a nested model_kwargs dict),
    and compiled by training.loop.compile_model;
  * the training: through training.loop.fit, so whatever makes that faster
    (the fast JAX path) makes every search faster too;
  * the labels: the network always has ten outputs, output k meaning digit k,
    whereas the Keras wrapper one-hot encodes only the classes present in y,
    which breaks on a small fold missing a digit.
Inputs are uint8 images (n, 28, 28) or (n, 784), or floats already scaled to
[0, 1]; labels are integers 0-9.
"""

import inspect

import mnistlab.backend  # noqa: F401  (JAX unless KERAS_BACKEND says otherwise)

import keras
import numpy as np
from keras.wrappers import SKLearnClassifier
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.multiclass import type_of_target
from sklearn.utils.validation import check_is_fitted, validate_data

from mnistlab.data import for_input, one_hot
from mnistlab.data.registry import NUM_CLASSES
from mnistlab.errors import UsageError
from mnistlab.inference import predict_proba
from mnistlab.params import GRID_NAMES, PARAMS
from mnistlab.training import loop
from mnistlab.training.config import TrainConfig


# ClassifierMixin and BaseEstimator are already SKLearnClassifier's bases, so naming them again leaves the
# MRO as it was; but Keras imports them in a try whose except defines empty stand-ins, and pyright takes
# those: named here, scikit-learn's own methods (get_params, score, ...) are known to it.
class MnistClassifier(SKLearnClassifier, ClassifierMixin, BaseEstimator):
    """mnistlab's networks (any model build_model knows) as a scikit-learn classifier.

    The parameters and their defaults are TrainConfig's; `verbose` is Keras'
    progress output during fit (0: silent).
    """

    loss: str  # set by __init__ with the other GRID_NAMES; declared for the type checker (no class attribute)

    def __init__(self, verbose=0, **params):
        # SKLBase.__init__ is not called: there `model` is a Keras model or builder, here a name.
        # scikit-learn's clone requires each parameter stored exactly as given.
        unknown = sorted(set(params) - set(GRID_NAMES))
        if unknown:
            raise TypeError(f"MnistClassifier got unexpected parameters {unknown}: choose from {', '.join(GRID_NAMES)}")
        for name in GRID_NAMES:
            setattr(self, name, params.get(name, PARAMS[name].default))
        self.verbose = verbose

    # scikit-learn reads an estimator's parameters from its __init__'s signature: the table's.
    __init__.__signature__ = inspect.Signature(
        [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
        + [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=PARAMS[name].default) for name in GRID_NAMES]
        + [inspect.Parameter("verbose", inspect.Parameter.KEYWORD_ONLY, default=0)]
    )

    # The Keras wrapper's clone rebuilds from its own three parameters; ours has others.
    # (pyright infers both sides' return types from unannotated code, and they differ: each returns a clone)
    __sklearn_clone__ = BaseEstimator.__sklearn_clone__  # pyright: ignore[reportAssignmentType]

    def train_config(self):
        """The TrainConfig this estimator trains with."""
        return TrainConfig(**{name: getattr(self, name) for name in GRID_NAMES})

    def _get_model(self, X, y=None):
        return loop.make_model(self.train_config(), len(X), layer_seeds=True)

    def _sparse_targets(self):
        return "sparse" in str(self.loss)

    def _process_target(self, y, reset=False):
        """Integer labels 0-9 -> what the loss expects (one-hot unless the loss is sparse)."""
        kind = type_of_target(y)
        y = np.asarray(y)
        if kind not in ("binary", "multiclass") or y.ndim != 1:
            raise UsageError(f"labels must be one integer 0-{NUM_CLASSES - 1} per image, got {kind} targets")
        if y.size and (y.min() < 0 or y.max() >= NUM_CLASSES or not np.all(np.equal(np.mod(y, 1), 0))):
            raise UsageError(f"labels must be whole numbers 0-{NUM_CLASSES - 1}")
        if reset:
            self.classes_ = np.arange(NUM_CLASSES)
        y = y.astype(np.int64)
        return y if self._sparse_targets() else one_hot(y, NUM_CLASSES)

    def _reverse_process_target(self, probabilities):
        return self.classes_[np.argmax(probabilities, axis=1)]

    def _inputs(self, X, y=None, reset=False):
        """Images checked as scikit-learn checks rows: flattened, so (n, 28, 28) and (n, 784)
        are the same 784 features; the dtype is kept (uint8 is scaled later, floats are not)."""
        X = np.asarray(X)
        if X.ndim > 2:
            X = X.reshape(len(X), -1)
        # (scikit-learn's validate_data leaves X unannotated with the default "no_validation": pyright says str)
        if y is None:
            return validate_data(self, X, reset=reset, dtype=None), None  # pyright: ignore[reportArgumentType]
        return validate_data(self, X, y, reset=reset, dtype=None)  # pyright: ignore[reportArgumentType]

    @staticmethod
    def _model_input(model, X, scaled=True):
        return for_input(X, model, scaled)

    def fit(self, X, y, validation_data=None, callbacks=()):
        """Train a fresh model on images X and labels y; `validation_data` is (images, labels)."""
        X, y = self._inputs(X, y, reset=True)
        targets = self._process_target(y, reset=True)
        config = self.train_config()
        keras.utils.set_random_seed(config.seed)
        model = self._get_model(X)
        if validation_data is not None:
            val_x, val_y = validation_data
            validation_data = (self._model_input(model, val_x, scaled=False), self._process_target(val_y))
        # looked up at call time: the training loop may be replaced by a faster one. uint8 pixels go
        # in as they are: the loop scales them (the fast path on the device, batch by batch).
        self.history_ = loop.fit(
            model,
            self._model_input(model, X, scaled=False),
            targets,
            validation_data,
            config,
            verbose=self.verbose,
            callbacks=callbacks,
        )
        self.model_ = model
        return self

    def predict_proba(self, X):
        """Class probabilities, one column per digit 0-9."""
        check_is_fitted(self)
        X, _ = self._inputs(X)
        return predict_proba(self.model_, X)

    decision_function = predict_proba

    def predict(self, X):
        return self._reverse_process_target(self.predict_proba(X))
