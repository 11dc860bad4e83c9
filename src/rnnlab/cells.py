"""One step of each recurrence: the equations, and nothing else.

A cell maps (x_t, state_{t-1}) to state_t. It holds the weights that every timestep shares, so its
parameter count depends on k (features of x_t) and p (units of the state), never on T (timesteps).

    Elman   a_t = f_a(W_a x_t + U_a a_{t-1} + b_a)
    output  y_t = f_y(W_y a_t + b_y)                                 (`Readout`)

GRU and LSTM are the same idea with gates. Their weights for all G gates are stacked row-wise into one
W_a of shape (G·p, k), one U_a of shape (G·p, p) and one b_a of shape (G·p,), so that one matmul computes
every gate; `cell.gate(name)` returns the rows of a single gate so each equation can be read on its own.

Each cell splits its step in two, which is what makes a whole sequence fast:

    wx_t = W_a x_t + b_a         `project`: for all t at once, one (T, k) @ (k, G·p) matmul before the loop
    a_t = recur(wx_t, a_{t-1})   `recur`: the part that must run in order, U_a a_{t-1} and the nonlinearity

and `cell(x_t, a_{t-1})` is simply `recur(project(x_t), a_{t-1})`.

Min cells (`MinGRU`, `MinLSTM`; Feng et al. 2024, "Were RNNs All We Needed?") have no U_a: their gates
read x_t alone, so `recur` is a_t = α_t ⊙ a_{t-1} + β_t with (α_t, β_t) = `cell.coefficients(wx_t)`, and
a layer computes all T steps by a scan over those pairs (`linear_scan.py`) instead of T dependent matmuls.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray, PyTree

from rnnlab.linear_scan import METHODS as SCANS  # how a layer runs a min cell's T steps

Activation = Callable[[Array], Array]
Arrayish = Array | np.ndarray  # what public functions accept: JAX arrays or NumPy arrays

ACTIVATIONS: dict[str, Activation] = {
    "tanh": jnp.tanh,
    "sigmoid": jax.nn.sigmoid,
    "relu": jax.nn.relu,
    "identity": lambda z: z,
    "softplus": jax.nn.softplus,
    "gelu": jax.nn.gelu,
    "elu": jax.nn.elu,
    "leaky_relu": jax.nn.leaky_relu,
    "softmax": jax.nn.softmax,
    "log_softmax": jax.nn.log_softmax,
}


def activation_fn(activation: str | Activation) -> Activation:
    """The function for an activation given by name (`"tanh"`, `"relu"`, ...) or a callable, unchanged."""
    if callable(activation):
        return activation
    try:
        return ACTIVATIONS[activation]
    except KeyError:
        names = ", ".join(sorted(ACTIVATIONS))
        raise ValueError(f"unknown activation {activation!r}: use one of {names}, or pass a function") from None


def activation_name(activation: str | Activation) -> str:
    """A readable name for an activation: its key in ACTIVATIONS, else the function's own name."""
    if isinstance(activation, str):
        return activation
    for name, fn in ACTIVATIONS.items():
        if fn is activation:
            return name
    return getattr(activation, "__name__", repr(activation))


def _uniform(key: PRNGKeyArray, shape: tuple[int, ...], bound: float) -> Array:
    return jax.random.uniform(key, shape, minval=-bound, maxval=bound)


