"""The names mnistlab knows and each model's defaults, as plain data.

The parameter table (params.py) checks values against these names and writes its help from
these defaults; the model builders (models.py) and the optimizers (optimizers.py) take theirs
from here too. This module imports nothing of mnistlab, so each of them may import it without
importing the others: the table needs no Keras, and no module needs the table to know a name.
"""

MODEL_NAMES = ("dnn", "cnn", "convnet", "resnet")

# Each model's layer sizes where a config leaves hidden or filters at None (models.py's builders
# take theirs from here). The dnn has no convolutions.
SIZES = {
    "dnn": {"hidden": (400, 100)},
    "cnn": {"filters": (10, 20), "hidden": (320,)},
    "convnet": {"filters": (32, 64), "hidden": (128,)},
    "resnet": {"filters": (16, 32, 64), "hidden": ()},
}

# Each model's own training recipe: what a run uses where its config leaves a setting at None.
# The notebook's models keep the notebook's recipe, so that `mnistlab train` is the notebook's run.
NOTEBOOK_RECIPE = {"augment": 0.0, "schedule": "constant", "label_smoothing": 0.0, "weight_decay": 0.0}
MODERN_RECIPE = {"augment": 0.1, "schedule": "cosine", "label_smoothing": 0.1, "weight_decay": 0.01}
RECIPES = {"dnn": NOTEBOOK_RECIPE, "cnn": NOTEBOOK_RECIPE, "convnet": MODERN_RECIPE, "resnet": MODERN_RECIPE}

OPTIMIZER_NAMES = ("SGD", "RMSprop", "Adagrad", "Adadelta", "Adam", "Adamax", "Nadam")

# The two sets of default learning rates, by optimizer (optimizers.py says why there are two).
DEFAULT_LR = {
    "keras": {
        "SGD": 0.01,
        "RMSprop": 0.001,
        "Adagrad": 0.001,
        "Adadelta": 0.001,
        "Adam": 0.001,
        "Adamax": 0.001,
        "Nadam": 0.001,
    },
    "notebook": {
        "SGD": 0.01,
        "RMSprop": 0.001,
        "Adagrad": 0.01,
        "Adadelta": 1.0,
        "Adam": 0.001,
        "Adamax": 0.002,
        "Nadam": 0.002,
    },
}

SCHEDULES = ("constant", "cosine")

ENGINES = ("auto", "fast", "keras")
