"""The compiled engine: one recurrent layer over a whole batch, forward and backward, in C++.

`fused(cfg, x, a0, c0, W_a, U_a, b_a, c_n, lengths)` is an XLA FFI custom call wrapped in `jax.custom_vjp`:

    x (B, T, k), a0 and c0 (B, p), W_a (G·p, k), U_a (G·p, p), b_a (G·p,), c_n (p,), lengths (B,) int32
    -> a (B, T, p) every a_t, aT (B, p) the last a_t, cT (B, p) the last c_t (LSTM)

without lengths handling: every sequence runs all T steps (`layer.py` masks and gathers around it). With
`cfg.masked` an LSTM keeps c_t fixed after each sequence's end, so cT is c at that end. Arrays a cell does
not have (c0 for Elman and GRU, c_n without reset_after) are passed as (1,) placeholders.

Two engines sit behind the calls: the hand-written kernel (`kernel.cc`: Elman, the GRU with reset_after,
the LSTM) and oneDNN's RNN primitives (`plan.cc`: the GRU without reset_after, or every cell with
RNNLAB_FAST_ENGINE=onednn); `cfg.kernel` says which, chosen once, by `layer.config`. The kernel's backward
computes dx = dgates W_a (dgates: the gate gradients as W_a sees them, kept in its pool) only where x is
perturbed: the `custom_vjp` has symbolic zeros, so its forward rule knows, and tells the backward through
the residuals' structure.

`fused(..., chunk=C)` is the same layer rematerialised inside the kernel, for long sequences: a forward
that keeps only the state at each piece's start and a backward that runs each piece again.

`bag(H, g)` is the subword part of x_t (`bag.cc`), differentiable in H: the mean of H's rows g of each
position's n-grams, without the (n, G, k) rows a gather would hold and scatter back.
"""

from __future__ import annotations

import ctypes
import functools
import importlib.util
import os
import sys
import warnings
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.custom_derivatives import CustomVJPPrimal, SymbolicZero
from jaxtyping import Array, Float, Int

ELMAN, GRU, GRU_RESET_AFTER, LSTM = 0, 1, 2, 3
ACTIVATIONS = {"tanh": 0, "relu": 1, "sigmoid": 2}


class Config(NamedTuple):
    """What the engine compiles for: cell (ELMAN, GRU, GRU_RESET_AFTER, LSTM), activation (Elman only),
    reverse (run t = T..1), masked (an LSTM with lengths: c_t stays fixed after each sequence's end),
    kernel (the hand-written kernel runs it; False: oneDNN's primitives), within (on the kernel, Elman and
    the GRU with reset_after, whole sequences: each sequence n read reversed within its length L_n, step t
    reading x at L_n - 1 - t and writing a there; steps t >= L_n read and write position t)."""

    cell: int
    act: int = 0
    reverse: bool = False
    masked: bool = False
    kernel: bool = True
    within: bool = False


def _load() -> ctypes.CDLL:
    # oneDNN from the onednn-cpu-gomp wheel lives in the environment's lib/ (found by RPATH too).
    dnnl = os.path.join(sys.prefix, "lib", "libdnnl.so.3")
    if os.path.exists(dnnl):
        ctypes.CDLL(dnnl, mode=ctypes.RTLD_GLOBAL)
    path = os.environ.get("RNNLAB_ENGINE")
    if not path:
        spec = importlib.util.find_spec("rnnlab.fast._engine")
        if spec is None or spec.origin is None:
            raise ImportError("rnnlab.fast._engine is not built: reinstall with `pip install -e .` (CMake, oneDNN)")
        path = spec.origin
    lib = ctypes.CDLL(path)
    lib.rnnlab_sizes.restype = ctypes.c_int
    lib.rnnlab_scratch_bytes.restype = ctypes.c_int64
    handlers = (("rnnlab_forward", lib.RnnlabForward), ("rnnlab_backward", lib.RnnlabBackward),
                ("rnnlab_kernel_backward", lib.RnnlabKernelBackward),
                ("rnnlab_pieces_forward", lib.RnnlabPiecesForward),
                ("rnnlab_pieces_forward_a", lib.RnnlabPiecesForwardA),
                ("rnnlab_pieces_backward", lib.RnnlabPiecesBackward), ("rnnlab_step", lib.RnnlabStep),
                ("rnnlab_bag_forward", lib.RnnlabBagForward), ("rnnlab_bag_backward", lib.RnnlabBagBackward))
    for name, handler in handlers:
        jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(handler), platform="cpu")
    return lib


