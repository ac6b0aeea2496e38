"""How a training run and a search result show themselves in Jupyter: an HTML table of their
figures with the learning curves (a run) or the score chart (a search), pictures inline.

The objects live in lower layers (training.finish.Run, search.run.SearchResult) that may not
import this one, so the views are registered with IPython's display formatter by type name,
as `import mnistlab` does inside IPython; a view is drawn only when an object is displayed.
"""

from mnistlab.report import markup
from mnistlab.text import metric_text

CURVE_WIDTH = 380  # pixels per learning-curve picture: the two side by side in a notebook cell
CHART_WIDTH = 480


def run_html(run):
    """A training.finish.Run: what it trained, its test figures, its learning curves."""
    from mnistlab.report.run_page import curves
    from mnistlab.storage import RunFolder

    config, metrics = run.config, run.metrics
    epochs = metrics.get("epochs", config.epochs)
    title = (
        f"{config.model} on {config.dataset}: {epochs} epoch{'' if epochs == 1 else 's'}, "
        f"batch {config.batch_size}, {config.optimizer}"
    )
    rows = [
        (label, fmt(metrics[key]))
        for key, label, fmt in (
            ("test_accuracy", "test accuracy", metric_text),
            ("test_loss", "test loss", metric_text),
            ("train_seconds", "training time", "{:.1f} s".format),
        )
        if key in metrics
    ]
    rows.append(("run folder", run.out or "not saved (train with out=...)"))
    folder = RunFolder(run.out) if run.out else None
    return (
        f"<div><p><b>{markup.esc(title)}</b></p>\n"
        + markup.table(("", "this run"), rows)
        + "\n"
        + curves(folder, run.history, CURVE_WIDTH)
        + "\n"
        + insight_html(run)
        + "\n</div>"
    )


def insight_html(run):
    """The run page's look inside the model (report.insight: why, trust, learned), each under a heading,
    on the run's test set; a one-line note instead when the test set cannot be loaded."""
    from mnistlab.data import load_dataset
    from mnistlab.errors import MnistlabError
    from mnistlab.inference import predict
    from mnistlab.report import insight

    config = run.config
    try:
        dataset = load_dataset(config.dataset, config.data_dir, download=False, verify=config.verify_data)
    except MnistlabError as e:
        return markup.paragraph(f"No look inside the model: the test set cannot be loaded ({e}).")
    probabilities = predict(run.model, dataset.x_test)
    return "".join(
        f'<div id="{markup.esc(sid)}"><h4>{markup.esc(heading)}</h4>\n{inner}</div>\n'
        for sid, heading, inner in insight.sections(
            run.model, dataset.x_test, dataset.y_test.astype(int), probabilities, list(dataset.classes)
        )
    )


def search_html(result):
    """A search.run.SearchResult: its results table, best first, and its score chart."""
    from mnistlab.report.search_page import best_first, results_table
    from mnistlab.search import results as tables
    from mnistlab.search.plots import scores_chart

    cv = result.plan.cv
    lines = [
        f"Grid search: {len(result.rows)} parameter sets, {cv}-fold cross-validation. "
        f"Best: {tables.label(result.best_params)}, mean accuracy {metric_text(result.best_score)}"
    ]
    if result.test_metrics:
        lines.append(f"refit on all training images: test accuracy {metric_text(result.test_metrics['test_accuracy'])}")
    if result.out:
        lines.append(f"search folder: {result.out}")
    chart = markup.image(
        scores_chart(result.rows, cv), "mean cross-validation accuracy of each parameter set", CHART_WIDTH
    )
    return (
        "<div>"
        + "".join(markup.paragraph(line) for line in lines)
        + results_table(best_first(result.rows), tables)
        + "\n"
        + chart
        + "</div>"
    )


def study_html(result):
    """A search.tune.TuneResult (a sampled study): see report.study_page."""
    from mnistlab.report.study_page import study_html as view

    return view(result)


VIEWS = {
    ("mnistlab.training.finish", "Run"): run_html,
    ("mnistlab.search.run", "SearchResult"): search_html,
    ("mnistlab.search.tune", "TuneResult"): study_html,
}


def register(shell=None):
    """Register the views with IPython's HTML formatter (`shell`: the running one). False outside IPython."""
    if shell is None:
        try:
            from IPython.core.getipython import get_ipython
        except ImportError:
            return False
        shell = get_ipython()
    if shell is None:
        return False
    # (traitlets types display_formatter as "T | DisplayFormatter | None", its type variable unsolved; a shell has
    # one, and `shell` may be any object with one)
    html = shell.display_formatter.formatters["text/html"]  # pyright: ignore[reportAttributeAccessIssue, reportOptionalMemberAccess]
    for (module, name), view in VIEWS.items():
        html.for_type_by_name(module, name, view)
    return True
