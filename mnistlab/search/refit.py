"""The best parameters trained on all the training data, scored on the test set and saved as the
search folder's best model: a grid's best parameter set (search.run), a study's best trial
(search.tune)."""

from mnistlab.storage import SearchFolder


def refit_params(params, x, y, test_data=None, out=None, say=None):
    """Train `params` on all of x, y; (the model, its test metrics or None); saved as out's best model.
    (A grid's best parameter set, and a sampled study's best trial.)"""
    from mnistlab.inference import evaluate
    from mnistlab.search.estimator import MnistClassifier

    (say or (lambda line: None))(f"refitting the best parameters on all {len(y)} training images")
    estimator = MnistClassifier(**params).fit(x, y)
    metrics = evaluate(estimator.model_, *test_data) if test_data is not None else None
    if out:
        SearchFolder(out).save_best_model(estimator.model_)
    return estimator.model_, metrics
