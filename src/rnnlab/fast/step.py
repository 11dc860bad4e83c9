"""One timestep for streaming, compiled once per shape: state_t from state_{t-1} and x_t."""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PyTree

from rnnlab.cells import LSTM
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
        h, c = state if lstm else (state, jnp.zeros((1,), jnp.float32))
        one = x_t.ndim == 1
        if one:
            x_t, h, c = x_t[None], h[None], (c[None] if lstm else c)
        h, c = engine.step(cfg, x_t, h, c, W_aT, U_aT, cell.b_a, c_n)
        if one:
            h, c = h[0], (c[0] if lstm else c)
        return (h, c) if lstm else h

    def on_cell(state: PyTree, x_t: Array) -> PyTree:
        return cell(x_t, state) if x_t.ndim == 1 else jax.vmap(cell)(x_t, state)

    return jax.jit(on_engine if cfg is not None else on_cell, donate_argnums=0)
