"""The report of a sampled study's search folder (--strategy random or tpe), and its view in a
notebook: the best trial, the optimization history, every trial's learning curve (pruned ones
dashed and cut short), the parameter importances, and the trials table with their states."""

import json
import os

from mnistlab.report import markup
from mnistlab.storage import SearchFolder, read_bytes

CHART_WIDTH = 560  # pixels per picture in a notebook cell


def is_study(rows):
    """results.json rows of a sampled study (trials), not a grid's parameter sets."""
    return bool(rows) and all("state" in r and "number" in r for r in rows)


def pictures(folder, rows, importances):
    """{name: PNG}: the folder's own, or drawn from the rows as the study draws them."""
    from mnistlab.search.study_plots import PICTURES, study_pictures

    found = {name: read_bytes(os.path.join(folder, file)) for name, file in PICTURES.items()} if folder else {}
    if all(found.get(name) for name in ("history", "curves")) and (found.get("importances") or not importances):
        return {k: v for k, v in found.items() if v}
    return study_pictures(rows, importances)


def study_page(folder):
    """(title, subtitle, sections) for a sampled study's folder."""
    from mnistlab.search.trials import best_row

    search = SearchFolder(folder)
    rows, best, settings = search.read_results(), search.read_best(), search.read_settings()
    importances = best.get("importances") or {}
    drawn = pictures(folder, rows, importances)
    top = best_row(rows)
    sections = [("best", "Best trial", best_cards(top, best, rows))]
    sections += [
        (sid, heading, markup.figures(markup.image(drawn[sid], alt))) for sid, heading, alt in FIGURES if sid in drawn
    ]
    if importances:
        sections.append(
            (
                "importance-table",
                "Importances",
                markup.table(("parameter", "importance"), [(k, f"{v:.3f}") for k, v in importances.items()]),
            )
        )
    sections.append(("trials", "Trials, best first", trials_table(rows, top)))
    if settings:
        sections.append(
            (
                "settings",
                "Study settings",
                markup.table(
                    ("setting", "value"),
                    [(k, v if isinstance(v, str) else json.dumps(v)) for k, v in settings.items()],
                    left=2,
                ),
            )
        )
    strategy = best.get("strategy") or settings.get("strategy", "sampled")
    subtitle = (
        f"{strategy} study: {counts_text(rows)}"
        + (f", pruning: {settings['prune']}" if settings.get("prune") else "")
        + (f", {best['wall_seconds']:.0f} s" if isinstance(best.get("wall_seconds"), (int, float)) else "")
    )
    return f"Study {os.path.basename(os.path.abspath(folder))}", subtitle, sections


FIGURES = [
    ("history", "Optimization history", "validation accuracy of each trial and the best so far"),
    ("curves", "Learning curves", "validation accuracy of each trial after every epoch; pruned ones dashed"),
    ("importances", "Parameter importances", "Optuna's parameter importances"),
]


def counts_text(rows):
    counts = {s: sum(r["state"] == s for r in rows) for s in ("complete", "pruned", "failed")}
    return f"{len(rows)} trials (" + ", ".join(f"{n} {s}" for s, n in counts.items() if n) + ")"


def params_text(params):
    from mnistlab.search.trials import format_value

    return ", ".join(format_value(k, v) for k, v in params.items())


def best_cards(top, best, rows):
    if top is None:
        return markup.paragraph("No trial completed.")
    items = [
        (f"{top['value']:.4f}", f"validation accuracy of trial {top['number']}"),
        (params_text(top["params"]), "best parameters"),
    ]
    test = best.get("test_metrics") or {}
    if "test_accuracy" in test:
        items.append((f"{test['test_accuracy']:.4f}", "test accuracy of the best, refit on all training data"))
    items.append((counts_text(rows), "trials"))
    return markup.cards(items)


def trials_table(rows, top=None):
    from mnistlab.search.trials import param_names, short

    ranked = sorted(rows, key=lambda r: (r["value"] is None, -(r["value"] or 0), r["number"]))
    names = param_names(ranked)
    body = [
        [r["number"], r["state"]]
        + [short(r["params"][n]) if n in r["params"] else "" for n in names]
        + [
            "" if r["value"] is None else f"{r['value']:.4f}",
            r["epochs"],
            "" if r.get("seconds") is None else f"{r['seconds']:.1f}",
            " ".join(f"{v:.3f}" for v in r["val_accuracy"]) or (r.get("error") or ""),
        ]
        for r in ranked
    ]
    header = ["trial", "state"] + names + ["accuracy", "epochs", "s", "accuracy after each epoch"]
    best_number = top["number"] if top else None
    return markup.table(
        header, body, left=2 + len(names), row_class=lambda i: "best" if ranked[i]["number"] == best_number else None
    )


def study_html(result):
    """A search.tune.TuneResult in a notebook: the summary, the pictures and the trials table."""
    lines = [f"{result.plan.strategy} study: {counts_text(result.rows)}."]
    if result.best:
        lines.append(
            f"Best: trial {result.best['number']}, {params_text(result.best_params)}, "
            f"validation accuracy {result.best_score:.4f}"
        )
    if result.test_metrics:
        lines.append(f"refit on all training images: test accuracy {result.test_metrics['test_accuracy']:.4f}")
    if result.out:
        lines.append(f"search folder: {result.out}")
    drawn = pictures(result.out, result.rows, result.importances)
    images = "".join(markup.image(drawn[sid], alt, CHART_WIDTH) for sid, _, alt in FIGURES if sid in drawn)
    return (
        "<div>"
        + "".join(markup.paragraph(line) for line in lines)
        + images
        + trials_table(result.rows, result.best)
        + "</div>"
    )
