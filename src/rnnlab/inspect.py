"""The hidden states of one sequence, as a matrix: p rows (units) × T columns (timesteps).

    a_t = f_a(W_a x_t + U_a a_{t-1} + b_a)   for t = 1..T: column t of the matrix is a_t

Every column has the same p rows, whatever T is: that is the picture of "units" and "timesteps" being
two different axes. Only the sequence's own T tokens are shown: a text padded to a batch's length is
run for its real length, and the padding's columns do not exist (they are never read).

    inspect_layer(layer, x, tokens)      any Recurrent layer or Stack: states from x (T, k)
    inspect_run(run, "text")             a trained text classifier (`rnnlab train`): y_t = label after t tokens
    inspect_sequence(model, data, words) an Elman many-to-many model: y_t = the next word it expects
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from rnnlab.layers import Bidirectional, Recurrent, Stack

__all__ = ["Inspection", "inspect_layer", "inspect_run", "inspect_sequence", "render", "terminal"]


@dataclass
class Inspection:
    """The states of one sequence and what the model says after each step.

    a: (p, T) hidden states, column t = a_t (p rows: 2p for a bidirectional layer, forward rows first)
    tokens: (T,) the column labels
    y: (T, C) the model's output after each step (probabilities), or None
    outputs: the names of the C outputs (labels or words)
    directions: the row count of each direction, e.g. (p,) or (p, p)
    """

    a: Float[np.ndarray, "p T"]
    tokens: list[str]
    y: Float[np.ndarray, "T C"] | None = None
    outputs: tuple[str, ...] = ()
    directions: tuple[int, ...] = ()
    title: str = ""
    notes: list[str] = field(default_factory=list)
    predicted: list[str] | None = None
    y_label: str = "y_t: the output after each step"

    @property
    def p(self) -> int:
        """Rows: units of the state (both directions together)."""
        return self.a.shape[0]

    @property
    def T(self) -> int:
        """Columns: timesteps, one per token."""
        return self.a.shape[1]

    def predictions(self) -> list[str]:
        """The most probable output after each step (empty without y)."""
        if self.predicted is not None:
            return list(self.predicted)
        if self.y is None:
            return []
        return [self.outputs[i] if self.outputs else str(i) for i in np.argmax(self.y, axis=1)]

    def to_dict(self) -> dict:
        """The raw numbers: `a` as p lists of T floats (rows = units), `y` as T lists of C floats."""
        return {
            "units": self.p,
            "timesteps": self.T,
            "tokens": list(self.tokens),
            "a": np.asarray(self.a, float).round(6).tolist(),
            "y": None if self.y is None else np.asarray(self.y, float).round(6).tolist(),
            "outputs": list(self.outputs),
            "predictions": self.predictions(),
            "directions": list(self.directions),
        }


def _step_states(layer: Recurrent, x: Float[Array, "T k"]) -> Float[Array, "T p"]:
    """a_1..a_T by calling `layer.step` T times, one timestep each (forward layers)."""
    step = eqx.filter_jit(layer.step)
    state = layer.initial_state()
    out = []
    for t in range(x.shape[0]):
        state = step(state, x[t])
        out.append(layer.cell.hidden(state))
    return jnp.stack(out)


def inspect_layer(
    layer: Recurrent | Bidirectional | Stack,
    x: Float[Array, "T k"],
    tokens: list[str] | None = None,
    *,
    readout=None,
    outputs: tuple[str, ...] = (),
) -> Inspection:
    """States of `layer` on one sequence x (T, k), as a (p, T) matrix with its columns labelled by `tokens`.

    A forward `Recurrent` layer is run step by step (`layer.step`), exactly as the loop is written;
    a `Bidirectional` layer or a `Stack` through its own scan. `readout` (y_t = f_y(W_y a_t + b_y)),
    when given, adds y_t after each step as probabilities (softmax over `outputs`).
    """
    x = jnp.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"inspect one sequence x of shape (T, k); got shape {tuple(x.shape)}")
    T = x.shape[0]
    tokens = [str(t + 1) for t in range(T)] if tokens is None else list(tokens)
    if len(tokens) != T:
        raise ValueError(f"{len(tokens)} token labels for T={T} timesteps")
    if isinstance(layer, Recurrent) and not layer.reverse:
        a = _step_states(layer, x)
    else:
        a, _ = layer(x)
    y = None
    if readout is not None:
        y = np.asarray(jax.nn.softmax(readout(a), axis=-1))
    return Inspection(np.asarray(a).T, tokens, y, tuple(outputs), _directions(layer))


def _directions(layer) -> tuple[int, ...]:
    last = layer.layers[-1] if isinstance(layer, Stack) else layer
    if isinstance(last, Bidirectional):
        return (last.forward.units, last.backward.units)
    return (last.units,)


def inspect_run(run, text: str) -> Inspection:
    """A trained classifier (a `rnnlab.checkpoint.Run`) on one text: a_t from `run.trace`, and y_t, the
    class probabilities the model gives for the text read up to token t (y_T is its prediction)."""
    tokens, a, y = run.trace(text)
    model = run.model
    last = model.rnn.layers[-1]
    dirs = (last.forward.units, last.backward.units) if isinstance(last, Bidirectional) else (last.units,)
    maxlen = getattr(run, "maxlen", None)
    notes = [
        f"T = {len(tokens)} tokens, the text's own length"
        + (f"; batches pad texts to {maxlen} steps, which are never read, so none are drawn" if maxlen else "")
    ]
    if len(dirs) == 2:
        notes.append("the backward rows of column t have read the text from its last token back to token t")
        y_label = ("y_t: the label probabilities from columns 1..t, whose backward rows have each read the text "
                   "from its end: only the last column is the prediction")
    else:
        y_label = "y_t: the label probabilities after reading tokens 1..t (the last column is the prediction)"
    return Inspection(
        np.asarray(a).T,
        list(tokens),
        np.asarray(y),
        tuple(run.labels),
        dirs,
        title=f"{getattr(run, 'task', '')}".strip(),
        notes=notes,
        y_label=y_label,
    )


def inspect_sequence(model, data, words: list[str]) -> Inspection:
    """An Elman many-to-many model (`rnnlab.experiments.SequenceModel`) on a stream of `words` from
    `data`'s vocabulary; y_t is the model's distribution of the next element after step t."""
    vocab = {w: i for i, w in enumerate(data.vocab)}
    unknown = [w for w in words if w not in vocab]
    if unknown:
        raise ValueError(f"not in {data.name}'s vocabulary: {', '.join(unknown)}; use: {' '.join(data.vocab)}")
    if not words:
        raise ValueError("nothing to inspect: give at least one word")
    T = len(words)
    # the encoding of each word as the dataset stores it (inputs row of its first occurrence)
    stream = np.concatenate([data.inputs[0], data.targets[0, -1:]])
    first = {}
    for i, tok in enumerate(data.tokens):
        first.setdefault(tok, i)
    x = jnp.asarray(np.stack([stream[first[w]] for w in words]))
    ins = inspect_layer(model.layer, x, list(words))
    logits = model.readout(jnp.asarray(ins.a.T))
    ins.y = np.asarray(model.probabilities(logits))
    ins.outputs = tuple(data.vocab) if data.output == "softmax" else tuple(data.features)
    if data.output == "sigmoid":
        # y_t is a code of independent bits: name the symbol whose code is nearest
        codes = np.stack([stream[first[s]] for s in data.vocab if s in first])
        symbols = [s for s in data.vocab if s in first]
        nearest = np.argmin(((ins.y[:, None, :] - codes[None]) ** 2).sum(-1), axis=1)
        ins.predicted = [symbols[i] for i in nearest]
    ins.title = data.name
    ins.notes = [f"T = {T} steps, one per token; the same p = {ins.p} units at every step"]
    return ins


# ------------------------------------------------------------------------------------------ rendering

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
