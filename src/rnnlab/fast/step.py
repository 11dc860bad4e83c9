"""One timestep for streaming, compiled once per shape: state_t from state_{t-1} and x_t."""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax
from jaxtyping import Array, Float, PyTree


def stepper(layer: eqx.Module) -> Callable[[PyTree, Float[Array, "*B k"]], PyTree]:
    """`step(state, x_t) -> state_t` for a `Recurrent` layer, jitted with the state's buffers donated.

    The weights are closed over (baked in as constants), so a call passes only the state and x_t; the
    state passed in must not be used again. Start from `layer.initial_state()` or
    `layer.initial_state(batch=B)`.
    """
    cell = layer.cell

    def step(state: PyTree, x_t: Array) -> PyTree:
        return cell(x_t, state) if x_t.ndim == 1 else jax.vmap(cell)(x_t, state)

    return jax.jit(step, donate_argnums=0)
