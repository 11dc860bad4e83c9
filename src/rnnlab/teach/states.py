"""The hidden states of one sequence, as a matrix: p rows (units) × T columns (timesteps).

    a_t = f_a(W_a x_t + U_a a_{t-1} + b_a)   for t = 1..T: column t of the matrix is a_t

Every column has the same p rows, whatever T is: that is the picture of "units" and "timesteps" being
two different axes. Only the sequence's own T tokens are shown: a text padded to a batch's length is
run for its real length, and the padding's columns do not exist (they are never read).

    inspect_layer(layer, x, tokens)      any Recurrent layer or Stack: states from x (T, k)
    inspect_run(run, "text")             a trained text classifier (`rnnlab train`): y_t = label after t tokens
    inspect_sequence(model, data, words) an Elman many-to-many model: y_t = the next word it expects

How an Inspection is drawn (the heatmap, the terminal's table) is in `states_views`, which imports this module.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from rnnlab.layers import Bidirectional, Recurrent, Stack

__all__ = ["Inspection", "inspect_layer", "inspect_run", "inspect_sequence"]


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
    """A trained classifier (a `rnnlab.inference.Run`) on one text: a_t from `run.trace`, and y_t, the
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
    """An Elman many-to-many model (`rnnlab.models.SequenceModel`) on a stream of `words` from
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
