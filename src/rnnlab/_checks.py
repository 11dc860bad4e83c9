"""Input checks that explain themselves in the equations' terms (T timesteps, k features, B sequences)."""

from __future__ import annotations

import jax
import numpy as np


class ShapeError(ValueError):
    """An array whose shape does not fit the layer: the message names expected and received shapes."""


def is_concrete(x) -> bool:
    """True when x holds values now (not a tracer inside jit/grad/vmap), so its values can be checked."""
    return not isinstance(x, jax.core.Tracer)


def check_sequence(x, k: int, name: str = "x") -> None:
    """x must be (T, k) for one sequence or (B, T, k) for a batch; T >= 1."""
    shape = tuple(x.shape)
    if len(shape) not in (2, 3) or shape[-1] != k:
        why = (f"the layer was built for k={k} features per timestep" if len(shape) in (2, 3)
               else f"{len(shape)} dimensions where 2 or 3 were expected")
        raise ShapeError(f"expected {name} of shape (T, k={k}) or (B, T, k={k}); got {shape}: {why}")
    if shape[-2] == 0:
        raise ShapeError(f"expected {name} with at least one timestep (T >= 1); got shape {shape}: an empty sequence")
    if is_concrete(x) and not np.isfinite(np.asarray(x)).all():
        bad = np.argwhere(~np.isfinite(np.asarray(x)))[0]
        raise ValueError(f"{name} holds NaN or inf values, first at index {tuple(int(i) for i in bad)}")


def check_lengths(lengths, x_shape: tuple[int, ...], name: str = "lengths") -> None:
    """lengths must be (B,) for x (B, T, k), a scalar for x (T, k), and every length within 1..T."""
    batch = x_shape[:-2]
    T = x_shape[-2]
    got = tuple(np.shape(lengths))
    if got != batch:
        expected = f"({batch[0]},), one length per sequence" if batch else "a scalar, the sequence's length"
        raise ShapeError(f"expected {name} of shape {expected} for x of shape {x_shape}; got shape {got}")
    if is_concrete(lengths):
        values = np.asarray(lengths)
        if not np.issubdtype(values.dtype, np.integer):
            raise TypeError(f"{name} must hold integers; got dtype {values.dtype}")
        bad = np.flatnonzero((values.reshape(-1) < 1) | (values.reshape(-1) > T))
        if bad.size:
            i = int(bad[0])
            raise ValueError(
                f"{name}[{i}] = {int(values.reshape(-1)[i])} is outside 1..T={T}: every sequence needs at "
                f"least one timestep and at most the padded length T")


def check_vector(v, size: int, name: str, batch: tuple[int, ...] = ()) -> None:
    """v must be (size,) or (*batch, size)."""
    shape = tuple(np.shape(v))
    if shape not in ((size,), (*batch, size)):
        alt = f" or {(*batch, size)}" if batch else ""
        raise ShapeError(f"expected {name} of shape ({size},){alt}; got {shape}")
