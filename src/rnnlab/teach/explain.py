"""What a recurrent model is made of, read off its own arrays: units p and timesteps T made visible.

    a_t = f_a(W_a x_t + U_a a_{t-1} + b_a)        y_t = f_y(W_y a_t + b_y)

`explain(model, timesteps=T, batch=B)` returns an `Explanation`: every parameter with its shape and count
(none of which involves T), the equations with the concrete shapes filled in, the FLOPs and activation
memory per step, per sequence (x T) and per batch (x B), what must run in order; and the answers to
the common misreadings, shown by running the model: the state's shape at every step, all p units updated
at each of the T steps, and the same weights running T=20 and T=2000 (`state_per_step`,
`same_weights_any_T`).

`build(cell, features=k, units=p, outputs=q)` makes a model to explain without training one. How an
Explanation is drawn (the unrolled loop, the tables) is in `explain_views`, which imports this module.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import PRNGKeyArray

from rnnlab.cells import GRU, LSTM, Cell, MinCell, MinGRU, Readout, activation_name
from rnnlab.layers import Bidirectional, Recurrent
from rnnlab.linear_scan import depth as scan_depth
from rnnlab.models import SequenceModel, sequence_model

__all__ = [
    "BYTES_PER_FLOAT",
    "Explanation",
    "Parameter",
    "build",
    "cell_flops",
    "equations",
    "explain",
    "parameters",
    "same_weights_any_T",
    "state_per_step",
]

BYTES_PER_FLOAT = 4  # float32

# How an Explanation is drawn by Rich: set by `explain_views` when it is imported (rnnlab/__init__.py
# imports it), so that the drawing imports this module and this module never imports the drawing.
drawing = None


def __getattr__(name: str):
    if name == "Network":  # the model is models.SequenceModel, which takes the same (rnn, readout, every_step)
        warnings.warn("rnnlab.teach.explain.Network is deprecated: use rnnlab.models.SequenceModel (calling "
                      "it gives the logits; model.run(x) gives (logits, a, state_T))",
                      DeprecationWarning, stacklevel=2)
        return SequenceModel
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def build(
    cell: str = "elman",
    *,
    features: int,
    units: int,
    outputs: int = 0,
    layers: int = 1,
    bidirectional: bool = False,
    every_step: bool = False,
    activation: str = "tanh",
    key: PRNGKeyArray | None = None,
) -> SequenceModel:
    """A `models.SequenceModel` of `layers` recurrent layers (k features in, p units each) and a readout of
    q outputs (none when outputs=0). Raises ValueError, with the reason, for sizes that cannot be built."""
    for name, value in (("features", features), ("units", units), ("layers", layers)):
        if value < 1:
            raise ValueError(f"{name} must be at least 1; got {value}")
    if outputs < 0:
        raise ValueError(f"outputs must be 0 (no readout) or more; got {outputs}")
    return sequence_model(cell, features, units, outputs, layers=layers, bidirectional=bidirectional,
                          activation=activation, every_step=every_step, key=jax.random.key(0) if key is None else key)


@dataclass(frozen=True)
class Parameter:
    """One array of the model: its path in the model, shape and number of entries."""

    name: str
    shape: tuple[int, ...]
    count: int
    role: str


def _path_name(path) -> str:
    parts = []
    for p in path:
        if isinstance(p, jax.tree_util.GetAttrKey):
            parts.append(("." if parts else "") + p.name)
        elif isinstance(p, jax.tree_util.SequenceKey):
            parts.append(f"[{p.idx}]")
        elif isinstance(p, jax.tree_util.DictKey):
            parts.append(f"[{p.key!r}]")
        else:
            parts.append(str(p))
    return "".join(parts) or "(array)"


_ROLES = {
    "W_a": "multiplies x_t, at every step",
    "U_a": "multiplies a_{t-1}, at every step",
    "b_a": "added at every step",
    "c_n": "GRU: added to U_n a_{t-1} inside the reset",
    "a_0": "the learned initial state",
    "W_y": "multiplies a_t, to give y_t",
    "b_y": "added to give y_t",
    "E": "embedding: the row x_t of each token",
}


def parameters(model) -> list[Parameter]:
    """Every floating-point array in `model`, in the model's own order, with its path, shape and count."""
    leaves = jax.tree_util.tree_flatten_with_path(eqx.filter(model, eqx.is_inexact_array))[0]
    out = []
    for path, leaf in leaves:
        name = _path_name(path)
        last = name.rsplit(".", 1)[-1]
        out.append(Parameter(name, tuple(leaf.shape), int(np.prod(leaf.shape, dtype=np.int64)), _ROLES.get(last, "")))
    return out


