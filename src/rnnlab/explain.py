"""What a recurrent model is made of, read off its own arrays: units p and timesteps T made visible.

    a_t = f_a(W_a x_t + U_a a_{t-1} + b_a)        y_t = f_y(W_y a_t + b_y)

`explain(model, timesteps=T, batch=B)` returns an `Explanation`: every parameter with its shape and count
(none of which involves T), the equations with the concrete shapes filled in, the FLOPs and activation
memory per step, per sequence (x T) and per batch (x B), the unrolled loop (text and SVG), and the
answers to the common misreadings, shown by running the model: the state's shape at every step, all p
units updated at each of the T steps, and the same weights running T=20 and T=2000.

`build(cell, features=k, units=p, outputs=q)` makes a model to explain without training one.
"""

from __future__ import annotations

import html
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
    "explain",
    "same_weights_any_T",
    "state_per_step",
    "unrolled_svg",
    "unrolled_text",
]

BYTES_PER_FLOAT = 4  # float32


def __getattr__(name: str):
    if name == "Network":  # the model is models.SequenceModel, which takes the same (rnn, readout, every_step)
        warnings.warn("rnnlab.explain.Network is deprecated: use rnnlab.models.SequenceModel",
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
        yield from renderables(self, width=options.max_width)


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


# ------------------------------------------------------------------------------------------ the drawing


def _steps_drawn(T: int, most: int = 5) -> list[int | None]:
    """Which steps to draw: all of them up to `most`, else the first few, a gap (None), and the last."""
    if most >= T:
        return list(range(1, T + 1))
    return [*range(1, most - 1), None, T]


def unrolled_text(ex: Explanation, most: int = 5) -> str:
    """The loop unrolled over T steps as text: one box per step, every box the same cell."""
    cell = ex.cells[0]
    k, p = cell.features, cell.units
    q = ex.readouts[0].W_y.shape[0] if ex.readouts else None
    mid, centers = f"a_0 ({p}) ─▶", []
    for i, t in enumerate(_steps_drawn(ex.T, most)):
        if t is None:
            mid += " ··· ─▶"
            continue
        box = "[ cell ]"
        centers.append((len(mid) + 1 + len(box) // 2, t))
        mid += " " + box
        last = i == len(_steps_drawn(ex.T, most)) - 1
        mid += f" ─ a_{t} ({p})" + ("" if last else " ─▶")
    rows = [[" "] * (len(mid) + 12) for _ in range(7)]

    def put(row: int, center: int, text: str) -> None:
        start = max(0, center - len(text) // 2)
        for j, ch in enumerate(text):
            rows[row][start + j] = ch

    for c, t in centers:
        put(0, c, f"x_{t} ({k})")
        put(1, c, "│")
        put(2, c, "▼")
        if q is not None and (ex.every_step or t == ex.T):
            put(4, c, "│")
            put(5, c, "▼")
            put(6, c, f"y_{t} ({q})")
    lines = ["".join(r).rstrip() for r in rows[:3]] + [mid] + ["".join(r).rstrip() for r in rows[4:]]
    lines = [ln for ln in lines if ln] if q is None else lines
    shared = ", ".join(f"{n} [{_m(getattr(cell, n))}]" for n in ("W_a", "U_a", "b_a") if getattr(cell, n) is not None)
    lines.append(
        f"every [ cell ] is the same cell with the same {shared}: "
        f"T={ex.T} step{'s' if ex.T > 1 else ''}, p={p} units each"
    )
    return "\n".join(lines)


def _steps_that_fit(ex: Explanation, width: int | None, most: int = 5) -> int:
    """The most steps (3 to `most`) whose drawing fits `width` columns inside a panel's border."""
    for n in range(most, 3, -1):
        drawing = unrolled_text(ex, n).splitlines()[:-1]          # the last line is prose: it may wrap
        if width is None or max(map(len, drawing)) <= width - 4:
            return n
    return 3


def unrolled_svg(ex: Explanation, most: int = 5) -> str:
    """The unrolled loop as an SVG document (the same picture as `unrolled_text`)."""
    cell = ex.cells[0]
    k, p = cell.features, cell.units
    q = ex.readouts[0].W_y.shape[0] if ex.readouts else None
    steps = _steps_drawn(ex.T, most)
    bw, bh, gap, x0, y0 = 90, 50, 80, 110, 70
    width = max(760, x0 + len(steps) * (bw + gap) + 60)
    height = 260
    e = html.escape
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="13">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
        'orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#333"/></marker></defs>',
        '<rect width="100%" height="100%" fill="white"/>',
        f'<text x="10" y="{y0 + bh / 2 + 4}">a_0 ({p})</text>',
    ]
    cy = y0 + bh / 2
    prev_x = 75
    for i, t in enumerate(steps):
        bx = x0 + i * (bw + gap)
        cx = bx + bw / 2
        if t is None:
            out.append(f'<text x="{cx - 10}" y="{cy + 5}" font-size="20">···</text>')
            out.append(f'<line x1="{prev_x}" y1="{cy}" x2="{bx + 5}" y2="{cy}" stroke="#333" stroke-dasharray="4 3"/>')
            prev_x = bx + bw - 5
            continue
        out.append(f'<line x1="{prev_x}" y1="{cy}" x2="{bx}" y2="{cy}" stroke="#333" marker-end="url(#arrow)"/>')
        if i > 0 and steps[i - 1] is not None:
            out.append(f'<text x="{prev_x + 8}" y="{cy - 8}" fill="#1f4e9c">a_{t - 1} ({p})</text>')
        out.append(f'<rect x="{bx}" y="{y0}" width="{bw}" height="{bh}" rx="6" fill="#e8f0fb" stroke="#1f4e9c"/>')
        out.append(f'<text x="{cx}" y="{cy + 5}" text-anchor="middle">cell</text>')
        out.append(f'<text x="{cx}" y="{y0 - 45}" text-anchor="middle">x_{t} ({k})</text>')
        out.append(f'<line x1="{cx}" y1="{y0 - 38}" x2="{cx}" y2="{y0}" stroke="#333" marker-end="url(#arrow)"/>')
        if q is not None and (ex.every_step or t == ex.T):
            out.append(
                f'<line x1="{cx}" y1="{y0 + bh}" x2="{cx}" y2="{y0 + bh + 40}" stroke="#333" marker-end="url(#arrow)"/>'
            )
            out.append(f'<text x="{cx}" y="{y0 + bh + 58}" text-anchor="middle">y_{t} ({q})</text>')
        prev_x = bx + bw
    T = ex.T
    out.append(f'<line x1="{prev_x}" y1="{cy}" x2="{prev_x + 40}" y2="{cy}" stroke="#333" marker-end="url(#arrow)"/>')
    out.append(f'<text x="{prev_x + 4}" y="{cy - 8}" fill="#1f4e9c">a_{T} ({p})</text>')
    shared = ", ".join(f"{n} [{_m(getattr(cell, n))}]" for n in ("W_a", "U_a", "b_a") if getattr(cell, n) is not None)
    out.append(
        f'<text x="10" y="{height - 20}">{e(f"Every box is the same cell, the same {shared}: ")}'
        f"{e(f'T={T} timesteps, p={p} units at each.')}</text>"
    )
    out.append("</svg>")
    return "\n".join(out)


# ------------------------------------------------------------------------------------------- rendering


def _human(n: float | int, unit: str = "") -> str:
    for scale, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= 0.9995 * scale:  # 999.6 M reads "1 G", not "1e+03 M"
            return f"{n / scale:.3g} {suffix}{unit}"
    return f"{n:.0f} {unit}".rstrip()


def _bytes(n: float | int) -> str:
    for scale, suffix in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if n >= scale:
            return f"{n / scale:.3g} {suffix}"
    return f"{n:.0f} B"


def renderables(ex: Explanation, *, misreadings: bool = True, drawing: bool = True, max_rows: int = 20,
                width: int | None = None):
    """The explanation as Rich renderables, in reading order; the drawing fits `width` columns (the fewer
    steps drawn, the narrower: the steps left out stand as ···)."""
    from rich.panel import Panel
    from rich.rule import Rule
    from rich.table import Table
    from rich.text import Text

    cell = ex.cells[0]
    k, p, T, B = cell.features, cell.units, ex.T, ex.B
    kinds = ", ".join(sorted({c.kind for c in ex.cells}))
    yield Rule(f"[bold]{kinds}: k={k} features, p={p} units, T={T} timesteps, B={B} sequence{'s' if B > 1 else ''}")
    yield Panel(Text("\n".join(ex.equations)), title="the equations, shapes filled in", expand=False)  # no markup

    table = Table(title="parameters: the model's arrays", title_justify="left")
    table.add_column("array", overflow="fold")  # folded, never cut: the name says which array it is
    table.add_column("shape", justify="right")
    table.add_column("count", justify="right")
    table.add_column("what it is")
    for prm in ex.params:
        table.add_row(prm.name, "×".join(map(str, prm.shape)), f"{prm.count:,}", prm.role)
    table.add_section()
    alike = ", ".join(f"T={t}" for t in sorted({1, 20, T, 2000}))
    table.add_row("[bold]total", "", f"[bold]{ex.total:,}", f"for {alike} alike: no shape mentions T")
    yield table

    costs = Table(title="cost: forward FLOPs and activation memory (float32)", title_justify="left")
    costs.add_column("")
    costs.add_column("per step", justify="right")
    costs.add_column(f"per sequence (× T={T})", justify="right")
    costs.add_column(f"per batch (× B={B})", justify="right")
    costs.add_row("FLOPs", _human(ex.flops["step"]), _human(ex.flops["sequence"]), _human(ex.flops["batch"]))
    costs.add_row(
        "activations kept for backprop",
        _bytes(ex.memory["step"]),
        _bytes(ex.memory["sequence"]),
        _bytes(ex.memory["batch"]),
    )
    costs.add_row(
        "parameters",
        _bytes(ex.memory["parameters"]),
        _bytes(ex.memory["parameters"]),
        _bytes(ex.memory["parameters"]),
    )
    yield costs

    grow = Table(title="what grows with T and what grows with p", title_justify="left")
    for col in ("T", "p", "parameters", "FLOPs / sequence", "activations / sequence"):
        grow.add_column(col, justify="right")
    for t_ in sorted({20, T, 2000}):
        e2 = ex.at(t_)
        grow.add_row(str(t_), str(p), f"{e2.total:,}", _human(e2.flops["sequence"]), _bytes(e2.memory["sequence"]))
    if isinstance(ex.model, SequenceModel | Cell | Recurrent):
        doubled = explain(_resized(ex, 2 * p), timesteps=T, every_step=ex.every_step)
        grow.add_row(
            str(T),
            str(2 * p),
            f"{doubled.total:,}",
            _human(doubled.flops["sequence"]),
            _bytes(doubled.memory["sequence"]),
        )
    yield grow
    doubling = ("Doubling p doubles W_a (G·p×k) and b_a: a min cell has no U_a, so no p×p term"
                if isinstance(cell, MinCell) else "Doubling p doubles W_a (p×k) and quadruples U_a (p×p)")
    yield Text(
        f"T multiplies the work and the activations, never the parameters. {doubling}, whatever T is.",
        style="italic",
    )
    yield _in_order_table(ex)

    if drawing:
        yield Panel(unrolled_text(ex, most=_steps_that_fit(ex, width)), title="the loop, unrolled", expand=False)
    if misreadings:
        yield from _misreadings(ex, max_rows)


def _in_order_table(ex: Explanation):
    """The time a sequence needs: what waits for a_{t-1}, and how many steps must run one after another."""
    from rich.table import Table

    t = ex.time
    table = Table(title=f"what must wait for a_{{t-1}}, per sequence of T={ex.T}", title_justify="left")
    table.add_column("")
    table.add_column("this model", justify="right")
    table.add_column("what it means")
    table.add_row("FLOPs in products with a_{t-1}", _human(t["recurrent_flops"]),
                  "U_a a_{t-1} at every step" if t["recurrent_flops"] else "none: the gates read x_t alone")
    table.add_row("other FLOPs", _human(ex.flops["sequence"] - t["recurrent_flops"]),
                  "W_a x_t + b_a (all T steps in one matmul), elementwise")
    table.add_row("steps in order, as a loop", f"{t['sequential_steps']:,}", "T")
    levels = t["scan_levels"]
    table.add_row("levels of a parallel scan", "—" if levels is None else f"{levels:,}",
                  "a_t depends on a_{t-1} through U_a and a nonlinearity: T in order" if levels is None
                  else "⌈log₂ T⌉: the steps (α_t, β_t) compose associatively")
    return table


def _resized(ex: Explanation, units: int):
    """The same architecture with p = `units` (for the growth table)."""
    model = ex.model
    cell = ex.cells[0]
    if isinstance(model, SequenceModel):
        return sequence_model(cell.kind, cell.features, units, model.q, model.output, layers=len(model.rnn.layers),
                              bidirectional=isinstance(model.rnn.layers[0], Bidirectional),
                              every_step=model.every_step, key=jax.random.key(0))
    return build(cell.kind, features=cell.features, units=units).rnn


def _misreadings(ex: Explanation, max_rows: int):
    from rich.table import Table
    from rich.text import Text

    cell = ex.cells[0]
    k, p, T = cell.features, cell.units, ex.T
    shown = min(T, 2000)
    rows = state_per_step(ex.model, shown)
    run_for = f"{T} steps" if shown == T else f"the first {shown} of {T} steps"
    table = Table(title=f"the loop as it runs: {run_for}, each one updating all p={p} units", title_justify="left")
    for col in ("t", "reads x_t", "and a_{t-1}", "writes a_t", "units changed"):
        table.add_column(col, justify="right")
    pick = rows if len(rows) <= max_rows else [*rows[: max_rows - 2], None, *rows[-1:]]
    for r in pick:
        if r is None:
            table.add_row("…", "", "", "", "")
            continue
        table.add_row(str(r.t), str(r.x_shape), str(r.a_prev_shape), str(r.a_shape), f"{r.changed} of {r.units}")
    yield table
    every = all(r.changed == r.units for r in rows)
    if p < T:
        wrong = f"T={T} words into p={p} units is not {-(-T // p)} pieces of {p} words"
    elif p > T:
        wrong = f'p={p} units with T={T} words is not "{T} units used, then the next sequence"'
    else:
        wrong = f"p={p} units for T={T} words is not one unit per word"
    lines = [
        f"• {wrong}: there are {T} steps, each reads one whole x_t ({k} features) into the same {p} units"
        + (", and all of them changed at every step." if every else "."),
        f"• the state a_t has shape ({p},) at every one of the {T} steps: p is the size of the state, T the "
        f"number of times the loop runs; the two are independent.",
    ]
    same = same_weights_any_T(ex.model, 20, 2000)
    lines.append(
        f"• the same weights run T={same.T_short} and T={same.T_long}: the layer has "
        f"{same.parameters_short:,} parameters for both, states {same.a_short_shape} and "
        f"{same.a_long_shape}, "
        f"and the first {same.T_short} states of the long run equal the short run's "
        f"(largest difference {same.max_difference:.1e})."
    )
    yield Text("\n".join(lines))
