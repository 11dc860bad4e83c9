"""A cell run over time: for t in 1..T, a_t = cell(x_t, a_{t-1}), with `lax.scan`.

The same cell (the same W_a, U_a, b_a) serves every one of the T steps, so a layer built for sequences of
20 words runs unchanged on 2 or 2000: p (units) and T (timesteps) are independent.

    layer = rnnlab.Recurrent(rnnlab.Elman(features=k, units=p, key=key))
    a, a_T = layer(x)                       # x: (T, k) -> a: (T, p), a_T: (p,)
    a, a_T = layer(x, lengths)              # x: (B, T, k), lengths: (B,) -> a: (B, T, p), a_T: (B, p)

`Recurrent` is one direction, `Bidirectional` two, `Stack` several layers with dropout between them, and
`RNN(...)` builds a stack the way `torch.nn.RNN/GRU/LSTM` are built.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int, PRNGKeyArray, PyTree

from rnnlab import _checks, fast
from rnnlab.cells import Activation, Arrayish, Cell, MinCell, make_cell
from rnnlab.linear_scan import linear_scan
from rnnlab.padding import reverse_within


def scan(
    cell: Cell, wx: Float[Array, "T Gp"], state_0: PyTree, length: Int[Array, ""] | None = None
) -> tuple[Float[Array, "T p"], PyTree]:
    """The loop itself: state_t = cell.recur(wx_t, state_{t-1}) for t = 1..T, wx = W_a x + b_a precomputed.

    With `length` L, steps t > L leave the state as it was and output zeros, so a padded sequence ends in
    exactly the state it has when run alone, unpadded. Returns (a_1..a_T, state_T).
    """
    final, a = _steps(cell, wx, jnp.arange(wx.shape[0]), state_0, length)
    return a, final


def scan_in_pieces(
    cell: Cell, x: Float[Array, "T k"], state_0: PyTree, length: Int[Array, ""] | None, chunk: int
) -> tuple[Float[Array, "T p"], PyTree]:
    """`scan` for long sequences: ⌈T/C⌉ pieces of C = `chunk` steps, each (its projection W_a x + b_a too)
    under `jax.checkpoint`. The backward pass keeps x and one state per piece and recomputes the rest, so
    what it keeps grows with T·k + (T/C)·p instead of T·G·p and more (C near sqrt(T) keeps the least).
    Where C does not divide T, x is padded to whole pieces with steps past the end (as after `length`).
    """
    T = x.shape[0]
    n = -(-T // chunk)
    if n * chunk > T:
        x = jnp.pad(x, ((0, n * chunk - T), (0, 0)))
        length = jnp.asarray(T) if length is None else length

    @jax.checkpoint
    def piece(state, inputs):
        x_c, t_c = inputs
        return _steps(cell, cell.project(x_c), t_c, state, length)

    final, a = jax.lax.scan(piece, state_0, (x.reshape(n, chunk, -1), jnp.arange(n * chunk).reshape(n, chunk)))
    return a.reshape(n * chunk, -1)[:T], final


def _steps(cell: Cell, wx, t, state_0, length):
    """(state_T, a_1..a_T) of `scan` over the steps t of wx."""
    if isinstance(cell, MinCell):
        return _linear_steps(cell, wx, t, state_0, length)

    def step(state, inputs):
        wx_t, t = inputs
        new = cell.recur(wx_t, state)
        if length is not None:
            valid = t < length
            new = jax.tree.map(lambda n, o: jnp.where(valid, n, o), new, state)
            return new, jnp.where(valid, cell.hidden(new), 0.0)
        return new, cell.hidden(new)

    return jax.lax.scan(step, state_0, (wx, t))


# A min cell's layer runs in pieces of this many steps (under `jax.checkpoint`) unless given `chunk`: its
# per-step work is elementwise, so the time goes to moving (T, G·p) arrays, which pieces keep in cache.
MIN_PIECE = 32


def _linear_steps(cell: MinCell, wx, t, state_0, length):
    """`_steps` for a min cell: (α_t, β_t) for every t at once, then a_t = α_t ⊙ a_{t-1} + β_t by the cell's
    scan (`linear_scan`). Past `length`, α = 1 and β = 0 carry the state unchanged and a_t is output as 0."""
    alpha, beta = cell.coefficients(wx)
    if length is not None:
        valid = (t < length)[:, None]
        alpha, beta = jnp.where(valid, alpha, 1.0), jnp.where(valid, beta, 0.0)
    a = linear_scan(alpha, beta, state_0, cell.scan)
    return a[-1], (a if length is None else jnp.where(valid, a, 0.0))


class Recurrent(eqx.Module):
    """One recurrent layer: a cell run over T timesteps, forwards or (`reverse=True`) backwards.

    Call it on x of shape (T, k) or (B, T, k); it returns (a, state_T): a (T, p) or (B, T, p) holds a_t
    for every t (zeros after each sequence's end), state_T the final state (for an LSTM, the pair (a_T, c_T)).
    With `lengths` (B,) the padded batch gives, for every sequence, exactly what it gives alone unpadded.

    a_0 is zeros, or `a_0` given at call time ((p,) or (B, p)), or learned (`learn_a_0=True`); or the
    whole initial state is given as `state_0` (an LSTM's (a_0, c_0)), as truncated backpropagation through
    time passes one window's state_T to the next.
    `chunk=C` rematerialises for long sequences: ⌈T/C⌉ pieces of C steps (about √T holds the least), of
    which the backward keeps only each one's starting state and recomputes the rest: under `jax.checkpoint`
    on the scan (`scan_in_pieces`), inside the kernel on the fused path. A min cell (`MinGRU`, `MinLSTM`) runs
    in pieces of `MIN_PIECE` steps when no chunk is given.

    `engine` says where the loop runs: "auto" (the default) the fused CPU engine for a batch where it runs
    this cell (`rnnlab.fast`; RNNLAB_FAST=0 turns it off), else the scan; "scan" the `lax.scan` always;
    "fused" the engine always, a batch or one sequence, with a ValueError saying why where it cannot run.

    ```python
    layer = Recurrent(Elman(features=100, units=10, key=key))
    a, a_T = layer(jnp.ones((20, 100)))     # 20 timesteps, 10 units: a is (20, 10), a_T is (10,)
    ```
    """

    cell: Cell
    a_0: Float[Array, " p"] | None
    reverse: bool = eqx.field(static=True)
    chunk: int | None = eqx.field(static=True)
    engine: str = eqx.field(static=True)

    def __init__(self, cell: Cell, *, reverse: bool = False, learn_a_0: bool = False, chunk: int | None = None,
                 engine: str = "auto"):
        if chunk is not None and chunk < 1:
            raise ValueError(f"chunk must be >= 1 timesteps; got {chunk}")
        if engine not in fast.ENGINES:
            raise ValueError(f"engine must be one of {', '.join(fast.ENGINES)}; got {engine!r}")
        if engine == "fused" and (reason := fast.why_not(cell)) is not None:
            raise ValueError(f'engine="fused": {reason} (engine="auto" falls back to the scan)')
        self.cell = cell
        self.reverse = reverse
        self.a_0 = jnp.zeros(cell.units, cell.W_a.dtype) if learn_a_0 else None
        self.chunk = chunk
        self.engine = engine

    @property
    def features(self) -> int:
        return self.cell.features

    @property
    def units(self) -> int:
        return self.cell.units

    @property
    def output_size(self) -> int:
        return self.cell.units

    def initial_state(self, a_0: Float[Array, "..."] | None = None, batch: int | None = None) -> PyTree:
        """state_0 for one sequence, or for `batch` of them: from a_0, else the learned a_0, else zeros."""
        if a_0 is None:
            a_0 = self.a_0
        if a_0 is not None:
            _checks.check_vector(a_0, self.units, "a_0", () if batch is None else (batch,))
        if batch is None:
            return self.cell.initial_state(a_0)
        if a_0 is None or a_0.ndim == 1:
            return jax.vmap(lambda _: self.cell.initial_state(a_0))(jnp.arange(batch))
        return jax.vmap(self.cell.initial_state)(a_0)

    def check_state(self, state_0: PyTree, batch: int | None = None) -> PyTree:
        """state_0 as the loop takes it: the cell's state pytree (an LSTM's pair (a, c), else a), each part
        (p,) or (B, p), the (p,) ones repeated over the batch. Raises ShapeError in one line where it does
        not fit."""
        want = self.cell.initial_state()
        sizes = f"(p={self.units},)" + ("" if batch is None else f" or (B={batch}, p={self.units})")
        what = f"a pair (a, c), each of shape {sizes}" if isinstance(want, tuple) else f"a of shape {sizes}"

        if isinstance(state_0, list):
            state_0 = tuple(state_0)
        allowed = {(self.units,)} if batch is None else {(self.units,), (batch, self.units)}
        if (jax.tree.structure(state_0) != jax.tree.structure(want)
                or any(tuple(jnp.shape(leaf)) not in allowed for leaf in jax.tree.leaves(state_0))):
            got = jax.tree.map(lambda leaf: tuple(jnp.shape(leaf)), state_0)
            raise _checks.ShapeError(f"expected state_0 as {what} (the {self.cell.kind} cell's state); got {got}")
        state_0 = jax.tree.map(lambda leaf, w: jnp.asarray(leaf, w.dtype), state_0, want)
        if batch is None:
            return state_0
        return jax.tree.map(lambda leaf: jnp.broadcast_to(leaf, (batch, self.units)), state_0)

    def __call__(
        self,
        x: Float[Arrayish, "*B T k"],
        lengths: Int[Arrayish, "..."] | None = None,
        a_0: Float[Arrayish, "..."] | None = None,
        *,
        state_0: PyTree | None = None,
    ) -> tuple[Float[Array, "*B T p"], PyTree]:
        """(a, state_T) from x (T, k) or (B, T, k). The loop starts from `state_0` where given (the cell's
        whole state: an LSTM's (a_0, c_0); a state_T of an earlier call continues that call's sequences),
        else from a_0 (c_0 = 0), else from the learned a_0 or zeros."""
        _checks.check_sequence(x, self.features)
        if a_0 is not None and state_0 is not None:
            raise ValueError("give a_0 or state_0, not both: state_0 holds a_0 (and an LSTM's c_0)")
        if lengths is not None:
            _checks.check_lengths(lengths, tuple(x.shape))
            lengths = jnp.asarray(lengths)
        x = jnp.asarray(x)
        batch = x.shape[0] if x.ndim == 3 else None
        if state_0 is not None:
            state_0 = self.check_state(state_0, batch)
        else:
            state_0 = self.initial_state(None if a_0 is None else jnp.asarray(a_0), batch)
        if fast.uses_engine(self.engine, self.cell, x):  # the whole batch on the fused CPU engine
            if batch is None:  # one sequence as a batch of one
                a, final = fast.sequence(self.cell, x[None], None if lengths is None else lengths.reshape(1),
                                         jax.tree.map(lambda s: s[None], state_0), reverse=self.reverse,
                                         chunk=self.chunk)
                return a[0], jax.tree.map(lambda s: s[0], final)
            return fast.sequence(self.cell, x, lengths, state_0, reverse=self.reverse, chunk=self.chunk)
        if batch is None:
            return self._sequence(x, lengths, state_0)
        return jax.vmap(self._sequence, in_axes=(0, None if lengths is None else 0, 0))(x, lengths, state_0)

    def _sequence(
        self, x: Float[Array, "T k"], length: Int[Array, ""] | None, state_0: PyTree
    ) -> tuple[Float[Array, "T p"], PyTree]:
        if self.reverse:
            x = reverse_within(x, length)
        chunk = MIN_PIECE if self.chunk is None and isinstance(self.cell, MinCell) else self.chunk
        if chunk is not None and chunk < x.shape[0]:
            a, final = scan_in_pieces(self.cell, x, state_0, length, chunk)
        else:
            wx = self.cell.project(x)  # W_a x_t + b_a for all t: one matmul outside the loop
            a, final = scan(self.cell, wx, state_0, length)
        if self.reverse:
            a = reverse_within(a, length)
        return a, final

    def step(self, state: PyTree, x_t: Float[Arrayish, "..."]) -> PyTree:
        """One timestep for streaming: state_t from state_{t-1} and x_t (k,) or (B, k).

        Start from `layer.initial_state()` (or `initial_state(batch=B)`); `layer.cell.hidden(state)` is a_t.
        Repeated T times it gives what the scan gives (forward direction).
        """
        x_t = jnp.asarray(x_t)
        if x_t.shape[-1] != self.features or x_t.ndim not in (1, 2):
            raise _checks.ShapeError(
                f"expected x_t of shape (k={self.features},) or (B, k={self.features}); got {tuple(x_t.shape)}")
        if x_t.ndim == 1:
            return self.cell(x_t, state)
        return jax.vmap(self.cell)(x_t, state)


class Bidirectional(eqx.Module):
    """Two layers over the same sequence, one forwards and one backwards; a_t = [a_t^fwd; a_t^bwd] (2p,).

    The backward layer reads each sequence from its own last real step back to its first, never padding.
    Returns (a, (state_T^fwd, state_T^bwd)), a of shape (T, 2p) or (B, T, 2p).
    """

    forward: Recurrent
    backward: Recurrent

    def __init__(self, forward: Recurrent, backward: Recurrent):
        if forward.reverse or not backward.reverse:
            raise ValueError("Bidirectional needs forward.reverse=False and backward.reverse=True")
        if forward.features != backward.features:
            raise ValueError(f"both directions must read the same k; got {forward.features} and {backward.features}")
        self.forward = forward
        self.backward = backward

    @property
    def features(self) -> int:
        return self.forward.features

    @property
    def units(self) -> int:
        return self.forward.units

    @property
    def output_size(self) -> int:
        return self.forward.units + self.backward.units

    def __call__(
        self,
        x: Float[Arrayish, "*B T k"],
        lengths: Int[Arrayish, "..."] | None = None,
        a_0: tuple[Float[Arrayish, "*B p"] | None, Float[Arrayish, "*B p"] | None] | None = None,
        *,
        state_0: tuple[PyTree, PyTree] | None = None,
    ) -> tuple[Float[Array, "*B T D"], tuple[PyTree, PyTree]]:
        """a_0 or state_0: a pair (forward's, backward's), either part None for the default."""
        if a_0 is not None and state_0 is not None:
            raise ValueError("give a_0 or state_0, not both: state_0 holds a_0 (and an LSTM's c_0)")
        if state_0 is not None and (not isinstance(state_0, tuple | list) or len(state_0) != 2):
            raise ValueError("state_0 of a Bidirectional layer is a pair (forward's state_0, backward's)")
        a_0_fwd, a_0_bwd = (None, None) if a_0 is None else a_0
        s_0_fwd, s_0_bwd = (None, None) if state_0 is None else state_0
        a_fwd, final_fwd = self.forward(x, lengths, a_0_fwd, state_0=s_0_fwd)
        a_bwd, final_bwd = self.backward(x, lengths, a_0_bwd, state_0=s_0_bwd)
        return jnp.concatenate([a_fwd, a_bwd], axis=-1), (final_fwd, final_bwd)


Layer = Recurrent | Bidirectional


class Stack(eqx.Module):
    """Layers applied in turn, the outputs a_t of one being the inputs x_t of the next, with dropout
    between layers (not after the last) when a `key` is given. Returns (a of the last layer, [state_T per
    layer]).
    """

    layers: tuple[Layer, ...]
    dropout: float = eqx.field(static=True)

    def __init__(self, layers: Sequence[Layer], dropout: float = 0.0):
        if not layers:
            raise ValueError("a Stack needs at least one layer")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1); got {dropout}")
        for i in range(1, len(layers)):
            if layers[i].features != layers[i - 1].output_size:
                raise ValueError(
                    f"layer {i} reads k={layers[i].features} features but layer {i - 1} gives "
                    f"{layers[i - 1].output_size}")
        self.layers = tuple(layers)
        self.dropout = dropout

    @property
    def features(self) -> int:
        return self.layers[0].features

    @property
    def units(self) -> int:
        return self.layers[-1].units

    @property
    def output_size(self) -> int:
        return self.layers[-1].output_size

    def __call__(
        self,
        x: Float[Arrayish, "*B T k"],
        lengths: Int[Arrayish, "..."] | None = None,
        a_0: Sequence[PyTree] | None = None,
        *,
        state_0: Sequence[PyTree] | None = None,
        key: PRNGKeyArray | None = None,
    ) -> tuple[Float[Array, "*B T D"], list[PyTree]]:
        """a_0 or state_0: one entry per layer (None for a layer's default); the list of state_T this
        returns is a state_0 that continues the same sequences."""
        if a_0 is not None and state_0 is not None:
            raise ValueError("give a_0 or state_0, not both: state_0 holds a_0 (and an LSTM's c_0)")
        for name, given in (("a_0", a_0), ("state_0", state_0)):
            if given is not None and len(given) != len(self.layers):
                raise ValueError(f"{name} needs one entry per layer ({len(self.layers)}); got {len(given)}")
        finals = []
        for i, layer in enumerate(self.layers):
            if i > 0 and key is not None and self.dropout > 0:
                key, sub = jax.random.split(key)
                keep = jax.random.bernoulli(sub, 1.0 - self.dropout, x.shape)
                x = jnp.where(keep, x / (1.0 - self.dropout), 0.0)
            x, final = layer(x, lengths, None if a_0 is None else a_0[i],
                             state_0=None if state_0 is None else state_0[i])
            finals.append(final)
        return x, finals


def RNN(
    cell: str,
    features: int,
    units: int,
    *,
    layers: int = 1,
    bidirectional: bool = False,
    dropout: float = 0.0,
    activation: str | Activation = "tanh",
    reset_after: bool = True,
    learn_a_0: bool = False,
    chunk: int | None = None,
    engine: str = "auto",
    key: PRNGKeyArray,
) -> Stack:
    """A stack of recurrent layers built like `torch.nn.RNN/GRU/LSTM`.

    cell: "elman" | "gru" | "lstm" | "mingru" | "minlstm". features: k of the first layer's x_t. units: p per
    direction.
    Layer l > 0 reads the outputs of layer l-1: p features, or 2p when bidirectional.
    chunk: rematerialise in pieces of this many steps for long sequences (see `scan_in_pieces`).
    engine: "auto" | "scan" | "fused", for every layer (see `Recurrent`).

    ```python
    rnn = RNN("gru", features=100, units=64, layers=2, bidirectional=True, key=jax.random.key(0))
    a, finals = rnn(x, lengths)             # x: (B, T, 100) -> a: (B, T, 128)
    ```
    """
    if layers < 1:
        raise ValueError(f"layers must be >= 1; got {layers}")
    keys = iter(jax.random.split(key, 2 * layers))
    stack: list[Layer] = []
    k = features
    for _ in range(layers):
        def build(reverse: bool, k=k) -> Recurrent:
            c = make_cell(cell, k, units, activation=activation, reset_after=reset_after, key=next(keys))
            return Recurrent(c, reverse=reverse, learn_a_0=learn_a_0, chunk=chunk, engine=engine)

        stack.append(Bidirectional(build(False), build(True)) if bidirectional else build(False))
        k = stack[-1].output_size
    return Stack(stack, dropout)


def with_fields(module: eqx.Module, **changes) -> eqx.Module:
    """A copy of `module` with some fields set to other values, static ones included (which `eqx.tree_at`
    cannot reach); the other fields are the same objects."""
    copy = object.__new__(type(module))
    for field in dataclasses.fields(module):
        object.__setattr__(copy, field.name, changes.get(field.name, getattr(module, field.name)))
    return copy


def with_engine(module: PyTree, engine: str) -> PyTree:
    """`module` (a layer, a stack, a model holding them) with every `Recurrent` in it set to `engine`:
    "auto" | "scan" | "fused" (see `Recurrent`); the weights are the same arrays."""
    if engine not in fast.ENGINES:
        raise ValueError(f"engine must be one of {', '.join(fast.ENGINES)}; got {engine!r}")

    def set_engine(node):
        if not isinstance(node, Recurrent):
            return node
        if engine == "fused" and (reason := fast.why_not(node.cell)) is not None:
            raise ValueError(f'engine="fused": {reason} (engine="auto" falls back to the scan)')
        return with_fields(node, engine=engine)  # engine is static, so not a leaf

    return jax.tree.map(set_engine, module, is_leaf=lambda node: isinstance(node, Recurrent))