def _cells(model) -> list[Cell]:
    is_cell = lambda x: isinstance(x, Cell)  # noqa: E731
    return [x for x in jax.tree_util.tree_leaves(model, is_leaf=is_cell) if is_cell(x)]


def _readouts(model) -> list[Readout]:
    is_r = lambda x: isinstance(x, Readout)  # noqa: E731
    return [x for x in jax.tree_util.tree_leaves(model, is_leaf=is_r) if is_r(x)]


def cell_flops(cell: Cell) -> int:
    """Forward FLOPs of one step of `cell`: 2 per multiply-add of W_a x_t and U_a a_{t-1}, 1 per
    elementwise add, multiply or nonlinearity. G·p·(2k + 2p) for the matmuls plus:

        Elman  3p   (+ b_a, + U_a a, f_a)
        GRU    15p  (reset after the matmul; 14p before)      LSTM  17p

    Min cells have no U_a: G·p·2k for W_a x_t, plus MinGRU 7p (+ b_a, σ(u), σ(-u), z ⊙ ã, α ⊙ a + β),
    MinLSTM 11p (+ b_a, two softplus, their difference, σ(d), σ(-d), i' ⊙ ã, α ⊙ a + β).
    """
    G, p, k = cell.gates, cell.units, cell.features
    if isinstance(cell, MinCell):
        return G * p * 2 * k + (7 if isinstance(cell, MinGRU) else 11) * p
    matmuls = G * p * (2 * k + 2 * p)
    if isinstance(cell, LSTM):
        elementwise = 17 * p
    elif isinstance(cell, GRU):
        elementwise = 15 * p if cell.reset_after else 14 * p
    else:
        elementwise = 3 * p
    return matmuls + elementwise


def readout_flops(readout: Readout) -> int:
    """Forward FLOPs of one y_t = f_y(W_y a_t + b_y): 2qp + q, and q more for a non-identity f_y."""
    q, p = readout.W_y.shape
    return 2 * q * p + q + (0 if activation_name(readout.activation) == "identity" else q)


def in_order(cells: list[Cell], T: int) -> dict:
    """What must wait for a_{t-1}, per sequence of T steps, summed over the layers' cells.

    recurrent_flops: FLOPs of the products with a_{t-1} (U_a a_{t-1}: G·p·2p per step; 0 in min cells).
    sequential_steps: steps of the loop as written (T). scan_levels: ⌈log₂ T⌉ levels of the associative
    scan, where every layer is a min cell (its steps compose: a_t = α_t ⊙ a_{t-1} + β_t); else None.
    """
    matmul = sum(0 if isinstance(c, MinCell) else c.gates * c.units * 2 * c.units for c in cells)
    linear = all(isinstance(c, MinCell) for c in cells)
    return {"recurrent_flops": matmul * T, "sequential_steps": T, "scan_levels": scan_depth(T) if linear else None}


def _state_floats(cell: Cell) -> int:
    """Floats kept per step for the backward pass: wx_t = W_a x_t + b_a (G·p) and the state (p, or 2p)."""
    return cell.gates * cell.units + (2 if isinstance(cell, LSTM) else 1) * cell.units


