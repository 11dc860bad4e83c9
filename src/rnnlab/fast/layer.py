"""A `Recurrent` layer over a batch on the fused engine, with what the engine leaves out: lengths, and
rematerialisation for long sequences on oneDNN (the kernel does its own: `engine.fused(..., chunk=C)`).

With lengths L (B,), every sequence runs all T steps inside the engine; around it, a_t is zeroed for t >= L,
a_T is gathered at t = L (a_0 where L = 0), and an LSTM's c_T comes from the engine's masked mode. The
reverse direction reads each sequence reversed within its own length (`reverse_within`), runs forwards, and
puts the outputs back in time order.
"""

from __future__ import annotations

import functools
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
    """The engine over T/chunk pieces (x padded to whole pieces by `sequence`), rematerialised: inside the
    kernel (`engine.fused(chunk=...)`), or on oneDNN piece by piece from here (`_pieces`)."""
    c_n = cell.c_n if getattr(cell, "c_n", None) is not None else jnp.zeros((1,), jnp.float32)
    B, _, k = x.shape  # (the kernel runs a cell whatever T: ask at T = chunk, the shape oneDNN would plan)
    if engine.on_kernel(cfg, B, chunk, k, h0.shape[-1]):
        return engine.fused(cfg, x, h0, c0, cell.W_a, cell.U_a, cell.b_a, c_n, lengths, chunk=chunk)
    return _pieces(cfg, chunk, x, h0, c0, cell.W_a, cell.U_a, cell.b_a, c_n, lengths)


def _piece(cfg: Config, chunk: int, i, x, lengths):
    """Piece i of x (B, chunk, k) and its lengths, clipped to 0..chunk."""
    t0 = i * chunk
    return jax.lax.dynamic_slice_in_dim(x, t0, chunk, axis=1), jnp.clip(lengths - t0, 0, chunk)


def _pieces_forward(cfg: Config, chunk: int, x, h0, c0, W, U, b, c_n, lengths):
    """y (B, T, p) written piece by piece in place, (hT, cT), and the state at the start of every piece."""
    B, T, _ = x.shape
    y = jnp.zeros((B, T, h0.shape[-1]), jnp.float32)

    def body(carry, i):
        y, h, c = carry
        x_i, L = _piece(cfg, chunk, i, x, lengths)
        y_i, h_next, c_next = engine.fused(cfg, x_i, h, c, W, U, b, c_n, L)
        return (jax.lax.dynamic_update_slice_in_dim(y, y_i, i * chunk, axis=1), h_next, c_next), (h, c)

    (y, hT, cT), starts = jax.lax.scan(body, (y, h0, c0), jnp.arange(T // chunk), reverse=cfg.reverse)
    return y, hT, cT, starts


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _pieces(cfg: Config, chunk: int, x, h0, c0, W, U, b, c_n, lengths):
    """oneDNN over T/chunk pieces with rematerialisation: the forward keeps only the state at the start
    of each piece (not y, not the gates), and the backward runs the pieces last to first, each forward
    again from its start and then backward. Memory grows with T/chunk + chunk instead of T, and y can be
    freed as soon as the loss has read it."""
    y, hT, cT, _ = _pieces_forward(cfg, chunk, x, h0, c0, W, U, b, c_n, lengths)
    return y, hT, cT


def _pieces_fwd(cfg: Config, chunk: int, x, h0, c0, W, U, b, c_n, lengths):
    y, hT, cT, starts = _pieces_forward(cfg, chunk, x, h0, c0, W, U, b, c_n, lengths)
    return (y, hT, cT), (x, starts, W, U, b, c_n, lengths)


def _pieces_bwd(cfg: Config, chunk: int, res, cotangents):
    x, (hs, cs), W, U, b, c_n, lengths = res
    dy, dhT, dcT = cotangents
    weights = (W, U, b, c_n)

    def body(carry, i):
        dh, dc, dweights = carry
        x_i, L = _piece(cfg, chunk, i, x, lengths)
        dy_i = jax.lax.dynamic_slice_in_dim(dy, i * chunk, chunk, axis=1)
        run = lambda x_i, h, c, *w: engine.fused(cfg, x_i, h, c, *w, L)  # noqa: E731
        _, vjp = jax.vjp(run, x_i, hs[i], cs[i], *weights)
        dx_i, dh, dc, *dw = vjp((dy_i, dh, dc))
        return (dh, dc, jax.tree.map(jnp.add, dweights, tuple(dw))), dx_i

    zeros = tuple(jnp.zeros_like(w) for w in weights)
    n = x.shape[1] // chunk
    (dh0, dc0, dweights), dxs = jax.lax.scan(body, (dhT, dcT, zeros), jnp.arange(n), reverse=not cfg.reverse)
    B, T, k = x.shape
    dx = jnp.swapaxes(dxs, 0, 1).reshape(B, T, k)
    return (dx, dh0, dc0, *dweights, None)


_pieces.defvjp(_pieces_fwd, _pieces_bwd)


def sequence(
    cell: Cell,
    x: Float[Array, "B T k"],
    lengths: Int[Array, " B"] | None,
    state_0: PyTree,
    *,
    reverse: bool = False,
    chunk: int | None = None,
) -> tuple[Float[Array, "B T p"], PyTree]:
    """(a (B, T, p), state_T) as `Recurrent` gives them, on the engine. `chunk` rematerialises: where it does
    not divide T, x is padded to whole pieces, the steps past T run as past a shorter sequence's end."""
    from rnnlab.layers import reverse_within

    B, T, _ = x.shape
    h0, c0 = _unpack(cell, state_0)
    pad = 0 if chunk is None or chunk >= T else -(-T // chunk) * chunk - T
    masked = lengths is not None or pad > 0
    cfg = config(cell, reverse=reverse and not masked, masked=masked and isinstance(cell, LSTM))
    if cfg is None:
        raise ValueError(f"the fused engine does not run {type(cell).__name__} with these settings")
    L = jnp.full((B,), T, jnp.int32) if lengths is None else jnp.asarray(lengths, jnp.int32)
    if masked and reverse:
        x = jax.vmap(reverse_within)(x, L)
    if chunk is not None and chunk < T:
        if pad:
            x = jnp.pad(x, ((0, 0), (0, pad), (0, 0)))
        y, hT, cT = _chunks(cfg, cell, x, h0, c0, L, chunk)
        if pad:
            y = y[:, :T]
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
