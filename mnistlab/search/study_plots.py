"""A sampled study's pictures (PNG bytes, matplotlib as the project's other figures):

    history.png       each trial's validation accuracy by trial number, and the best so far
    curves.png        each trial's validation accuracy after every epoch; pruned trials dashed,
                      cut short where the pruner stopped them; the best trial in red
    importances.png   Optuna's parameter importances (its default evaluator, PED-ANOVA, over the complete trials)

They draw from the results rows (search.trials), so the report redraws them from results.json.
"""

import io

# matplotlib's Figure, not pyplot: drawing files must not switch a notebook's plotting backend
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from mnistlab.storage import write_bytes

PICTURES = {"history": "history.png", "curves": "curves.png", "importances": "importances.png"}
COLORS = {"complete": "tab:blue", "pruned": "tab:gray", "failed": "tab:orange"}


def png(fig):
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def history_png(rows):
    """Validation accuracy of each trial by number (pruned: where they stopped), best so far as a line."""
    fig = Figure(figsize=(7, 4.2), dpi=100)
    ax = fig.subplots()
    for state in ("complete", "pruned"):
        shown = [r for r in rows if r["state"] == state and r["value"] is not None]
        ax.scatter(
            [r["number"] for r in shown],
            [r["value"] for r in shown],
            s=22,
            color=COLORS[state],
            label=state,
            alpha=0.9 if state == "complete" else 0.6,
        )
    best, xs, ys = None, [], []
    for r in sorted(rows, key=lambda r: r["number"]):
        if r["state"] == "complete" and r["value"] is not None and (best is None or r["value"] > best):
            best = r["value"]
        if best is not None:
            xs.append(r["number"])
            ys.append(best)
    if xs:
        ax.step(xs, ys, where="post", color="tab:red", label=f"best so far: {best:.4f}")
    ax.set_xlabel("trial")
    ax.set_ylabel("validation accuracy")
    ax.set_title("optimization history")
    zoom(ax, [r["value"] for r in rows if r["value"] is not None])
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    return png(fig)


def curves_png(rows, best=None):
    """Every trial's learning curve (validation accuracy after each epoch)."""
    fig = Figure(figsize=(7, 4.2), dpi=100)
    ax = fig.subplots()
    values = []
    for r in rows:
        if not r["val_accuracy"]:
            continue
        epochs = range(1, r["epochs"] + 1)
        values += r["val_accuracy"]
        if best is not None and r["number"] == best:
            continue
        pruned = r["state"] == "pruned"
        ax.plot(
            epochs,
            r["val_accuracy"],
            linestyle="--" if pruned else "-",
            marker="x" if pruned else ".",
            color=COLORS.get(r["state"], "tab:gray"),
            alpha=0.45 if pruned else 0.7,
            linewidth=1,
        )
    shown = next((r for r in rows if best is not None and r["number"] == best), None)
    if shown:
        ax.plot(
            range(1, shown["epochs"] + 1),
            shown["val_accuracy"],
            color="tab:red",
            linewidth=2.2,
            marker="o",
            label=f"best: trial {best}",
        )
    ax.plot([], [], color=COLORS["complete"], label="complete")
    ax.plot([], [], color=COLORS["pruned"], linestyle="--", marker="x", label="pruned (stopped there)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation accuracy")
    ax.set_title("learning curves of the trials")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    zoom(ax, values)
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    return png(fig)


def importances_png(importances):
    """Horizontal bars, most important on top."""
    names = sorted(importances, key=importances.get)
    fig = Figure(figsize=(6.5, max(2.2, 0.45 * len(names) + 1.2)), dpi=100)
    ax = fig.subplots()
    ax.barh(names, [importances[n] for n in names], color="tab:blue")
    for i, n in enumerate(names):
        ax.text(importances[n], i, f" {importances[n]:.2f}", va="center")
    ax.set_xlim(0, max(1.0, max(importances.values(), default=0) * 1.15))
    ax.set_xlabel("importance (Optuna's PED-ANOVA; they sum to 1)")
    ax.set_title("parameter importances")
    return png(fig)


def zoom(ax, values):
    """Show the interesting band: from a little under the median result to the top."""
    if len(values) > 2:
        ordered = sorted(values)
        low = ordered[len(ordered) // 4]
        top = ordered[-1]
        ax.set_ylim(max(0.0, low - 0.5 * (top - low) - 0.005), min(1.0, top + 0.2 * (top - low) + 0.005))


def study_pictures(rows, importances):
    """{name: PNG bytes}: history and curves when a trial finished, importances when Optuna gave them."""
    from mnistlab.search.trials import best_row

    if not rows:
        return {}
    best = best_row(rows)
    pictures = {"history": history_png(rows), "curves": curves_png(rows, best["number"] if best else None)}
    if importances:
        pictures["importances"] = importances_png(importances)
    return pictures


def save_study_plots(folder, rows, importances):
    """The pictures in the search folder (a SearchFolder), each written atomically."""
    for name, data in study_pictures(rows, importances).items():
        write_bytes(folder.file(PICTURES[name]), data, suffix=".png")