@dataclass
class Explanation:
    """Everything `explain` found. Counts in entries; FLOPs forward only; memory in bytes (float32).

    flops["step"|"sequence"|"batch"]: one step of every layer (and y_t when every_step), x T, x B.
    memory["parameters"]: the weights (independent of T and B); memory["step"|"sequence"|"batch"]: the
    activations kept for backpropagation through time.
    """

    model: object
    cells: list[Cell]
    readouts: list[Readout]
    params: list[Parameter]
    T: int
    B: int
    every_step: bool
    flops: dict[str, int]
    memory: dict[str, int]
    equations: list[str] = field(default_factory=list)
    time: dict = field(default_factory=dict)  # `in_order`: what waits for a_{t-1}

    @property
    def total(self) -> int:
        """The number of parameters: the sum of the sizes of the model's arrays."""
        return sum(p.count for p in self.params)

    @property
    def k(self) -> int:
        return self.cells[0].features

    @property
    def p(self) -> int:
        return self.cells[-1].units

    def at(self, T: int, B: int | None = None) -> Explanation:
        """The same model explained for T timesteps (and B sequences): only FLOPs and activations change."""
        return explain(self.model, timesteps=T, batch=self.B if B is None else B, every_step=self.every_step)

    def to_dict(self) -> dict:
        return {
            "cells": [{"kind": c.kind, "k": c.features, "p": c.units, "gates": c.gates} for c in self.cells],
            "parameters": [{"name": p.name, "shape": list(p.shape), "count": p.count} for p in self.params],
            "total": self.total,
            "T": self.T,
            "B": self.B,
            "every_step": self.every_step,
            "flops": self.flops,
            "memory_bytes": self.memory,
            "equations": self.equations,
            "in_order": self.time,
        }

    def __rich_console__(self, console, options):
        if drawing is None:  # only where rnnlab.teach.explain_views was never imported
            yield repr(self)
            return
        yield from drawing(self, options.max_width)


def explain(model, *, timesteps: int = 20, batch: int = 1, every_step: bool | None = None) -> Explanation:
    """Explain `model` (a Cell, Recurrent, Bidirectional, Stack, SequenceModel, TextClassifier, or any
    Equinox module holding cells) for sequences of T = `timesteps` steps in batches of B = `batch`.

    every_step: whether a readout runs at every step (default: the model's own `every_step`, else False).
    """
    if timesteps < 1:
        raise ValueError(f"timesteps T must be at least 1; got {timesteps}")
    if batch < 1:
        raise ValueError(f"batch B must be at least 1; got {batch}")
    cells = _cells(model)
    if not cells:
        raise ValueError(
            f"{type(model).__name__} holds no recurrent cell (Elman, GRU, LSTM, MinGRU, MinLSTM) to explain")
    readouts = _readouts(model)
    if every_step is None:
        every_step = bool(getattr(model, "every_step", False))
    step = sum(cell_flops(c) for c in cells)
    out_flops = sum(readout_flops(r) for r in readouts)
    seq = step * timesteps + out_flops * (timesteps if every_step else 1)
    if every_step:
        step += out_flops
    params = parameters(model)
    act_step = sum(_state_floats(c) for c in cells) * BYTES_PER_FLOAT
    act_step += sum(r.W_y.shape[0] for r in readouts) * BYTES_PER_FLOAT if every_step else 0
    act_seq = act_step * timesteps + (0 if every_step else sum(r.W_y.shape[0] for r in readouts) * BYTES_PER_FLOAT)
    ex = Explanation(
        model=model,
        cells=cells,
        readouts=readouts,
        params=params,
        T=timesteps,
        B=batch,
        every_step=every_step,
        flops={"step": step, "sequence": seq, "batch": seq * batch},
        memory={
            "parameters": sum(p.count for p in params) * BYTES_PER_FLOAT,
            "step": act_step,
            "sequence": act_seq,
            "batch": act_seq * batch,
        },
    )
    ex.equations = equations(ex)
    ex.time = in_order(cells, timesteps)
    return ex


