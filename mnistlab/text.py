"""How mnistlab writes numbers for people: a metric, and a plain number in a message or a help text."""


def metric_text(value):
    """An accuracy, a loss or a probability as every table, page and result line shows it: 4 decimals."""
    return f"{value:.4f}"


def number_text(value):
    """A number as a person would write it: 1, 0.5, 1e-05 (no trailing .0; floats exact, as repr writes them)."""
    if isinstance(value, float) and value.is_integer():
        return f"{value:g}" if abs(value) >= 1e16 else str(int(value))
    return str(value)