class Cell(eqx.Module):
    """What every cell has: W_a (G·p, k), U_a (G·p, p), b_a (G·p,), and one step of the recurrence.

    Subclasses set `gate_names` (G of them) and implement `recur`, `initial_state` and `hidden`.
    """

    W_a: Float[Array, "Gp k"]
    U_a: Float[Array, "Gp p"] | None  # None in the min cells: their gates do not read a_{t-1}
    b_a: Float[Array, " Gp"]
    features: int = eqx.field(static=True)
    units: int = eqx.field(static=True)

    gate_names: ClassVar[tuple[str, ...]] = ("a",)
    kind: ClassVar[str] = "cell"

    def _init_weights(self, features: int, units: int, key: PRNGKeyArray, extra: int = 0) -> list[Array]:
        """PyTorch's initialisation: every weight uniform in ±1/sqrt(p). Returns `extra` more (p,) vectors."""
        if features < 1 or units < 1:
            raise ValueError(f"a cell needs features k >= 1 and units p >= 1; got k={features}, p={units}")
        G = len(self.gate_names)
        bound = 1.0 / math.sqrt(units)
        keys = jax.random.split(key, 3 + extra)
        self.W_a = _uniform(keys[0], (G * units, features), bound)
        self.U_a = _uniform(keys[1], (G * units, units), bound)
        self.b_a = _uniform(keys[2], (G * units,), bound)
        self.features = features
        self.units = units
        return [_uniform(k, (units,), bound) for k in keys[3:]]

    @property
    def gates(self) -> int:
        """G: how many blocks of p rows W_a, U_a and b_a stack (1 for Elman, 3 for GRU, 4 for LSTM)."""
        return len(self.gate_names)

    def gate(self, name: str) -> tuple[Array, Array, Array]:
        """(W, U, b) of one gate: rows [i·p, (i+1)·p) of W_a, U_a, b_a."""
        i = self.gate_names.index(name)
        rows = slice(i * self.units, (i + 1) * self.units)
        return self.W_a[rows], self.U_a[rows], self.b_a[rows]

    def project(self, x: Float[Arrayish, "*T k"]) -> Float[Array, "*T Gp"]:
        """wx = W_a x + b_a for one timestep (k,) or all of them at once (T, k): the part outside the loop."""
        return x @ self.W_a.T + self.b_a

    def recur(self, wx_t: Float[Array, " Gp"], state: PyTree) -> PyTree:
        """state_t from wx_t = W_a x_t + b_a and state_{t-1}: the part that must run in order."""
        raise NotImplementedError

    def initial_state(self, a_0: Float[Array, " p"] | None = None) -> PyTree:
        """state_0 built from a_0 (the hidden state; zeros when None)."""
        return jnp.zeros(self.units, self.W_a.dtype) if a_0 is None else a_0

    def hidden(self, state: PyTree) -> Float[Array, "*B p"]:
        """a_t: the part of the state that is the layer's output ((p,), or (B, p) for a batch of states)."""
        return state

    def __call__(self, x_t: Float[Arrayish, " k"], state: PyTree) -> PyTree:
        """One timestep: state_t from x_t (k,) and state_{t-1}."""
        return self.recur(self.project(x_t), jax.tree.map(jnp.asarray, state))


class Elman(Cell):
    """The Elman (1990) cell, a "simple" or "vanilla" RNN:

        a_t = f_a(W_a x_t + U_a a_{t-1} + b_a)

    x_t: (k,) features at step t. a_t: (p,) the state, p units. W_a: (p, k). U_a: (p, p). b_a: (p,).
    f_a: any activation, by name (`"tanh"`, `"relu"`, `"sigmoid"`, `"identity"`, ...) or a function.

    ```python
    cell = rnnlab.Elman(features=50, units=10, key=jax.random.key(0))
    a_1 = cell(x_1, jnp.zeros(10))          # x_1: (50,) -> a_1: (10,)
    ```
    """

    activation: str | Activation = eqx.field(static=True)

    gate_names: ClassVar[tuple[str, ...]] = ("a",)
    kind: ClassVar[str] = "elman"

    def __init__(self, features: int, units: int, activation: str | Activation = "tanh", *, key: PRNGKeyArray):
        activation_fn(activation)  # fail early on an unknown name
        self._init_weights(features, units, key)
        self.activation = activation

    def recur(self, wx_t: Float[Array, " p"], a_prev: Float[Array, " p"]) -> Float[Array, " p"]:
        f_a = activation_fn(self.activation)
        return f_a(wx_t + self.U_a @ a_prev)


