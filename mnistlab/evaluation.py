"""Step 4 of the pipeline: loading a saved model and measuring it on test data."""
from mnistlab.inference import EVAL_BATCH, TestTimeAugmentation, score, tta_score  # noqa: F401
from mnistlab.storage import load_model, model_path  # noqa: F401  (the step's public names)


def evaluate(model, x, y, batch_size=EVAL_BATCH, tta=None):
    """Test loss and accuracy of a model on pixels `x` (uint8 or float) and integer labels `y`:
    {"test_loss", "test_accuracy"}, computed by inference.score from the one prediction path;
    `tta` a TestTimeAugmentation: averaged over its transformed copies of each image."""
    return score(model, x, y, batch_size=batch_size, tta=tta)
