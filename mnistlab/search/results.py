"""A finished search as a table: one row per parameter set, the columns and
ranking of scikit-learn's cv_results_, written as results.csv and
results.json and printed as the notebook printed its grid search.
"""

import csv
import io

import numpy as np
from scipy.stats import rankdata

from mnistlab.storage import SearchFolder
from mnistlab.text import metric_text


def summarise(candidates, scores, fit_times, score_times):
    """Rows in grid order; scores[i][f] is parameter set i's accuracy on fold f.

    Mean, population std and "min" ranking as GridSearchCV computes them.
    """
    scores = np.asarray(scores, dtype=float)
    means, stds = scores.mean(axis=1), scores.std(axis=1)
    ranks = rankdata(-means, method="min").astype(int)
    rows = []
    for i, params in enumerate(candidates):
        row = {
            "params": dict(params),
            "mean_test_score": float(means[i]),
            "std_test_score": float(stds[i]),
            "rank_test_score": int(ranks[i]),
            "mean_fit_time": float(np.mean(fit_times[i])),
            "std_fit_time": float(np.std(fit_times[i])),
            "mean_score_time": float(np.mean(score_times[i])),
        }
        row |= {f"split{f}_test_score": float(s) for f, s in enumerate(scores[i])}
        rows.append(row)
    return rows


def best_index(rows):
    """The first row ranked 1, as GridSearchCV's best_index_."""
    return int(np.argmin([row["rank_test_score"] for row in rows]))


def param_names(rows):
    names = []
    for row in rows:
        names += [name for name in row["params"] if name not in names]
    return names


def value_text(value):
    """A parameter value as the command line writes it: 400x100 for hidden sizes, default for None."""
    if value is None:
        return "default"
    if isinstance(value, (list, tuple)):
        return "x".join(str(v) for v in value)
    return str(value)


def label(params):
    """A short name for a parameter set: the value alone when one parameter varies."""
    if len(params) == 1:
        return value_text(next(iter(params.values())))
    return ", ".join(f"{k}={value_text(v)}" for k, v in params.items())


def results_csv(rows):
    names = param_names(rows)
    stats = [k for k in rows[0] if k != "params"] if rows else []
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([f"param_{n}" for n in names] + stats)
    for row in rows:
        writer.writerow(
            [value_text(row["params"][n]) if n in row["params"] else "" for n in names] + [row[k] for k in stats]
        )
    return buf.getvalue()


def write_results(out, rows):
    """results.csv and results.json in search folder `out`, each written atomically."""
    folder = out if isinstance(out, SearchFolder) else SearchFolder(out)
    folder.write_results(rows, results_csv(rows))


def format_table(rows):
    """The table for the terminal: rank, parameters, mean and std accuracy, mean fit time."""
    names = param_names(rows)
    header = ["rank"] + names + ["mean", "std", "fit s"]
    body = [
        [str(row["rank_test_score"])]
        + [value_text(row["params"][n]) if n in row["params"] else "" for n in names]
        + [metric_text(row["mean_test_score"]), metric_text(row["std_test_score"]), f"{row['mean_fit_time']:.1f}"]
        for row in rows
    ]
    widths = [max(len(line[c]) for line in [header] + body) for c in range(len(header))]
    lines = [
        "  ".join(
            cell.rjust(w) if c == 0 or c > len(names) else cell.ljust(w)
            for c, (cell, w) in enumerate(zip(line, widths))
        ).rstrip()
        for line in [header] + body
    ]
    return "\n".join(lines)


def notebook_lines(rows):
    """The notebook's own summary: "Best: ... using ..." then "mean (std) with: params" per set."""
    best = rows[best_index(rows)]
    lines = [f"Best: {best['mean_test_score']:f} using {best['params']}"]  # the notebook's own %f wording
    lines += [f"{row['mean_test_score']:f} ({row['std_test_score']:f}) with: {row['params']!r}" for row in rows]
    return "\n".join(lines)