class GRU(Cell):
    """Gated recurrent unit (Cho et al. 2014). Gates r (reset), z (update), n (candidate), σ the sigmoid:

        r_t = σ(W_r x_t + U_r a_{t-1} + b_r)
        z_t = σ(W_z x_t + U_z a_{t-1} + b_z)
        n_t = tanh(W_n x_t + r_t ⊙ (U_n a_{t-1} + c_n) + b_n)       reset_after=True  (default)
        n_t = tanh(W_n x_t + U_n (r_t ⊙ a_{t-1}) + b_n)             reset_after=False (Cho et al. 2014)
        a_t = (1 - z_t) ⊙ n_t + z_t ⊙ a_{t-1}

    W_a = [W_r; W_z; W_n]: (3p, k), U_a = [U_r; U_z; U_n]: (3p, p), b_a = [b_r; b_z; b_n]: (3p,),
    c_n: (p,) the bias inside the reset, PyTorch's `bias_hn` (None when reset_after=False).

    `reset_after=True` applies r_t after the recurrent matmul: PyTorch's `nn.GRU`, cuDNN, and Keras's
    default (`reset_after=True`) do this. `reset_after=False` is the original paper's form (Keras with
    `reset_after=False`, TensorFlow 1's `GRUCell`).
    """

    c_n: Float[Array, " p"] | None
    reset_after: bool = eqx.field(static=True)

    gate_names: ClassVar[tuple[str, ...]] = ("r", "z", "n")
    kind: ClassVar[str] = "gru"

    def __init__(self, features: int, units: int, reset_after: bool = True, *, key: PRNGKeyArray):
        (c_n,) = self._init_weights(features, units, key, extra=1)
        self.c_n = c_n if reset_after else None
        self.reset_after = reset_after

    def recur(self, wx_t: Float[Array, " Gp"], a_prev: Float[Array, " p"]) -> Float[Array, " p"]:
        p = self.units
        wx_r, wx_z, wx_n = wx_t[:p], wx_t[p : 2 * p], wx_t[2 * p :]   # W_r x_t + b_r, W_z x_t + b_z, W_n x_t + b_n
        if self.reset_after:
            ua = self.U_a @ a_prev  # U_a a_{t-1}: one matmul for all three gates
            ua_r, ua_z, ua_n = ua[:p], ua[p : 2 * p], ua[2 * p :]
            r = jax.nn.sigmoid(wx_r + ua_r)
            z = jax.nn.sigmoid(wx_z + ua_z)
            n = jnp.tanh(wx_n + r * (ua_n + self.c_n))
        else:
            ua_r, ua_z = jnp.split(self.U_a[: 2 * p] @ a_prev, 2)
            r = jax.nn.sigmoid(wx_r + ua_r)
            z = jax.nn.sigmoid(wx_z + ua_z)
            n = jnp.tanh(wx_n + self.U_a[2 * p :] @ (r * a_prev))   # U_n (r_t ⊙ a_{t-1})
        return (1.0 - z) * n + z * a_prev


class LSTM(Cell):
    """Long short-term memory (Hochreiter & Schmidhuber 1997, with the forget gate of Gers et al. 2000).
    Gates i (input), f (forget), g (candidate), o (output), σ the sigmoid; the state is (a_t, c_t):

        i_t = σ(W_i x_t + U_i a_{t-1} + b_i)
        f_t = σ(W_f x_t + U_f a_{t-1} + b_f)
        g_t = tanh(W_g x_t + U_g a_{t-1} + b_g)
        o_t = σ(W_o x_t + U_o a_{t-1} + b_o)
        c_t = f_t ⊙ c_{t-1} + i_t ⊙ g_t
        a_t = o_t ⊙ tanh(c_t)

    W_a = [W_i; W_f; W_g; W_o]: (4p, k), U_a: (4p, p), b_a: (4p,), the gate order of PyTorch's `nn.LSTM`.
    a_t: (p,) the hidden state (the output), c_t: (p,) the memory cell.
    """

    gate_names: ClassVar[tuple[str, ...]] = ("i", "f", "g", "o")
    kind: ClassVar[str] = "lstm"

    def __init__(self, features: int, units: int, *, key: PRNGKeyArray):
        self._init_weights(features, units, key)

    def initial_state(
        self, a_0: Float[Array, " p"] | None = None
    ) -> tuple[Float[Array, " p"], Float[Array, " p"]]:
        zeros = jnp.zeros(self.units, self.W_a.dtype)
        return (zeros if a_0 is None else a_0, zeros)

    def hidden(self, state: tuple[Array, Array]) -> Float[Array, "*B p"]:
        return state[0]

    def recur(
        self, wx_t: Float[Array, " Gp"], state: tuple[Float[Array, " p"], Float[Array, " p"]]
    ) -> tuple[Float[Array, " p"], Float[Array, " p"]]:
        a_prev, c_prev = state
        p = self.units
        s = wx_t + self.U_a @ a_prev  # W_a x_t + b_a + U_a a_{t-1}: one matmul for all four gates
        i = jax.nn.sigmoid(s[:p])
        f = jax.nn.sigmoid(s[p : 2 * p])
        g = jnp.tanh(s[2 * p : 3 * p])
        o = jax.nn.sigmoid(s[3 * p :])
        c = f * c_prev + i * g
        return (o * jnp.tanh(c), c)


