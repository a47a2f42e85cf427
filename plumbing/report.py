"""How numbers are shown (a reader does not need this file to understand MOSAIC): the cells and pipe tables every
script prints (evaluate.format_table is the one metric table, built from these) and the one plot of RL curves
(train.py's curves.png, measure/sweep.py's runs side by side)."""


def fmt(v, ci=None, signed=False, decimals=2):
    """A table cell: a value with its 95% interval if given, '-' for None."""
    if v is None:
        return "-"
    s = f"{v:+.{decimals}f}" if signed else f"{v:.{decimals}f}"
    return s + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")


def pipe_table(header, rows):
    """A Markdown pipe table, padded so that it also reads well in a terminal."""
    w = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(str(c).ljust(w[i]) for i, c in enumerate(r)) + " |"
    return "\n".join([line(header), "|" + "|".join("-" * (x + 2) for x in w) + "|"] + [line(r) for r in rows])


CURVES = [("reward_mean", "reward (mean)"), ("harmful_refusal", "harmful refusal"), ("unsafe", "unsafe (non-benign)"),
          ("success", "legit task success"), ("benign_refusal", "benign refusal"),
          ("format_errors", "episodes with a format error"), ("quit", "quit (no answer, no refusal)"),
          ("kl", "KL to the reference")]


def plot_curves(logs, path, window=1):
    """The batch statistics of RL logs (log.jsonl records) against the RL step, one line per log of {label: log}, as
    moving averages over `window` steps (one step's batch holds a few tasks: its rates are noisy)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(2, 4, figsize=(15, 6))
    for label, log in logs.items():
        for ax, (k, title) in zip(axes.flat, CURVES):
            ys, avg = [r.get(k) for r in log], []
            for i in range(len(ys)):  # a step's rate is None when its batch had no task of that category
                seen = [y for y in ys[max(0, i - window + 1):i + 1] if y is not None]
                avg.append(sum(seen) / len(seen) if seen else float("nan"))
            ax.plot([r["step"] for r in log], avg, lw=1.2, label=label)
            ax.set_title(title + (f" (mean of {window} steps)" if window > 1 else ""), fontsize=9)
            ax.set_xlabel("RL step", fontsize=8)
    if len(logs) > 1:
        axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
