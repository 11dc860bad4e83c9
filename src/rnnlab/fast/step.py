"""One timestep for streaming: state_t from state_{t-1} and x_t, as a jitted JAX function (`stepper`) or
straight from Python on NumPy buffers (`Stream`)."""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PyTree

from rnnlab.cells import LSTM, Arrayish
from rnnlab.fast import engine
from rnnlab.fast.layer import config, enabled


def stepper(layer: eqx.Module) -> Callable[[PyTree, Float[Array, "*B k"]], PyTree]:
    """`step(state, x_t) -> state_t` for a `Recurrent` layer, jitted with the state's buffers donated.

    On CPU with the engine built, the step is one call into it (a few matrix-vector products in C++);
    otherwise the cell's own equations. The weights are closed over, so a call passes only the state and
    x_t (k,) or (B, k); the state passed in must not be used again. Start from `layer.initial_state()` or
    `layer.initial_state(batch=B)`. No gradient flows through the engine's step: it is for inference.
    """
    cell = layer.cell
    cfg = config(cell) if enabled() else None
    if cfg is not None:  # transposed once, here: the engine reads W_aᵀ (k, G·p) and U_aᵀ (p, G·p)
        W_aT, U_aT = jnp.asarray(cell.W_a.T), jnp.asarray(cell.U_a.T)
        c_n = cell.c_n if getattr(cell, "c_n", None) is not None else jnp.zeros((1,), jnp.float32)

    def on_engine(state: PyTree, x_t: Array) -> PyTree:
        lstm = isinstance(cell, LSTM)
        a, c = state if lstm else (state, jnp.zeros((1,), jnp.float32))
        one = x_t.ndim == 1
        if one:
            x_t, a, c = x_t[None], a[None], (c[None] if lstm else c)
        a, c = engine.step(cfg, x_t, a, c, W_aT, U_aT, cell.b_a, c_n)
        if one:
            a, c = a[0], (c[0] if lstm else c)
        return (a, c) if lstm else a

    def on_cell(state: PyTree, x_t: Array) -> PyTree:
        return cell(x_t, state) if x_t.ndim == 1 else jax.vmap(cell)(x_t, state)

    return jax.jit(on_engine if cfg is not None else on_cell, donate_argnums=0)


class Stream:
    """A `Recurrent` layer run one timestep at a time from Python, on the engine's step without JAX.

    Each call is one call into the compiled step through ctypes, on NumPy buffers made once: no tracing,
    no dispatch (benchmarks/README.md, S2, has its time). The state (a_t, and c_t for an LSTM) stays inside
    between calls; a call returns a fresh copy of a_t. For inference (no gradient), on CPU with the engine built.

        stream = Stream(layer)             # one sequence, from the layer's a_0 (or zeros)
        for x_t in xs:                     # x_t (k,)
            a_t = stream(x_t)              # (p,) NumPy
        stream.reset()                     # back to a_0; Stream(layer, batch=B) steps B sequences at once

    One Stream belongs to one thread at a time (its buffers are its state); make one per thread.
    """

    def __init__(self, layer: eqx.Module, batch: int | None = None):
        cell = layer.cell
        cfg = config(cell) if enabled() else None
        if cfg is None:
            raise ValueError(f"Stream needs the engine (built, on CPU, RNNLAB_FAST not 0) and a cell it runs "
                             f"(Elman tanh/relu/sigmoid, GRU, LSTM; float32): got {type(cell).__name__}")
        self.layer, self.batch, self._cfg = layer, batch, cfg
        self._lstm = isinstance(cell, LSTM)
        self.k, self.p = cell.W_a.shape[1], cell.U_a.shape[1]
        B = 1 if batch is None else batch
        f32 = np.float32
        c_n = cell.c_n if getattr(cell, "c_n", None) is not None else np.zeros((1,), f32)
        self._weights = [np.ascontiguousarray(np.asarray(a, f32)) for a in (cell.W_a.T, cell.U_a.T, cell.b_a, c_n)]
        self._x = np.zeros((B, self.k), f32)
        self._a = [np.zeros((B, self.p), f32) for _ in range(2)]  # read one, write the other, swap
        self._c = [np.zeros((B, self.p) if self._lstm else (1,), f32) for _ in range(2)]
        self._now = 0
        fn = engine.raw_step()
        ptr = [v.ctypes.data for v in (self._x, *self._a, *self._c, *self._weights)]
        x, a_0, a_1, c_0, c_1, W_aT, U_aT, b_a, c_n = ptr  # buffers 0 and 1 of a and c, taken in turn
        head = (cfg.cell, cfg.act, B, self.k, self.p, x)
        # the two argument lists, one per direction of the swap, built once
        self._calls = [lambda: fn(*head, a_0, c_0, W_aT, U_aT, b_a, c_n, a_1, c_1),
                       lambda: fn(*head, a_1, c_1, W_aT, U_aT, b_a, c_n, a_0, c_0)]
        self.reset()

    def reset(self, state: PyTree | None = None) -> None:
        """Start again from `state` (as `layer.initial_state` gives it), else from the layer's a_0."""
        if state is None:
            state = self.layer.initial_state(batch=self.batch)
        a, c = state if self._lstm else (state, None)
        self._now = 0
        self._a[0][...] = np.asarray(a, np.float32).reshape(self._a[0].shape)
        if self._lstm:
            self._c[0][...] = np.asarray(c, np.float32).reshape(self._c[0].shape)

    @property
    def state(self) -> PyTree:
        """The current state as NumPy copies: a_t, or (a_t, c_t) for an LSTM; (p,) or (B, p)."""
        one = (lambda a: a[0].copy()) if self.batch is None else (lambda a: a.copy())
        a = one(self._a[self._now])
        return (a, one(self._c[self._now])) if self._lstm else a

    def __call__(self, x_t: Float[Arrayish, "*B k"]) -> np.ndarray:
        """a_t, (p,) or (B, p), after one step on x_t, (k,) or (B, k)."""
        want = (self.k,) if self.batch is None else (self.batch, self.k)
        if np.shape(x_t) != want:
            raise ValueError(f"expected x_t of shape {want} (k={self.k} features"
                             f"{'' if self.batch is None else f' for each of B={self.batch} sequences'}); "
                             f"got {tuple(np.shape(x_t))}")
        self._x[...] = x_t
        if self._calls[self._now]() != 0:
            raise RuntimeError("the engine's step refused the cell")
        self._now = 1 - self._now
        a = self._a[self._now]
        return a[0].copy() if self.batch is None else a.copy()
