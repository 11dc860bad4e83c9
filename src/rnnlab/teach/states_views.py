"""How the hidden states of one sequence are drawn: the p × T matrix (rows = units, columns = timesteps).

    render(ins, stem)     the heatmap with y_t beneath it, written as stem.png and stem.svg
    terminal(ins)         a Rich table of the matrix, as many columns as fit the terminal

What is drawn is an `Inspection`, computed in `states`; this module reads it and never the reverse.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from rnnlab.teach.states import Inspection

__all__ = ["render", "terminal"]


COLUMN = 6  # characters of a token's column in the terminal: its first 6, or a value such as +0.3 or -1.0


def render(ins: Inspection, stem: str | Path) -> list[Path]:
    """Write the heatmap (p rows × T columns, labelled with the tokens) and y_t beneath it, as
    `stem`.png and `stem`.svg. Returns the two paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    p, T = ins.a.shape
    show_y = ins.y is not None and ins.y.shape[1] <= 12
    heights = [min(7.0, max(2.0, 0.18 * p))] + ([max(1.0, 0.25 * ins.y.shape[1])] if show_y else [])
    width = min(18.0, max(5.0, 0.45 * T + 2.5))
    fig, axes = plt.subplots(
        len(heights),
        1,
        figsize=(width, sum(heights) + 1.6),
        gridspec_kw={"height_ratios": heights},
        squeeze=False,
        layout="constrained",
    )
    ax = axes[0, 0]
    lim = float(np.abs(ins.a).max()) or 1.0
    signed = float(ins.a.min()) < 0
    im = ax.imshow(
        ins.a,
        aspect="auto",
        cmap="RdBu_r" if signed else "viridis",
        vmin=-lim if signed else 0.0,
        vmax=lim,
        interpolation="nearest",
    )
    ax.set_ylabel(f"unit (p = {p})")
    ax.set_xticks(np.arange(T), ins.tokens if T <= 60 else [""] * T, rotation=60, ha="right", fontsize=8)
    ax.tick_params(axis="x", labelbottom=not show_y)
    if len(ins.directions) == 2:
        fwd, bwd = ins.directions
        ax.axhline(fwd - 0.5, color="k", lw=1.5)
        box = {"facecolor": "white", "alpha": 0.8, "lw": 0, "pad": 1}
        ax.text(-0.4, -0.4, "forward: read left to right", va="top", fontsize=7, bbox=box)
        ax.text(-0.4, fwd - 0.4, "backward: read right to left", va="top", fontsize=7, bbox=box)
        ax.set_ylabel(f"unit (p = {fwd} + {bwd})")
    title = f"a_t: {p} units (rows) × {T} timesteps (columns)"
    ax.set_title(f"{ins.title}: {title}" if ins.title else title, fontsize=10, loc="left")
    fig.colorbar(im, ax=axes[:, 0].tolist(), fraction=0.025, pad=0.01, label="a_t")
    if show_y:
        ay = axes[1, 0]
        ay.imshow(ins.y.T, aspect="auto", cmap="Greys", vmin=0, vmax=1, interpolation="nearest")
        if T <= 40:
            best = np.argmax(ins.y, axis=1)
            for t in range(T):
                for c in range(ins.y.shape[1]):
                    v = float(ins.y[t, c])
                    ay.text(
                        t,
                        c,
                        f"{v:.2f}".lstrip("0"),
                        ha="center",
                        va="center",
                        fontsize=6,
                        color="white" if v > 0.6 else "black",
                        fontweight="bold" if c == best[t] else "normal",
                    )
        ay.set_yticks(np.arange(ins.y.shape[1]), list(ins.outputs) or None, fontsize=8)
        ay.set_xticks(np.arange(T), ins.tokens if T <= 60 else [""] * T, rotation=60, ha="right", fontsize=8)
        ay.set_title(ins.y_label, fontsize=9, loc="left")
    elif ins.y is not None and T <= 60:
        # many outputs (a vocabulary): the most probable one above each column
        top = ax.secondary_xaxis("top")
        top.set_xticks(np.arange(T), ins.predictions(), rotation=60, ha="left", fontsize=8, color="C3")
        top.set_xlabel("y_t: the most probable output after each step", fontsize=8, color="C3")
    if ins.notes:
        fig.supxlabel("\n".join(ins.notes), fontsize=7, x=0.01, ha="left")
    paths = [stem.with_suffix(".png"), stem.with_suffix(".svg")]
    try:
        for path in paths:      # each through a temporary name, renamed once whole: never a half picture
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            try:
                fig.savefig(tmp, format=path.suffix[1:], **({"dpi": 120} if path.suffix == ".png" else {}))
                os.replace(tmp, path)
            finally:
                tmp.unlink(missing_ok=True)
    finally:
        plt.close(fig)
    return paths


def terminal(ins: Inspection, max_units: int = 24, max_steps: int = 40, width: int | None = None):
    """A Rich table of the matrix (rows = units, columns = tokens; colour = value) and y_t's argmax, as many
    columns as fit `width` (each token's column 5 wide); the title says which rows and columns it leaves out."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    p, T = ins.a.shape
    rows = min(p, max_units)
    label = len(f"{rows} ") if ins.y is None else max(len(f"{rows} "), 4)
    fit = max(1, (width - label - 1) // (COLUMN + 1)) if width else max_steps
    cols = min(T, max_steps, fit)
    lim = float(np.abs(ins.a).max()) or 1.0
    signed = float(ins.a.min()) < 0
    title = f"a_t: p={p} units (rows) × T={T} timesteps (columns)"
    cut = [f"the first {n} of {of} {what}" for n, of, what in ((rows, p, "units"), (cols, T, "steps")) if n < of]
    left_out = f"shown: {' and '.join(cut)}; all of them in the picture and in --json" if cut else ""
    table = Table(
        box=None,
        pad_edge=False,
        padding=(0, 1),
    )
    table.add_column("", justify="right")
    for t in range(cols):
        table.add_column(Text(ins.tokens[t][:COLUMN], style="bold"), justify="center", min_width=4,
                         max_width=COLUMN, no_wrap=True, overflow="crop")
    for i in range(rows):
        cells = []
        for t in range(cols):
            v = float(ins.a[i, t]) / lim
            shade = round(abs(v) * 200)
            colour = (
                f"rgb({255 - shade // 3},{255 - shade},{255 - shade})"
                if v > 0
                else (f"rgb({255 - shade},{255 - shade},{255 - shade // 3})")
            )
            cells.append(Text(f"{ins.a[i, t]:{'+' if signed else ''}.1f}"[:COLUMN], style=f"black on {colour}"))
        table.add_row(f"{i + 1} ", *cells)
    if ins.y is not None:
        table.add_row("y_t ", *[Text(w[:COLUMN], style="italic") for w in ins.predictions()[:cols]])
    return Group(Text(title, style="bold"), table, *([Text(left_out, style="dim")] if left_out else []))
