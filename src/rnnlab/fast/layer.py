"""A `Recurrent` layer over a batch on the fused engine, with what the engine leaves out: lengths, and
rematerialisation for long sequences on oneDNN (the kernel does its own: `engine.fused(..., chunk=C)`).

Which path a layer takes is decided here: `uses_engine(engine, cell, x)` for `Recurrent(engine=...)`
("auto": the engine where it runs and RNNLAB_FAST is not 0, else the scan; "scan"; "fused": the engine, or
a ValueError saying why it cannot run), and which engine runs a cell in `config` (the kernel, or oneDNN's
primitives for the GRU without reset_after or with RNNLAB_FAST_ENGINE=onednn). `bag_on_engine` says the
same of a model's subword mean (`engine.bag`), which follows its layers' choice.

With lengths L (B,), every sequence runs all T steps inside the engine; around it, a_t is zeroed for t >= L,
a_T is gathered at t = L (a_0 where L = 0), and an LSTM's c_T comes from the engine's masked mode. The
reverse direction reads each sequence reversed within its own length, runs forwards, and puts the outputs
back in time order: inside the kernel (`Config.within`: Elman and the GRU with reset_after, whole
sequences), else around it (`padding.reverse_within`).
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
from rnnlab.padding import reverse_within, valid_steps

ENGINES = ("auto", "scan", "fused")


def enabled() -> bool:
    """The fused path is on unless RNNLAB_FAST=0 (or the engine is not built, or the backend is not CPU)."""
    return (os.environ.get("RNNLAB_FAST", "1") != "0" and engine.available()
            and jax.default_backend() == "cpu")


def config(cell: Cell, reverse: bool = False, masked: bool = False) -> Config | None:
    """The engine's configuration for a cell, or None where the engine does not run it (then: the scan).

    The one place that picks the kernel or oneDNN: the kernel runs Elman, the GRU with reset_after and the
    LSTM; oneDNN the GRU without reset_after, and every cell with RNNLAB_FAST_ENGINE=onednn.
    """
    if type(cell) not in (Elman, GRU, LSTM) or cell.W_a.dtype != jnp.float32:
        return None
    kernel = os.environ.get("RNNLAB_FAST_ENGINE", "kernel") != "onednn"
    if type(cell) is Elman:
        act = engine.ACTIVATIONS.get(activation_name(cell.activation))
        return None if act is None else Config(engine.ELMAN, act, reverse, False, kernel)
    if type(cell) is GRU:
        if cell.reset_after:
            return Config(engine.GRU_RESET_AFTER, 0, reverse, False, kernel)
        return Config(engine.GRU, 0, reverse, False, False)
    if type(cell) is LSTM:
        return Config(engine.LSTM, 0, reverse, masked, kernel)
    return None


def why_not(cell: Cell, x: Array | None = None) -> str | None:
    """Why the fused path cannot run this cell (on x, a batch (B, T, k) or one sequence (T, k)), or None
    where it can. RNNLAB_FAST plays no part: it only sets what "auto" picks."""
    if not engine.available():
        return f"the fused engine is not built ({engine.LOAD_ERROR})"
    if jax.default_backend() != "cpu":
        return f"the fused engine runs on the CPU; JAX's backend is {jax.default_backend()}"
    if type(cell) not in (Elman, GRU, LSTM):
        return f"the fused engine runs Elman, GRU and LSTM cells; got {type(cell).__name__}"
    if cell.W_a.dtype != jnp.float32:
        return f"the fused engine runs float32 weights; got W_a of {cell.W_a.dtype}"
    if config(cell) is None:
        return (f"the fused engine runs Elman with tanh, relu or sigmoid; got "
                f"{activation_name(cell.activation)!r}")
    if x is not None and x.dtype != jnp.float32:
        return f"the fused engine runs float32 inputs; got x of {x.dtype}"
    if x is not None and min(x.shape) == 0:
        return f"the fused engine needs B, T and k of at least 1; got x of shape {tuple(x.shape)}"
    return None


def applies(cell: Cell, x: Array) -> bool:
    """True where engine="auto" runs x (B, T, k) on the engine rather than the scan."""
    return x.ndim == 3 and enabled() and why_not(cell, x) is None


def uses_engine(choice: str, cell: Cell, x: Array) -> bool:
    """True where `Recurrent(engine=choice)` runs x on the engine, False for the scan: "auto" as `applies`
    (batches only), "scan" never, "fused" always, raising ValueError (why) where the engine cannot run."""
    if choice == "auto":
        return applies(cell, x)
    if choice == "scan":
        return False
    if choice != "fused":
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}; got {choice!r}")
    reason = why_not(cell, x)
    if reason is not None:
        raise ValueError(f'engine="fused": {reason} (engine="auto" falls back to the scan)')
    return True


def bag_on_engine(choice: str, cell: Cell, H: Array) -> bool:
    """True where a model whose layers (of `cell`) were given `engine=choice` takes the subword mean of x_t
    from the engine (`engine.bag`), False for JAX's gather: "auto" where the engine is enabled and runs
    the cell (a model all in JAX stays all in JAX), "scan" never, "fused" always (a ValueError where the
    engine is not there); H float32 either way."""
    if choice == "scan" or H.dtype != jnp.float32:
        return False
    if choice == "auto":
        return enabled() and why_not(cell) is None
    if not engine.available() or jax.default_backend() != "cpu":
        raise ValueError('engine="fused": the subword mean runs on the CPU engine, which is not here '
                         '(engine="auto" falls back to JAX)')
    return True


def _unpack(cell: Cell, state: PyTree) -> tuple[Array, Array]:
    if isinstance(cell, LSTM):
        return state
    return state, jnp.zeros((1,), jnp.float32)


def _c_n(cell: Cell) -> Array:
    """The GRU's c_n, or the (1,) placeholder the engine takes where a cell has none."""
    return cell.c_n if getattr(cell, "c_n", None) is not None else jnp.zeros((1,), jnp.float32)