try:
    _LIB: ctypes.CDLL | None = _load()
    LOAD_ERROR: str | None = None
except (ImportError, OSError, AttributeError) as e:
    _LIB, LOAD_ERROR = None, f"{type(e).__name__}: {e}"


def available() -> bool:
    """True when the compiled engine loaded."""
    return _LIB is not None


def lstm_registers_width() -> int:
    """The vector width in floats of the LSTM's in-register step, which runs the LSTM's forward where its
    steps are split over threads: 16 where this CPU has AVX-512, 8 with AVX2 and FMA, 0 where neither (or
    the engine is not built)."""
    return 0 if _LIB is None else int(_LIB.rnnlab_lstm_registers_width())


def scratch_bytes() -> int:
    """Bytes held by the kernel's pool of temporaries: kept between calls, outside XLA's buffers."""
    if _LIB is None:
        return 0
    return int(_LIB.rnnlab_scratch_bytes())


@functools.cache
def sizes(cfg: Config, B: int, T: int, k: int, p: int) -> tuple[int, int, int, int]:
    """Bytes of (workspace, training scratchpad, inference scratchpad, backward scratchpad) for a shape on
    the engine `cfg.kernel` names (the kernel's temporaries come from its own pool: 0).

    On oneDNN, builds and caches the primitives for that shape; raises ValueError where the engine refuses it.
    """
    if _LIB is None:
        raise RuntimeError(f"the fused engine is not available ({LOAD_ERROR})")
    out = (ctypes.c_int64 * 4)()
    err = ctypes.create_string_buffer(512)
    rc = _LIB.rnnlab_sizes(cfg.cell, cfg.act, int(cfg.reverse), int(cfg.masked), int(cfg.kernel), B, T, k, p,
                           out, err, 512)
    if rc != 0:
        engine = "the kernel" if cfg.kernel else "oneDNN"
        raise ValueError(f"{engine} refused {cfg} at B={B}, T={T}, k={k}, p={p}: {err.value.decode()}")
    return tuple(int(v) for v in out)


def _attrs(cfg: Config) -> dict:
    return dict(cell=np.int32(cfg.cell), act=np.int32(cfg.act), reverse=np.int32(cfg.reverse),
                masked=np.int32(cfg.masked), kernel=np.int32(cfg.kernel), within=np.int32(cfg.within))


def _forward(cfg: Config, train: bool, *args):
    x, a0, c0 = args[:3]
    B, T, k = x.shape
    p = a0.shape[-1]
    ws, train_scratch, infer_scratch, _ = sizes(cfg, B, T, k, p)
    f32 = jnp.float32
    out = (jax.ShapeDtypeStruct((B, T, p), f32), jax.ShapeDtypeStruct((B, p), f32),
           jax.ShapeDtypeStruct(c0.shape, f32),
           jax.ShapeDtypeStruct((max(ws, 1) if train else 1,), jnp.uint8),
           jax.ShapeDtypeStruct((max(train_scratch if train else infer_scratch, 1),), jnp.uint8))
    call = jax.ffi.ffi_call("rnnlab_forward", out, vmap_method="sequential")
    a, aT, cT, workspace, _ = call(*args, **_attrs(cfg), train=np.int32(train))
    return a, aT, cT, workspace


