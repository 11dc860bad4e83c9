"""A `Recurrent` layer over a batch on the fused engine, with what the engine leaves out: lengths, and
rematerialisation for long sequences.

With lengths L (B,), every sequence runs all T steps inside the engine; around it, a_t is zeroed for t >= L,
a_T is gathered at t = L (a_0 where L = 0), and an LSTM's c_T comes from the engine's masked mode. The
reverse direction reads each sequence reversed within its own length (`reverse_within`), runs forwards, and
puts the outputs back in time order.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int, PyTree

from rnnlab.cells import GRU, LSTM, Cell, Elman, activation_name
from rnnlab.fast import engine
from rnnlab.fast.engine import Config


def enabled() -> bool:
    """The fused path is on unless RNNLAB_FAST=0 (or the engine is not built, or the backend is not CPU)."""
    return (os.environ.get("RNNLAB_FAST", "1") != "0" and engine.available()
            and jax.default_backend() == "cpu")


def config(cell: Cell, reverse: bool = False, masked: bool = False) -> Config | None:
    """The engine's configuration for a cell, or None where the engine does not apply (then: the scan)."""
    if cell.W_a.dtype != jnp.float32:
        return None
    if type(cell) is Elman:
        act = engine.ACTIVATIONS.get(activation_name(cell.activation))
        return None if act is None else Config(engine.ELMAN, act, reverse, False)
    if type(cell) is GRU:
        return Config(engine.GRU_RESET_AFTER if cell.reset_after else engine.GRU, 0, reverse, False)
    if type(cell) is LSTM:
        return Config(engine.LSTM, 0, reverse, masked)
    return None


def applies(cell: Cell, x: Array) -> bool:
    """True when `Recurrent` should run x (B, T, k) through the engine rather than the scan."""
    return (x.ndim == 3 and x.dtype == jnp.float32 and min(x.shape) > 0 and enabled()
            and config(cell) is not None)


def _unpack(cell: Cell, state: PyTree) -> tuple[Array, Array]:
    if isinstance(cell, LSTM):
        return state
    return state, jnp.zeros((1,), jnp.float32)


def _chunks(cfg: Config, cell: Cell, x, h0, c0, lengths, chunk: int):
    """The engine over T/chunk pieces in a scan, each under jax.checkpoint: backward keeps one state per
    piece and recomputes the rest, so memory grows with T/chunk + chunk instead of T."""
    B, T, k = x.shape
    n = T // chunk
    c_n = cell.c_n if getattr(cell, "c_n", None) is not None else jnp.zeros((1,), jnp.float32)
    xs = jnp.swapaxes(x.reshape(B, n, chunk, k), 0, 1)  # (n, B, chunk, k)
    starts = jnp.arange(n) * chunk

    @jax.checkpoint
    def piece(carry, inputs):
        h, c = carry
        x_i, t0 = inputs
        L = jnp.clip(lengths - t0, 0, chunk)
        y, h, c = engine.fused(cfg, x_i, h, c, cell.W_a, cell.U_a, cell.b_a, c_n, L)
        return (h, c), y

    (hT, cT), ys = jax.lax.scan(piece, (h0, c0), (xs, starts), reverse=cfg.reverse)
    return jnp.swapaxes(ys, 0, 1).reshape(B, T, -1), hT, cT


def sequence(
    cell: Cell,
    x: Float[Array, "B T k"],
    lengths: Int[Array, " B"] | None,
    state_0: PyTree,
    *,
    reverse: bool = False,
    chunk: int | None = None,
) -> tuple[Float[Array, "B T p"], PyTree]:
    """(a (B, T, p), state_T) as `Recurrent` gives them, on the engine. `chunk` (dividing T) rematerialises."""
    from rnnlab.layers import reverse_within

    B, T, _ = x.shape
    h0, c0 = _unpack(cell, state_0)
    masked = lengths is not None
    cfg = config(cell, reverse=reverse and not masked, masked=masked and isinstance(cell, LSTM))
    if cfg is None:
        raise ValueError(f"the fused engine does not run {type(cell).__name__} with these settings")
    L = jnp.full((B,), T, jnp.int32) if lengths is None else jnp.asarray(lengths, jnp.int32)
    if masked and reverse:
        x = jax.vmap(reverse_within)(x, L)
    if chunk is not None and chunk < T:
        if T % chunk:
            raise ValueError(f"chunk={chunk} must divide T={T}")
        y, hT, cT = _chunks(cfg, cell, x, h0, c0, L, chunk)
    else:
        c_n = cell.c_n if getattr(cell, "c_n", None) is not None else jnp.zeros((1,), jnp.float32)
        y, hT, cT = engine.fused(cfg, x, h0, c0, cell.W_a, cell.U_a, cell.b_a, c_n, L)
    if masked:
        t = jnp.arange(T)
        y = jnp.where((t[None, :] < L[:, None])[..., None], y, 0.0)
        last = jnp.take_along_axis(y, jnp.clip(L - 1, 0, T - 1)[:, None, None], axis=1)[:, 0]
        hT = jnp.where((L > 0)[:, None], last, h0)
        if reverse:
            y = jax.vmap(reverse_within)(y, L)
    return y, ((hT, cT) if isinstance(cell, LSTM) else hT)
