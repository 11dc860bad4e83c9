"""AdamW and the moving average of the weights, with the embedding E updated only where a batch reads it.

Dense leaves (the layers, the head), step s = 0, 1, ... with gradient g and rate lr_s:

    m <- b1·m + (1 - b1)·g          v <- b2·v + (1 - b2)·g²
    p <- p - lr_s·(m̂ / (√v̂ + eps) + wd·p)      m̂ = m / (1 - b1^(s+1)),  v̂ = v / (1 - b2^(s+1))

which is `optax.adamw` (b1 0.9, b2 0.999, eps 1e-8). The table E (V, k) follows the same rule on the rows
the batch reads (its token ids) and leaves every other row as it is: its weight, m and v. Dense AdamW would
also shrink such a row's m by b1 and its v by b2, and decay its weight by lr_s·wd (its update m̂/(√v̂ + eps)
is not zero either while m is not). This is "lazy" Adam: identical to the dense update wherever a row is
read, and an update proportional to the rows a batch touches (a few hundred of V) instead of to V.

The moving average ema <- d_s·ema + (1 - d_s)·p runs in the same step. For E it is lazy too, and exact: a
row left alone since step r has kept its weight p, so after steps r+1..s its average is
p + (ema_r - p)·Π d, the product kept as a running sum of log d (`EMAState`); `ema_rows_read` gives the
whole table's average at any step, equal to the dense average of the same weights.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, Int, PyTree


class Hyper(NamedTuple):
    """AdamW's constants (static: one compiled step per set)."""

    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 1e-4


class AdamWState(NamedTuple):
    """count: steps taken (int32 scalar); m, v: first and second moments, shaped like the parameters."""

    count: Int[Array, ""]
    m: PyTree
    v: PyTree


class EMAState(NamedTuple):
    """log_decay: Σ_s log d_s over the steps taken; row_log_decay: per table, (V,) the value of log_decay
    when each row's average was last brought up to date."""

    log_decay: Float[Array, ""]
    row_log_decay: tuple


def adamw_init(params: PyTree) -> AdamWState:
    """Zero moments shaped like `params` (None leaves stay None)."""
    zeros = jax.tree.map(jnp.zeros_like, params)
    return AdamWState(jnp.zeros((), jnp.int32), zeros, jax.tree.map(jnp.zeros_like, params))


def ema_init(tables: tuple) -> EMAState:
    """No steps yet: every row's average is up to date."""
    return EMAState(jnp.zeros((), jnp.float32),
                    tuple(None if E is None else jnp.zeros(E.shape[0], jnp.float32) for E in tables))


def _corrections(count: Int[Array, ""], hyper: Hyper) -> tuple[Array, Array]:
    t = (count + 1).astype(jnp.float32)
    return 1 - hyper.b1**t, 1 - hyper.b2**t


def adamw_dense(p: Array, g: Array, m: Array, v: Array, lr: Float[ArrayLike, ""], count: Int[Array, ""], hyper: Hyper,
                scale: float = 1.0) -> tuple[Array, Array, Array]:
    """One AdamW step of one array: (p, m, v) after it; `scale` multiplies the step (a relative rate)."""
    c1, c2 = _corrections(count, hyper)
    m = hyper.b1 * m + (1 - hyper.b1) * g
    v = hyper.b2 * v + (1 - hyper.b2) * g * g
    step = (m / c1) / (jnp.sqrt(v / c2) + hyper.eps) + hyper.weight_decay * p
    return p - (lr * scale) * step, m, v


def unique_rows(tokens: Int[Array, "..."], V: int) -> tuple[Int[Array, " n"], Int[Array, " n"]]:
    """(rows, inverse): the distinct ids among the n = tokens.size ids, filled up to n with V (no row), and
    for each id its place in `rows`, so that `segment_sum(g, inverse, n)` sums the gradients of each row."""
    ids = tokens.reshape(-1)
    rows, inverse = jnp.unique(ids, size=ids.size, fill_value=V, return_inverse=True)
    return rows, inverse.reshape(-1)