def on_kernel(cfg: Config, B: int, T: int, k: int, p: int) -> bool:
    """Deprecated: `cfg.kernel` says whether the hand-written kernel runs a layer (`layer.config` decides)."""
    warnings.warn("rnnlab.fast.engine.on_kernel is deprecated: read cfg.kernel", DeprecationWarning, stacklevel=2)
    return cfg.kernel


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _fused(cfg: Config, x, a0, c0, W, U, b, c_n, lengths):
    a, aT, cT, _ = _forward(cfg, False, x, a0, c0, W, U, b, c_n, lengths)
    return a, aT, cT


def _fused_fwd(cfg: Config, *primals: CustomVJPPrimal):
    """The forward in training. With symbolic zeros, each primal says whether it is perturbed: where x is
    not (a batch of data, not of trainable embeddings), the backward leaves dx out."""
    args = tuple(v.value for v in primals)
    a, aT, cT, workspace = _forward(cfg, True, *args)
    if cfg.kernel:  # the kernel's backward reads neither a nor cT, so a can be freed (or overwritten by da)
        a_res, cT_res = None, None  # once the loss has read it
    else:
        a_res, cT_res = a, cT
    dx_wanted = () if primals[0].perturbed else None  # (static: told by the residuals' structure)
    return (a, aT, cT), (args, a_res, aT, cT_res, workspace, dx_wanted)


def _fused_bwd(cfg: Config, res, cotangents):
    args, a, aT, cT, workspace, dx_wanted = res
    da, daT, dcT = (jnp.zeros(c.shape, c.dtype) if isinstance(c, SymbolicZero) else c for c in cotangents)
    x, a0, c0, W, U, b, c_n, _ = args
    like = [jax.ShapeDtypeStruct(v.shape, jnp.float32) for v in (x, a0, c0, W, U, b, c_n)]
    if cfg.kernel:
        with_dx = dx_wanted is not None
        if not with_dx:
            like[0] = jax.ShapeDtypeStruct((1,), jnp.float32)
        call = jax.ffi.ffi_call("rnnlab_kernel_backward", like, vmap_method="sequential")
        grads = call(*args, workspace, da, daT, dcT, **_attrs(cfg), with_dx=np.int32(with_dx))
        dx = grads[0] if with_dx else None
        grads = (dx, *grads[1:])
    else:
        B, T, k = x.shape
        scratch = sizes(cfg, B, T, k, a0.shape[-1])[3]
        call = jax.ffi.ffi_call("rnnlab_backward", [*like, jax.ShapeDtypeStruct((max(scratch, 1),), jnp.uint8)],
                                vmap_method="sequential")
        grads = call(*args, a, aT, cT, workspace, da, daT, dcT, **_attrs(cfg))[:-1]
    return (*_zero_unused(cfg, tuple(grads)), None)


_fused.defvjp(_fused_fwd, _fused_bwd, symbolic_zeros=True)


def fused(
    cfg: Config,
    x: Float[Array, "B T k"],
    a0: Float[Array, "B p"],
    c0: Float[Array, "..."],
    W_a: Float[Array, "Gp k"],
    U_a: Float[Array, "Gp p"],
    b_a: Float[Array, " Gp"],
    c_n: Float[Array, " _"],
    lengths: Int[Array, " B"],
    *,
    chunk: int | None = None,
) -> tuple[Float[Array, "B T p"], Float[Array, "B p"], Float[Array, "..."]]:
    """One layer over a batch on the engine: (a (B, T, p), aT (B, p), cT), differentiable. See the module.

    `chunk` (where `cfg.kernel`) rematerialises in pieces of that many steps inside the kernel: the forward
    keeps the state at the start of every piece, (⌈T/chunk⌉, B, p), not the gates; the backward runs the
    pieces last to first, each forward again from its start and then backward, so that it holds one
    piece's workspace. It reads neither a nor anything of T·p floats but x and da: a can be freed, or its
    buffer reused for da, as soon as the loss has read it. dx is always computed (B·T·k floats).
    """
    lengths = lengths.astype(jnp.int32)
    if chunk is None:
        return _fused(cfg, x, a0, c0, W_a, U_a, b_a, c_n, lengths)
    if not cfg.kernel:
        raise ValueError("engine.fused(chunk=...) runs on the kernel; oneDNN's pieces are layer._pieces")
    return _fused_pieces(cfg, chunk, x, a0, c0, W_a, U_a, b_a, c_n, lengths)