def _chunks(cfg: Config, cell: Cell, x, a0, c0, lengths, chunk: int):
    """The engine over T/chunk pieces (x padded to whole pieces by `sequence`), rematerialised: inside the
    kernel (`engine.fused(chunk=...)`), or on oneDNN piece by piece from here (`_pieces`)."""
    if cfg.kernel:
        return engine.fused(cfg, x, a0, c0, cell.W_a, cell.U_a, cell.b_a, _c_n(cell), lengths, chunk=chunk)
    return _pieces(cfg, chunk, x, a0, c0, cell.W_a, cell.U_a, cell.b_a, _c_n(cell), lengths)


def _piece(cfg: Config, chunk: int, i, x, lengths):
    """Piece i of x (B, chunk, k) and its lengths, clipped to 0..chunk."""
    t0 = i * chunk
    return jax.lax.dynamic_slice_in_dim(x, t0, chunk, axis=1), jnp.clip(lengths - t0, 0, chunk)


def _pieces_forward(cfg: Config, chunk: int, x, a0, c0, W, U, b, c_n, lengths):
    """a (B, T, p) written piece by piece in place, (a_T, c_T), and the state at the start of every piece."""
    B, T, _ = x.shape
    a = jnp.zeros((B, T, a0.shape[-1]), jnp.float32)

    def body(carry, i):
        a, a_prev, c_prev = carry
        x_i, L = _piece(cfg, chunk, i, x, lengths)
        a_i, a_next, c_next = engine.fused(cfg, x_i, a_prev, c_prev, W, U, b, c_n, L)
        return (jax.lax.dynamic_update_slice_in_dim(a, a_i, i * chunk, axis=1), a_next, c_next), (a_prev, c_prev)

    (a, aT, cT), starts = jax.lax.scan(body, (a, a0, c0), jnp.arange(T // chunk), reverse=cfg.reverse)
    return a, aT, cT, starts


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _pieces(cfg: Config, chunk: int, x, a0, c0, W, U, b, c_n, lengths):
    """oneDNN over T/chunk pieces with rematerialisation: the forward keeps only the state at the start
    of each piece (not a, not the gates), and the backward runs the pieces last to first, each forward
    again from its start and then backward. Memory grows with T/chunk + chunk instead of T, and a can be
    freed as soon as the loss has read it."""
    a, aT, cT, _ = _pieces_forward(cfg, chunk, x, a0, c0, W, U, b, c_n, lengths)
    return a, aT, cT


def _pieces_fwd(cfg: Config, chunk: int, x, a0, c0, W, U, b, c_n, lengths):
    a, aT, cT, starts = _pieces_forward(cfg, chunk, x, a0, c0, W, U, b, c_n, lengths)
    return (a, aT, cT), (x, starts, W, U, b, c_n, lengths)


def _pieces_bwd(cfg: Config, chunk: int, res, cotangents):
    x, (a_starts, c_starts), W, U, b, c_n, lengths = res
    da, daT, dcT = cotangents
    weights = (W, U, b, c_n)

    def body(carry, i):
        da_next, dc_next, dweights = carry
        x_i, L = _piece(cfg, chunk, i, x, lengths)
        da_i = jax.lax.dynamic_slice_in_dim(da, i * chunk, chunk, axis=1)
        run = lambda x_i, a_prev, c_prev, *w: engine.fused(cfg, x_i, a_prev, c_prev, *w, L)  # noqa: E731
        _, vjp = jax.vjp(run, x_i, a_starts[i], c_starts[i], *weights)
        dx_i, da_prev, dc_prev, *dw = vjp((da_i, da_next, dc_next))
        return (da_prev, dc_prev, jax.tree.map(jnp.add, dweights, tuple(dw))), dx_i

    zeros = tuple(jnp.zeros_like(w) for w in weights)
    n = x.shape[1] // chunk
    (da0, dc0, dweights), dxs = jax.lax.scan(body, (daT, dcT, zeros), jnp.arange(n), reverse=not cfg.reverse)
    B, T, k = x.shape
    dx = jnp.swapaxes(dxs, 0, 1).reshape(B, T, k)
    return (dx, da0, dc0, *dweights, None)


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
    B, T, _ = x.shape
    a0, c0 = _unpack(cell, state_0)
    pad = 0 if chunk is None or chunk >= T else -(-T // chunk) * chunk - T
    masked = lengths is not None or pad > 0
    cfg = config(cell, reverse=reverse and not masked, masked=masked and isinstance(cell, LSTM))
    if cfg is None:
        raise ValueError(f"the fused engine does not run {type(cell).__name__} with these settings")
    L = jnp.full((B,), T, jnp.int32) if lengths is None else jnp.asarray(lengths, jnp.int32)
    # the kernel reads each sequence reversed within its length itself (its cells but the LSTM; whole sequences)
    within = masked and reverse and cfg.kernel and not isinstance(cell, LSTM) and (chunk is None or chunk >= T)
    if within:
        cfg = cfg._replace(within=True)
    elif masked and reverse:
        x = jax.vmap(reverse_within)(x, L)
    if chunk is not None and chunk < T:
        if pad:
            x = jnp.pad(x, ((0, 0), (0, pad), (0, 0)))
        a, aT, cT = _chunks(cfg, cell, x, a0, c0, L, chunk)
        if pad:
            a = a[:, :T]
    else:
        a, aT, cT = engine.fused(cfg, x, a0, c0, cell.W_a, cell.U_a, cell.b_a, _c_n(cell), L)
    if masked:
        a = jnp.where(valid_steps(L, T)[..., None], a, 0.0)
        last = a[:, 0] if within else jnp.take_along_axis(a, jnp.clip(L - 1, 0, T - 1)[:, None, None], axis=1)[:, 0]
        aT = jnp.where((L > 0)[:, None], last, a0)
        if reverse and not within:
            a = jax.vmap(reverse_within)(a, L)
    return a, ((aT, cT) if isinstance(cell, LSTM) else aT)
