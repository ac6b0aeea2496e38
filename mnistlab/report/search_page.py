"""The report of a search folder: the best parameters, the score chart and
the full results table, best first."""

import json
import os

from mnistlab.report import markup
from mnistlab.storage import SearchFolder
from mnistlab.text import metric_text


def search_page(folder):
    """(title, subtitle, sections) for the search folder `folder` (results.json, best.json, scores.png)."""
    from mnistlab.search import results as tables

    search = SearchFolder(folder)
    rows = search.read_results()
    from mnistlab.report.study_page import is_study, study_page  # tune: a sampled study's folder

    if is_study(rows):
        return study_page(folder)
    best = search.read_best()
    settings = search.read_settings()
    ranked = best_first(rows)
    cv = best.get("cv") or settings.get("cv", {}).get("n_splits")

    sections = [
        ("best", "Best parameters", best_summary(ranked[0], best, tables)),
        ("scores", "Scores", chart(search, rows, cv)),
        ("results", "Results, best first", results_table(ranked, tables)),
    ]
    if settings:
        sections.append(
            (
                "settings",
                "Search settings",
                markup.table(
                    ("setting", "value"),
                    [(k, v if isinstance(v, str) else json.dumps(v)) for k, v in settings.items()],
                    left=2,
                ),
            )
        )
    subtitle = (
        f"{len(rows)} parameter sets"
        + (f", {cv}-fold cross-validation" if cv else "")
        + (f", {best['wall_seconds']:.0f} s" if isinstance(best.get("wall_seconds"), (int, float)) else "")
    )
    return f"Search {os.path.basename(os.path.abspath(folder))}", subtitle, sections


def best_first(rows):
    return sorted(rows, key=lambda r: (r.get("rank_test_score", 0), -r.get("mean_test_score", 0)))


def best_summary(top, best, tables):
    items = [
        (
            metric_text(top["mean_test_score"]),
            f"mean cross-validation accuracy (± {metric_text(top['std_test_score'])})",
        ),
        (tables.label(top["params"]), "best parameters"),
    ]
    test = best.get("test_metrics") or {}
    if "test_accuracy" in test:
        items.append((metric_text(test["test_accuracy"]), "test accuracy of the best, refit on all training data"))
    if "fits_computed" in best:
        items.append((f"{best['fits_computed']} + {best.get('fits_reused', 0)}", "fits run + reused"))
    return markup.cards(items)


def chart(search, rows, cv):
    alt = "mean cross-validation accuracy of each parameter set, with its standard deviation"
    png = search.read_scores()
    if png is None:  # an older folder without the chart: draw it as the search does
        from mnistlab.search.plots import scores_chart

        png = scores_chart(rows, cv)
    return markup.figures(markup.image(png, alt))


def results_table(ranked, tables):
    names = tables.param_names(ranked)
    body = [
        [r.get("rank_test_score", "")]
        + [tables.value_text(r["params"][n]) if n in r["params"] else "" for n in names]
        + [
            metric_text(r["mean_test_score"]),
            metric_text(r["std_test_score"]),
            f"{r['mean_fit_time']:.1f}" if "mean_fit_time" in r else "",
        ]
        for r in ranked
    ]
    header = ["rank"] + names + ["mean accuracy", "std", "mean fit s"]
    # rank left-aligned with the parameters, so the names read as labels
    return markup.table(
        header, body, left=1 + len(names), row_class=lambda i: "best" if ranked[i].get("rank_test_score") == 1 else None
    )