class MinCell(Cell):
    """A cell whose gates read x_t alone (no U_a), so that its step is linear in a_{t-1}:

        a_t = α_t ⊙ a_{t-1} + β_t          (α_t, β_t) = `coefficients(W_a x_t + b_a)`, (p,) each

    W_a: (G·p, k), b_a: (G·p,), U_a: None. A layer computes every (α_t, β_t) with one matmul before
    the loop and then all T steps with `linear_scan`: `scan="sequential"` (`lax.scan`, T elementwise
    steps in order) or `scan="associative"` (`jax.lax.associative_scan`, ⌈log₂ T⌉ levels).

    The form computed is the plain (α, β) composition, not the paper's log-space one: with 0 ≤ α_t ≤ 1
    and β_t = (1 - α_t) ⊙ ã_t, each a_t is a convex combination of a_0 and the ã_s, so in float32 nothing
    overflows or cancels; products of α only shrink, and where they underflow to 0 the term they weigh
    is below float32's resolution anyway. (The log-space form takes logarithms of ã, which needs
    ã > 0 and costs an exp and a log per step.) No PyTorch layer computes these cells: `to_torch` and
    `from_torch` do not take them.
    """

    U_a: None
    scan: str = eqx.field(static=True)

    def _init_min(self, features: int, units: int, scan: str, key: PRNGKeyArray) -> None:
        """W_a and b_a uniform in ±1/√k, as a linear layer from k features (there is no U_a to scale by p)."""
        if features < 1 or units < 1:
            raise ValueError(f"a cell needs features k >= 1 and units p >= 1; got k={features}, p={units}")
        if scan not in SCANS:
            raise ValueError(f"unknown scan {scan!r}: use one of {', '.join(SCANS)}")
        bound = 1.0 / math.sqrt(features)
        kw, kb = jax.random.split(key)
        G = len(self.gate_names)
        self.W_a = _uniform(kw, (G * units, features), bound)
        self.U_a = None
        self.b_a = _uniform(kb, (G * units,), bound)
        self.features = features
        self.units = units
        self.scan = scan

    def gate(self, name: str) -> tuple[Array, None, Array]:
        """(W, None, b) of one gate: rows [i·p, (i+1)·p) of W_a and b_a (no U_a)."""
        i = self.gate_names.index(name)
        rows = slice(i * self.units, (i + 1) * self.units)
        return self.W_a[rows], None, self.b_a[rows]

    def coefficients(self, wx: Float[Array, "*T Gp"]) -> tuple[Float[Array, "*T p"], Float[Array, "*T p"]]:
        """(α, β) from wx = W_a x + b_a, for one step (G·p,) or all of them (T, G·p)."""
        raise NotImplementedError

    def recur(self, wx_t: Float[Array, " Gp"], a_prev: Float[Array, " p"]) -> Float[Array, " p"]:
        alpha, beta = self.coefficients(wx_t)
        return alpha * a_prev + beta


class MinGRU(MinCell):
    """minGRU (Feng et al. 2024): the GRU without U_a and without the reset gate. σ the sigmoid:

        z_t = σ(W_z x_t + b_z)             ã_t = W_h x_t + b_h
        a_t = (1 - z_t) ⊙ a_{t-1} + z_t ⊙ ã_t           α_t = 1 - z_t = σ(-(W_z x_t + b_z)), β_t = z_t ⊙ ã_t

    W_a = [W_z; W_h]: (2p, k), b_a = [b_z; b_h]: (2p,), no U_a. α_t is computed as σ(-u), not 1 - σ(u),
    which keeps its relative precision where z_t is near 1. 2p(k + 1) parameters: none grows with p².

    ```python
    cell = rnnlab.MinGRU(features=50, units=10, key=jax.random.key(0))
    a_1 = cell(x_1, jnp.zeros(10))          # x_1: (50,) -> a_1: (10,)
    ```
    """

    gate_names: ClassVar[tuple[str, ...]] = ("z", "h")
    kind: ClassVar[str] = "mingru"

    def __init__(self, features: int, units: int, *, scan: str = "sequential", key: PRNGKeyArray):
        self._init_min(features, units, scan, key)

    def coefficients(self, wx: Float[Array, "*T Gp"]) -> tuple[Float[Array, "*T p"], Float[Array, "*T p"]]:
        p = self.units
        u, h = wx[..., :p], wx[..., p:]   # u = W_z x_t + b_z (z_t = σ(u)), h = ã_t
        return jax.nn.sigmoid(-u), jax.nn.sigmoid(u) * h


