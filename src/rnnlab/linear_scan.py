"""The recurrence a_t = α_t ⊙ a_{t-1} + β_t for t = 1..T, where α_t and β_t do not depend on a_{t-1}.

Min cells (`MinGRU`, `MinLSTM`) reduce to it: their gates read x_t alone, so every (α_t, β_t) is known
before the loop starts, and two steps compose into one step of the same form:

    (α₂, β₂) ∘ (α₁, β₁) = (α₂ ⊙ α₁, α₂ ⊙ β₁ + β₂)        associative, so a prefix scan applies

    linear_scan(alpha, beta, a_0)                        # alpha, beta (T, ...), a_0 (...) -> a (T, ...)
    linear_scan(alpha, beta, a_0, "associative")         # jax.lax.associative_scan: ⌈log₂ T⌉ levels

`"sequential"` walks the T steps with `lax.scan` (T steps in order, one multiply-add each);
`"associative"` runs `jax.lax.associative_scan` over the pairs (depth ⌈log₂ T⌉, about twice the work).
Both compute the products and sums of the equation itself, in float32 as in float64: no logarithms, no
division. With 0 ≤ α_t ≤ 1 and β_t = (1 - α_t) ⊙ ã_t (as in both min cells), every a_t is a convex
combination of a_0 and the ã_s, so nothing grows: products of α only shrink (towards 0, where the term
they weigh no longer counts), and no large terms cancel.

The backward pass is the same recurrence run last step first, by the same method (`jax.custom_vjp`):

    G_T = ∂L/∂a_T,   G_t = ∂L/∂a_t + α_{t+1} ⊙ G_{t+1}
    ∂L/∂β_t = G_t,   ∂L/∂α_t = G_t ⊙ a_{t-1},   ∂L/∂a_0 = α_1 ⊙ G_1

so it keeps α and a (2·T values per unit), never the scan's intermediate levels.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

METHODS = ("sequential", "associative")


def compose(earlier: tuple[Array, Array], later: tuple[Array, Array]) -> tuple[Array, Array]:
    """Two steps as one: (α₂, β₂) ∘ (α₁, β₁) = (α₂ ⊙ α₁, α₂ ⊙ β₁ + β₂), (α₁, β₁) the earlier step."""
    alpha_1, beta_1 = earlier
    alpha_2, beta_2 = later
    return alpha_2 * alpha_1, alpha_2 * beta_1 + beta_2


def _run(alpha, beta, a_0, method: str):
    """a_1..a_T, forwards in time, by `method`."""
    if method == "associative":
        beta = beta.at[0].add(alpha[0] * a_0)  # a_1 = α_1 a_0 + β_1: a_0 folded into the first pair
        return jax.lax.associative_scan(compose, (alpha, beta))[1]

    def step(a_prev, pair):
        alpha_t, beta_t = pair
        a_t = alpha_t * a_prev + beta_t
        return a_t, a_t

    return jax.lax.scan(step, a_0, (alpha, beta))[1]


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _linear_scan(alpha, beta, a_0, method):
    return _run(alpha, beta, a_0, method)


def _forward(alpha, beta, a_0, method):
    a = _run(alpha, beta, a_0, method)
    return a, (alpha, a, a_0)


def _backward(method, residuals, g):
    alpha, a, a_0 = residuals
    # G_t = g_t + α_{t+1} G_{t+1}, read last step first: the forward recurrence over the flipped arrays,
    # with α' = (anything, α_T, ..., α_2) (the first multiplies G_{T+1} = 0).
    alpha_next = jnp.flip(jnp.concatenate([alpha[1:], jnp.ones_like(alpha[:1])]), axis=0)
    G = jnp.flip(_run(alpha_next, jnp.flip(g, axis=0), jnp.zeros_like(a_0), method), axis=0)
    a_prev = jnp.concatenate([a_0[None], a[:-1]])
    return G * a_prev, G, alpha[0] * G[0]


_linear_scan.defvjp(_forward, _backward)


def linear_scan(
    alpha: Float[Array, "T ..."], beta: Float[Array, "T ..."], a_0: Float[Array, "..."], method: str = "sequential"
) -> Float[Array, "T ..."]:
    """a_t = α_t ⊙ a_{t-1} + β_t for t = 1..T from a_0: alpha, beta (T, ...) and a_0 (...) give a (T, ...).

    method: "sequential" (`lax.scan`, T steps in order) or "associative" (`jax.lax.associative_scan`,
    ⌈log₂ T⌉ levels). Both are exact to rounding and differentiable (the backward is the same scan in
    reverse).
    """
    if method not in METHODS:
        raise ValueError(f"unknown scan method {method!r}: use one of {', '.join(METHODS)}")
    if alpha.shape != beta.shape or alpha.shape[1:] != a_0.shape:
        raise ValueError(f"alpha {alpha.shape} and beta {beta.shape} must be (T, *{a_0.shape}) for a_0 {a_0.shape}")
    return _linear_scan(alpha, beta, a_0, method)


def depth(T: int, method: str = "associative") -> int:
    """Steps that must run one after another: T for "sequential", ⌈log₂ T⌉ levels for "associative"."""
    return T if method == "sequential" else max(0, (T - 1).bit_length())
