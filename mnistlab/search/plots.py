"""A search's scores.png: mean cross-validation accuracy of each parameter
set, with its standard deviation across folds as error bars."""

import io

# matplotlib's Figure, not pyplot: drawing files must not switch a notebook's plotting backend
from matplotlib.figure import Figure

from mnistlab.search import results as tables
from mnistlab.text import metric_text


def search_scores_png(labels, means, stds, best=None, title="cross-validation accuracy"):
    """One point per parameter set (labels on the x axis), the best one highlighted; PNG bytes."""
    n = len(labels)
    fig = Figure(figsize=(max(6, 0.9 * n + 2), 4.5), dpi=100)
    ax = fig.subplots()
    positions = range(n)
    ax.errorbar(positions, means, yerr=stds, fmt="o", capsize=5, color="tab:blue", label="mean ± std")
    if best is not None:
        ax.errorbar(
            [best],
            [means[best]],
            yerr=[stds[best]],
            fmt="o",
            capsize=5,
            color="tab:red",
            label=f"best: {metric_text(means[best])}",
        )
    ax.set_xlim(-0.5, n - 0.5)
    ax.set_xticks(list(positions))
    slanted = n > 4 or max(map(len, labels)) > 10  # long or many labels would overlap
    ax.set_xticklabels(labels, rotation=30 if slanted else 0, ha="right" if slanted else "center")
    ax.set_ylabel("accuracy")
    ax.set_title(title)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(loc="best")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def scores_chart(rows, cv=None):
    """scores.png for a search's result rows (grid order), as the search draws it."""
    return search_scores_png(
        [tables.label(r["params"]) for r in rows],
        [r["mean_test_score"] for r in rows],
        [r["std_test_score"] for r in rows],
        best=tables.best_index(rows),
        title=f"{cv}-fold cross-validation accuracy" if cv else "cross-validation accuracy",
    )