def _zero_unused(cfg: Config, grads: tuple) -> tuple:
    """The gradients of c0 (not an LSTM) and c_n (not a GRU with reset_after) as zeros: placeholders."""
    dx, da0, dc0, dW, dU, db, dc_n = grads
    if cfg.cell != LSTM:
        dc0 = jnp.zeros_like(dc0)
    if cfg.cell != GRU_RESET_AFTER:
        dc_n = jnp.zeros_like(dc_n)
    return dx, da0, dc0, dW, dU, db, dc_n


def _pieces_forward(cfg: Config, chunk: int, x, a0, c0, W, U, b, c_n, lengths):
    B, T, _ = x.shape
    n = -(-T // chunk)
    f32 = jnp.float32
    out = (jax.ShapeDtypeStruct((B, T, a0.shape[-1]), f32), jax.ShapeDtypeStruct(a0.shape, f32),
           jax.ShapeDtypeStruct(c0.shape, f32), jax.ShapeDtypeStruct((n, *a0.shape), f32),
           jax.ShapeDtypeStruct((n, *a0.shape) if cfg.cell == LSTM else (1,), f32))
    call = jax.ffi.ffi_call("rnnlab_pieces_forward", out, vmap_method="sequential")
    return call(x, a0, c0, W, U, b, c_n, lengths, **_attrs(cfg), chunk=np.int32(chunk))


def _starts_from_a(cfg: Config, chunk: int, a, a0):
    """Elman and GRU: the state at the start of each piece, in the order the pieces run, read from a (their
    state is their output): a_{t0-1} before the piece starting at t0, or where reversed, the a_t after it."""
    T = a.shape[1]
    n = -(-T // chunk)
    at = [(n - i) * chunk for i in range(1, n)] if cfg.reverse else [i * chunk - 1 for i in range(1, n)]
    return jnp.concatenate([a0[None], jnp.swapaxes(a[:, jnp.array(at, jnp.int32)], 0, 1)])


def _pieces_and_starts(cfg: Config, chunk: int, x, a0, c0, W, U, b, c_n, lengths):
    """((a, aT, cT), (a_starts, c_starts)): the forward in pieces, which holds one piece's temporaries."""
    args = (x, a0, c0, W, U, b, c_n, lengths)
    if cfg.cell == LSTM:  # c_t is not in a: the kernel keeps it at every piece's start
        a, aT, cT, a_starts, c_starts = _pieces_forward(cfg, chunk, *args)
        return (a, aT, cT), (a_starts, c_starts)
    # a as a call's only result, so that XLA can put da in its buffer; the rest is read from a
    a = jax.ffi.ffi_call("rnnlab_pieces_forward_a", jax.ShapeDtypeStruct((*x.shape[:2], a0.shape[-1]), jnp.float32),
                         vmap_method="sequential")(*args, **_attrs(cfg), chunk=np.int32(chunk))
    aT = a[:, 0] if cfg.reverse else a[:, -1]
    return (a, aT, c0), (_starts_from_a(cfg, chunk, a, a0), jnp.zeros((1,), jnp.float32))


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _fused_pieces(cfg: Config, chunk: int, x, a0, c0, W, U, b, c_n, lengths):
    return _pieces_and_starts(cfg, chunk, x, a0, c0, W, U, b, c_n, lengths)[0]


def _fused_pieces_fwd(cfg: Config, chunk: int, x, a0, c0, W, U, b, c_n, lengths):
    args = (x, a0, c0, W, U, b, c_n, lengths)
    out, (a_starts, c_starts) = _pieces_and_starts(cfg, chunk, *args)
    return out, (args, a_starts, c_starts)


def _fused_pieces_bwd(cfg: Config, chunk: int, res, cotangents):
    args, a_starts, c_starts = res
    like = [jax.ShapeDtypeStruct(v.shape, jnp.float32) for v in args[:7]]
    call = jax.ffi.ffi_call("rnnlab_pieces_backward", like, vmap_method="sequential")
    grads = call(*args, a_starts, c_starts, *cotangents, **_attrs(cfg), chunk=np.int32(chunk))
    return (*_zero_unused(cfg, tuple(grads)), None)


_fused_pieces.defvjp(_fused_pieces_fwd, _fused_pieces_bwd)


@functools.cache
def raw_step() -> ctypes._CFuncPtr:
    """The engine's step as a C function (`rnnlab_step_raw` in step.cc), for `Stream`: arguments cell, act,
    B, k, p, then the addresses of x_t, a_{t-1}, c_{t-1}, W_aᵀ, U_aᵀ, b_a, c_n, a_t, c_t; returns 0."""
    if _LIB is None:
        raise RuntimeError(f"the fused engine is not available ({LOAD_ERROR})")
    fn = _LIB.rnnlab_step_raw
    fn.argtypes = [ctypes.c_int] * 5 + [ctypes.c_void_p] * 9
    fn.restype = ctypes.c_int
    return fn


def step(
    cfg: Config,
    x_t: Float[Array, "B k"],
    a_prev: Float[Array, "B p"],
    c_prev: Float[Array, "..."],
    W_aT: Float[Array, "k Gp"],
    U_aT: Float[Array, "p Gp"],
    b_a: Float[Array, " Gp"],
    c_n: Float[Array, " _"],
) -> tuple[Float[Array, "B p"], Float[Array, "..."]]:
    """One timestep on the engine (no gradient): (a_t (B, p), c_t) from x_t (B, k), a_{t-1} and c_{t-1}.

    The weights come transposed, W_aᵀ (k, G·p) and U_aᵀ (p, G·p): transpose them once, not per step.
    """
    out = (jax.ShapeDtypeStruct(a_prev.shape, jnp.float32), jax.ShapeDtypeStruct(c_prev.shape, jnp.float32))
    call = jax.ffi.ffi_call("rnnlab_step", out, vmap_method="sequential")
    return tuple(call(x_t, a_prev, c_prev, W_aT, U_aT, b_a, c_n, cell=np.int32(cfg.cell), act=np.int32(cfg.act)))


@jax.custom_vjp
def _bag(H, g):
    out = jax.ShapeDtypeStruct((*g.shape[:-1], H.shape[1]), jnp.float32)
    return jax.ffi.ffi_call("rnnlab_bag_forward", out, vmap_method="sequential")(H, g)


def _bag_fwd(H, g):
    return _bag(H, g), (H.shape, g)


def _bag_bwd(res, dx_H):
    shape, g = res
    call = jax.ffi.ffi_call("rnnlab_bag_backward", jax.ShapeDtypeStruct(shape, jnp.float32),
                            vmap_method="sequential")
    return call(dx_H.astype(jnp.float32), g), None


_bag.defvjp(_bag_fwd, _bag_bwd)


def bag(H: Float[Array, "N k"], g: Int[Array, "*n G"]) -> Float[Array, "*n k"]:
    """x_H[i] = (1 / max(n_i, 1)) Σ_s H[g[i, s]], the slots with 0 < g < N, n_i of them with g > 0 (0: an
    empty slot), at every position i of g's leading axes; differentiable in H (float32, on the engine)."""
    if g.ndim == 0 or H.ndim != 2 or H.dtype != jnp.float32:
        raise ValueError(f"engine.bag takes H (N, k) float32 and g (..., G) ids; got H {H.shape} {H.dtype}, "
                         f"g {g.shape}")
    return _bag(H, g.astype(jnp.int32))