# -------------------------------------------------------------------------------------------- equations


def _m(a) -> str:
    return "×".join(str(d) for d in a.shape)


def equations(ex: Explanation) -> list[str]:
    """The equations of the first layer's cell (and the readout) with the concrete shapes written in."""
    cell = ex.cells[0]
    p, k = cell.units, cell.features
    v = f"({p},)"
    if isinstance(cell, MinCell):
        lines = [f"{g}_t {v} = σ(W_{g} [{_m(cell.gate(g)[0])}] x_t ({k},) + b_{g} {v})" for g in cell.gate_names[:-1]]
        lines.append(f"ã_t {v} = W_h [{_m(cell.gate('h')[0])}] x_t ({k},) + b_h {v}")
        if isinstance(cell, MinGRU):
            lines.append(f"a_t {v} = (1 - z_t) ⊙ a_{{t-1}} + z_t ⊙ ã_t")
        else:
            lines += [f"f'_t, i'_t {v} = f_t / (f_t + i_t), i_t / (f_t + i_t)",
                      f"a_t {v} = f'_t ⊙ a_{{t-1}} + i'_t ⊙ ã_t"]
        lines.append("no U_a: the gates read x_t alone, so a_t = α_t ⊙ a_{t-1} + β_t and the T steps compose")
    elif isinstance(cell, LSTM):
        lines = []
        for g, f in zip(cell.gate_names, ("σ", "σ", "tanh", "σ"), strict=False):
            W, U, _ = cell.gate(g)
            lines.append(f"{g}_t {v} = {f}(W_{g} [{_m(W)}] x_t ({k},) + U_{g} [{_m(U)}] a_{{t-1}} {v} + b_{g} {v})")
        lines += [f"c_t {v} = f_t ⊙ c_{{t-1}} + i_t ⊙ g_t", f"a_t {v} = o_t ⊙ tanh(c_t)"]
    elif isinstance(cell, GRU):
        lines = []
        for g in ("r", "z"):
            W, U, _ = cell.gate(g)
            lines.append(f"{g}_t {v} = σ(W_{g} [{_m(W)}] x_t ({k},) + U_{g} [{_m(U)}] a_{{t-1}} {v} + b_{g} {v})")
        W, U, _b = cell.gate("n")
        if cell.reset_after:
            lines.append(f"n_t {v} = tanh(W_n [{_m(W)}] x_t ({k},) + r_t ⊙ (U_n [{_m(U)}] a_{{t-1}} + c_n {v}) + b_n)")
        else:
            lines.append(f"n_t {v} = tanh(W_n [{_m(W)}] x_t ({k},) + U_n [{_m(U)}] (r_t ⊙ a_{{t-1}}) + b_n {v})")
        lines.append(f"a_t {v} = (1 - z_t) ⊙ n_t + z_t ⊙ a_{{t-1}}")
    else:
        f = activation_name(cell.activation)
        lines = [f"a_t {v} = {f}(W_a [{_m(cell.W_a)}] x_t ({k},) + U_a [{_m(cell.U_a)}] a_{{t-1}} {v} + b_a {v})"]
    for r in ex.readouts:
        q = r.W_y.shape[0]
        f = activation_name(r.activation)
        which = "for every t = 1..T" if ex.every_step else "at t = T only"
        lines.append(f"y_t ({q},) = {f}(W_y [{_m(r.W_y)}] a_t ({r.W_y.shape[1]},) + b_y ({q},))      {which}")
    lines += _more_cells(ex)
    return lines