def row_gradients(g_x: Float[Array, "n k"], inverse: Int[Array, " n"]) -> Float[Array, "n k"]:
    """The gradient of E's distinct rows from the gradients of its n lookups x = E[ids] (rows in the order
    of `unique_rows`; filler rows get zero)."""
    return jax.ops.segment_sum(g_x, inverse, num_segments=g_x.shape[0])


def adamw_rows(
    E: Float[Array, "V k"], m: Float[Array, "V k"], v: Float[Array, "V k"], rows: Int[Array, " n"],
    g_rows: Float[Array, "n k"], lr: Float[ArrayLike, ""], count: Int[Array, ""], hyper: Hyper, scale: float = 1.0,
) -> tuple[Array, Array, Array]:
    """AdamW on E's `rows` only (ids >= V are filler and ignored): (E, m, v) after the step."""
    take = lambda a: a.at[rows].get(mode="fill", fill_value=0.0)  # noqa: E731
    p_r, m_r, v_r = adamw_dense(take(E), g_rows, take(m), take(v), lr, count, hyper, scale)
    put = lambda a, r: a.at[rows].set(r, mode="drop", unique_indices=True)  # noqa: E731
    return put(E, p_r), put(m, m_r), put(v, v_r)


def ema_decay(decay: float, step: Int[Array, ""]) -> Array:
    """d_s = min(decay, (1 + s) / (10 + s)): early averages do not dwell on the initial weights."""
    s = step.astype(jnp.float32)
    return jnp.minimum(decay, (1.0 + s) / (10.0 + s))


def ema_dense(ema: Array, p: Array, d: Float[ArrayLike, ""]) -> Array:
    """ema <- d·ema + (1 - d)·p."""
    return d * ema + (1 - d) * p


def ema_rows(
    ema: Float[Array, "V k"], row_log: Float[Array, " V"], log_decay: Float[Array, ""],
    E_before: Float[Array, "V k"], E_after: Float[Array, "V k"], rows: Int[Array, " n"], d: Float[ArrayLike, ""],
) -> tuple[Array, Array]:
    """The average of E's `rows` brought up to date (over the steps they were left alone, at their weight
    E_before) and then stepped with d toward E_after; `log_decay` is the sum of log d before this step.
    Returns (ema, row_log) after it."""
    take = lambda a: a.at[rows].get(mode="fill", fill_value=0.0)  # noqa: E731
    p_old = take(E_before)
    lag = jnp.exp(log_decay - row_log.at[rows].get(mode="fill", fill_value=0.0))[:, None]
    e_r = ema_dense(p_old + (take(ema) - p_old) * lag, take(E_after), d)
    ema = ema.at[rows].set(e_r, mode="drop", unique_indices=True)
    row_log = row_log.at[rows].set(log_decay + jnp.log(d), mode="drop", unique_indices=True)
    return ema, row_log


def ema_rows_read(ema: Float[Array, "V k"], row_log: Float[Array, " V"], log_decay: Float[Array, ""],
                  E: Float[Array, "V k"]) -> Float[Array, "V k"]:
    """The whole table's average now: each row's lazy average brought up to date at its (unchanged) weight."""
    return E + (ema - E) * jnp.exp(log_decay - row_log)[:, None]


def global_norm(trees: PyTree) -> Array:
    """sqrt(Σ g²) over every array leaf."""
    leaves = [x for x in jax.tree.leaves(trees) if x is not None]
    return jnp.sqrt(sum(jnp.sum(x * x) for x in leaves))


def clip_scale(norm: Array, max_norm: float) -> Array:
    """The factor that brings a gradient of global norm `norm` down to `max_norm` (1 when under it)."""
    return jnp.minimum(1.0, max_norm / jnp.maximum(norm, 1e-12))
