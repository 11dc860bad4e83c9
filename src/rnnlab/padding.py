"""Padded batches: the rules every path (the scan, the fused engine, pooling) applies to steps past a
sequence's length L.

    valid_steps(lengths, T)       (B, T) True where t < L: the steps a sequence has
    reverse_within(x, L)          x_L, ..., x_1, then the padding where it was: how the backward direction
                                  reads a padded sequence (its own inverse)

It imports nothing of rnnlab's, so that the layers and the fused path both build on it.
"""

from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import Array, Bool, Int, Shaped


def valid_steps(lengths: Int[Array, " B"], T: int) -> Bool[Array, "B T"]:
    """True at step t of sequence n where t < lengths[n] (steps counted from 0)."""
    return jnp.arange(T)[None, :] < jnp.asarray(lengths)[:, None]


def reverse_within(x: Shaped[Array, "T ..."], length: Int[Array, ""] | None) -> Shaped[Array, "T ..."]:
    """x with its first `length` steps in reverse order and the padding left where it is.

    This is how the backward direction reads a padded sequence: x_L, ..., x_1, then padding. It is its own
    inverse, so the same call puts the backward outputs back in time order.
    """
    if length is None:
        return jnp.flip(x, axis=0)
    t = jnp.arange(x.shape[0])
    return x[jnp.where(t < length, length - 1 - t, t)]
