"""A finished search's table written where TensorBoard and MLflow read it: one TensorBoard run, or one
nested MLflow run, per parameter set. The writers and MLflow's client are the run loggers'
(mnistlab.training.tracking)."""

import json
import os

from mnistlab.training.tracking import (
    hparam_value,
    log_mlflow,
    mlflow_client,
    mlflow_guard,
    start_mlflow_run,
    summary_writer,
    write_hparams,
)


def fold_scores(row):
    """A search row's accuracy on each fold, in fold order."""
    scores = []
    while f"split{len(scores)}_test_score" in row:
        scores.append(row[f"split{len(scores)}_test_score"])
    return scores


def search_to_tensorboard(logdir, rows, label):
    """One TensorBoard run per parameter set of a search, `logdir`/<rank>-<label>: its parameters as
    hparams, its mean and std cross-validation accuracy, and each fold's accuracy (step = fold)."""
    for row in rows:
        name = f"{row['rank_test_score']:02d}-{label(row['params'])}".replace(os.sep, "_").replace(" ", "")
        writer = summary_writer(os.path.join(logdir, name))
        try:
            for fold, score in enumerate(fold_scores(row), 1):
                writer.add_scalar("cv/fold_accuracy", score, fold)
            write_hparams(
                writer,
                {k: hparam_value(v) for k, v in row["params"].items()},
                {"cv/mean_accuracy": row["mean_test_score"], "cv/std_accuracy": row["std_test_score"]},
            )
        finally:
            writer.close()


def search_to_mlflow(uri, rows, label, name=None, settings=None):
    """One MLflow run for the search (its settings; the best score) with one nested run per
    parameter set (its parameters, mean and std accuracy, each fold's accuracy as step = fold)."""
    client = mlflow_client(uri)
    parent = start_mlflow_run(
        client,
        uri,
        name,
        {k: json.dumps(v) for k, v in (settings or {}).items() if k in ("grid", "params", "cv", "n_samples")},
    )

    def log():
        for row in rows:
            run_id = start_mlflow_run(
                client,
                uri,
                label(row["params"]),
                {k: hparam_value(v) for k, v in row["params"].items()},
                tags={"mlflow.parentRunId": parent},
            )
            log_mlflow(
                client,
                run_id,
                {
                    "cv_mean_accuracy": row["mean_test_score"],
                    "cv_std_accuracy": row["std_test_score"],
                    "rank": row["rank_test_score"],
                },
            )
            for fold, score in enumerate(fold_scores(row), 1):
                log_mlflow(client, run_id, {"cv_fold_accuracy": score}, fold)
            client.set_terminated(run_id, "FINISHED")
        log_mlflow(client, parent, {"best_cv_mean_accuracy": max(r["mean_test_score"] for r in rows)})
        client.set_terminated(parent, "FINISHED")

    mlflow_guard(uri, log)
    return parent
