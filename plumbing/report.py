"""How numbers are shown (a reader does not need this file to understand MOSAIC): the cells and pipe tables every
script prints (evaluate.format_table is the one metric table, built from these) and the one plot of training curves."""


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
