"""A sampled study as a table: one row per trial (its number, state, parameters, validation
accuracy after each epoch and at its end, seconds), written as results.json and results.csv
after every trial, and printed for the terminal.

A row's state is complete, pruned (stopped early by the pruner) or failed (its parameters could
not train together, or its process died: then `retried_as` names the trial that ran it again).
Surplus trials (asked for once the budget was reached, never trained) are left out.
"""

import csv
import io

from mnistlab.params import check
from mnistlab.search.results import value_text
from mnistlab.search.study import ERROR, SURPLUS
from mnistlab.storage import SearchFolder

FINISHED = {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed"}


def trial_rows(trials):
    """Rows of the finished trials (Optuna FrozenTrials), in trial order."""
    retried_as = {}
    for t in trials:
        history = t.system_attrs.get("retry_history") or []
        if history:
            retried_as[history[-1]] = t.number
    rows = []
    for t in trials:
        state = FINISHED.get(t.state.name)
        if state is None or t.user_attrs.get(SURPLUS):
            continue
        values = [float(t.intermediate_values[k]) for k in sorted(t.intermediate_values)]
        value = t.value if t.value is not None else (values[-1] if state == "pruned" and values else None)
        rows.append(
            {
                "number": t.number,
                "state": state,
                "params": params_of(t),
                "value": value,
                "val_accuracy": values,
                "epochs": len(values),
                "seconds": t.user_attrs.get("seconds"),
                "worker": t.user_attrs.get("worker"),
                "retry_of": t.system_attrs.get("failed_trial"),
                "retried_as": retried_as.get(t.number),
                "error": t.user_attrs.get(ERROR),
                "started": stamp(t.datetime_start),
                "finished": stamp(t.datetime_complete),
            }
        )
    return rows


def params_of(trial):
    """A trial's parameters as the parameter table takes them (Optuna stores 400x100 as text)."""
    return {name: check(name, value) for name, value in trial.params.items()}


def stamp(when):
    return when.isoformat(timespec="seconds") if when else None


def best_row(rows):
    complete = [r for r in rows if r["state"] == "complete" and r["value"] is not None]
    return max(complete, key=lambda r: (r["value"], -r["number"])) if complete else None


def param_names(rows):
    names = []
    for row in rows:
        names += [n for n in row["params"] if n not in names]
    return names


def trials_csv(rows):
    names = param_names(rows)
    epochs = max((r["epochs"] for r in rows), default=0)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(
        ["number", "state"]
        + [f"param_{n}" for n in names]
        + ["value", "epochs", "seconds"]
        + [f"val_accuracy_{e + 1}" for e in range(epochs)]
        + ["retry_of", "retried_as", "error"]
    )
    for r in rows:
        writer.writerow(
            [r["number"], r["state"]]
            + [value_text(r["params"][n]) if n in r["params"] else "" for n in names]
            + ["" if r["value"] is None else r["value"], r["epochs"], r["seconds"] or ""]
            + [r["val_accuracy"][e] if e < r["epochs"] else "" for e in range(epochs)]
            + ["" if r[k] is None else r[k] for k in ("retry_of", "retried_as", "error")]
        )
    return buf.getvalue()


def write_trials(out, rows):
    """results.json and results.csv of a study, each written atomically."""
    folder = out if isinstance(out, SearchFolder) else SearchFolder(out)
    folder.write_results(rows, trials_csv(rows))


def format_trials(rows, top=10):
    """The `top` best trials for the terminal, best first (failed ones last)."""
    ranked = sorted(rows, key=lambda r: (r["value"] is None, -(r["value"] or 0), r["number"]))[:top]
    names = param_names(ranked)
    header = ["trial", "state"] + names + ["accuracy", "epochs", "s"]
    body = [
        [str(r["number"]), r["state"]]
        + [short(r["params"][n]) if n in r["params"] else "" for n in names]
        + [
            "" if r["value"] is None else f"{r['value']:.4f}",
            str(r["epochs"]),
            "" if r["seconds"] is None else f"{r['seconds']:.1f}",
        ]
        for r in ranked
    ]
    widths = [max(len(line[c]) for line in [header] + body) for c in range(len(header))]
    numeric = {0} | set(range(2 + len(names), len(header)))
    return "\n".join(
        "  ".join(
            cell.rjust(w) if c in numeric else cell.ljust(w) for c, (cell, w) in enumerate(zip(line, widths))
        ).rstrip()
        for line in [header] + body
    )


def short(value):
    """A parameter's value as printed: 4 significant digits for floats (results.json keeps them all)."""
    return f"{value:.4g}" if isinstance(value, float) else value_text(value)


def format_value(name, value):
    return f"{name}={short(value)}"


def trial_line(row, total=None):
    """One finished trial as the command prints it."""
    of = f"/{total}" if total else ""
    params = ", ".join(format_value(k, v) for k, v in row["params"].items())
    if row["state"] == "failed":
        return f"trial {row['number']}{of}  failed  {params}  ({row['error'] or 'its process died'})"
    how = "pruned at epoch " + str(row["epochs"]) if row["state"] == "pruned" else f"{row['epochs']} epochs"
    seconds = f", {row['seconds']:.1f} s" if row["seconds"] is not None else ""
    return f"trial {row['number']}{of}  {row['state']:8s}  accuracy {row['value']:.4f}  ({how}{seconds})  {params}"