def _more_cells(ex: Explanation) -> list[str]:
    """What the equations above leave out: the backward direction, the layers above the first."""
    is_layer = lambda x: isinstance(x, Recurrent | Bidirectional)  # noqa: E731
    layers = [x for x in jax.tree_util.tree_leaves(ex.model, is_leaf=is_layer) if is_layer(x)]
    if sum(2 if isinstance(x, Bidirectional) else 1 for x in layers) != len(ex.cells):
        more = len(ex.cells) - 1
        return [f"... and {more} more cell(s) of the same form, each with its own weights"] if more else []
    lines, p = [], ex.cells[0].units
    if layers and isinstance(layers[0], Bidirectional):
        lines.append(f"... and the backward direction: a second {ex.cells[0].kind} cell of the same shapes, its own "
                     f"weights, reads x_T first and x_1 last; a_t ({2 * p},) = [forward a_t; backward a_t]")
    if len(layers) > 1:
        lines.append(f"... and {len(layers) - 1} more layer(s) of the same form: each layer's x_t is the a_t of "
                     "the layer below")
    return lines


# ---------------------------------------------------------------------------------------- the misreadings


@dataclass(frozen=True)
class StepRow:
    """One step of the loop as run: the shapes read and written and how many of the p units changed."""

    t: int
    x_shape: tuple[int, ...]
    a_prev_shape: tuple[int, ...]
    a_shape: tuple[int, ...]
    changed: int
    units: int


def _layer(model) -> Recurrent:
    """The first (forward) recurrent layer of `model`, or a layer around a bare cell."""
    if isinstance(model, Cell):
        return Recurrent(model)
    if isinstance(model, Recurrent):
        return model
    is_layer = lambda x: isinstance(x, Recurrent | Bidirectional)  # noqa: E731
    for x in jax.tree_util.tree_leaves(model, is_leaf=is_layer):
        if isinstance(x, Bidirectional):
            return x.forward
        if isinstance(x, Recurrent):
            return x
    return Recurrent(_cells(model)[0])


def state_per_step(model, T: int, *, seed: int = 0) -> list[StepRow]:
    """Run the first layer of `model` T steps, calling `layer.step` once per step (inside one `lax.scan`),
    on random x_t, and record at each step the shapes of x_t, a_{t-1} and a_t and how many of the p units
    changed value."""
    layer = _layer(model)
    xs = jax.random.normal(jax.random.key(seed), (T, layer.features))

    def one_step(state, x_t):
        new = layer.step(state, x_t)
        a_prev, a = layer.cell.hidden(state), layer.cell.hidden(new)
        return new, (a_prev, a, jnp.sum(a != a_prev))

    _, (a_prev, a, changed) = jax.lax.scan(one_step, layer.initial_state(), xs)
    changed = np.asarray(changed)
    return [
        StepRow(t + 1, tuple(xs.shape[1:]), tuple(a_prev.shape[1:]), tuple(a.shape[1:]), int(changed[t]), layer.units)
        for t in range(T)
    ]


@dataclass(frozen=True)
class SameWeights:
    """One layer run on T_short and T_long steps: same arrays, same count, the short run is the long
    run's beginning (max_difference over the first T_short states)."""

    T_short: int
    T_long: int
    parameters: int
    parameters_short: int
    parameters_long: int
    a_short_shape: tuple[int, ...]
    a_long_shape: tuple[int, ...]
    max_difference: float


def same_weights_any_T(model, T_short: int = 20, T_long: int = 2000, *, seed: int = 0) -> SameWeights:
    """Run the first layer of `model`, unchanged, on a sequence of T_long steps and on its first T_short."""
    layer = _layer(model)
    x = jax.random.normal(jax.random.key(seed), (T_long, layer.features))
    a_long, _ = layer(x)
    a_short, _ = layer(x[:T_short])
    count = sum(p.count for p in parameters(layer))
    return SameWeights(
        T_short,
        T_long,
        count,
        explain(layer, timesteps=T_short).total,
        explain(layer, timesteps=T_long).total,
        tuple(a_short.shape),
        tuple(a_long.shape),
        float(jnp.max(jnp.abs(a_long[:T_short] - a_short))),
    )