class MinLSTM(MinCell):
    """minLSTM (Feng et al. 2024): the LSTM without U_a, c_t or the output gate, its two gates normalised:

        f_t = σ(W_f x_t + b_f)     i_t = σ(W_i x_t + b_i)     ã_t = W_h x_t + b_h
        f'_t = f_t / (f_t + i_t)   i'_t = i_t / (f_t + i_t)
        a_t = f'_t ⊙ a_{t-1} + i'_t ⊙ ã_t                α_t = f'_t, β_t = i'_t ⊙ ã_t

    W_a = [W_f; W_i; W_h]: (3p, k), b_a = [b_f; b_i; b_h]: (3p,), no U_a. 3p(k + 1) parameters.
    f'_t is f_t / (f_t + i_t) as written, except that where both gates' inputs u are below -20, both are
    first raised by the same amount to -20: there σ(u) = e^u to float32's precision (the relative error is
    e^-20, 2e-9), so the quotient is unchanged, while f_t + i_t and its square (in the gradient) stay in
    float32's normal range (as written, the quotient is 0/0 from u near -104 and its gradient infinite
    from -44). i'_t = 1 - f'_t, so α_t + (1 - α_t) is exactly 1.
    """

    gate_names: ClassVar[tuple[str, ...]] = ("f", "i", "h")
    kind: ClassVar[str] = "minlstm"

    def __init__(self, features: int, units: int, *, scan: str = "sequential", key: PRNGKeyArray):
        self._init_min(features, units, scan, key)

    def coefficients(self, wx: Float[Array, "*T Gp"]) -> tuple[Float[Array, "*T p"], Float[Array, "*T p"]]:
        p = self.units
        u_f, u_i, h = wx[..., :p], wx[..., p : 2 * p], wx[..., 2 * p :]   # f_t = σ(u_f), i_t = σ(u_i), h = ã_t
        shift = jax.lax.stop_gradient(jnp.maximum(0.0, -20.0 - jnp.maximum(u_f, u_i)))  # f' does not depend on it
        f, i = jax.nn.sigmoid(u_f + shift), jax.nn.sigmoid(u_i + shift)
        f_norm = f / (f + i)
        return f_norm, (1.0 - f_norm) * h


CELLS: dict[str, type[Cell]] = {"elman": Elman, "rnn": Elman, "gru": GRU, "lstm": LSTM,
                             "mingru": MinGRU, "minlstm": MinLSTM}


def make_cell(
    kind: str, features: int, units: int, *, activation: str | Activation = "tanh",
    reset_after: bool = True, key: PRNGKeyArray,
) -> Cell:
    """A cell by name: `"elman"` (alias `"rnn"`), `"gru"`, `"lstm"`, `"mingru"` or `"minlstm"`."""
    try:
        cls = CELLS[kind.lower()]
    except KeyError:
        raise ValueError(f"unknown cell {kind!r}: use one of elman, gru, lstm, mingru, minlstm") from None
    if cls is Elman:
        return Elman(features, units, activation, key=key)
    if cls is GRU:
        return GRU(features, units, reset_after, key=key)
    if issubclass(cls, MinCell):
        return cls(features, units, key=key)
    return LSTM(features, units, key=key)


class Readout(eqx.Module):
    """The output equation, y_t = f_y(W_y a_t + b_y), for one state a_t (p,) or all of them (T, p).

    W_y: (q, p), b_y: (q,), q outputs. Apply it to every a_t (many-to-many: a prediction at each step,
    as in Elman's next-word task) or to the last one only (many-to-one: a label for a whole tweet).
    f_y defaults to the identity (logits: the loss applies softmax).
    """

    W_y: Float[Array, "q p"]
    b_y: Float[Array, " q"]
    activation: str | Activation = eqx.field(static=True)

    def __init__(self, units: int, outputs: int, activation: str | Activation = "identity", *,
                 key: PRNGKeyArray):
        activation_fn(activation)
        bound = 1.0 / math.sqrt(units)
        kw, kb = jax.random.split(key)
        self.W_y = _uniform(kw, (outputs, units), bound)
        self.b_y = _uniform(kb, (outputs,), bound)
        self.activation = activation

    def __call__(self, a: Float[Arrayish, "*T p"]) -> Float[Array, "*T q"]:
        return activation_fn(self.activation)(a @ self.W_y.T + self.b_y)
