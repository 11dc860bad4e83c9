"""A text classifier built from the equations: tokens -> x_t -> a_t -> one label per text.

    x_t = E[token_t] (+ mean_g H[g])                   (k,)   embedding row of the t-th token (and, with
                                                              subwords, the mean row of its hashed n-grams g)
    a_t = RNN(x_1..x_t)                                (q,)   q = p units, or 2p when bidirectional
    h   = pool(a_1..a_L)                               (q,)   last state, mean or max over the L real steps
    y   = softmax(W_y h + b_y)                         (C,)   one probability per class

Padding (steps after each text's length L) is never read: the layers stop at L and pooling masks it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int, PRNGKeyArray

from rnnlab.cells import Readout
from rnnlab.layers import RNN, Bidirectional, Stack
from rnnlab.padding import valid_steps

POOLINGS = ("last", "mean", "max")


@dataclass(frozen=True)
class ModelConfig:
    """Everything that fixes the model's shapes and forward pass (stored with every checkpoint)."""

    vocab_size: int
    classes: int
    k: int = 50
    cell: str = "gru"
    units: int = 64
    layers: int = 1
    bidirectional: bool = True
    pooling: str = "max"
    dropout: float = 0.3
    embed_dropout: float = 0.0
    freeze_embeddings: bool = False
    subword_buckets: int = 0   # rows of H, the hashed character n-grams' table (0: no subwords)
    subword_grams: int = 0     # G: n-grams kept per token (`rnnlab.data.subwords`)

    def to_dict(self) -> dict:
        return asdict(self)


def _dropout(x: Array, rate: float, key: PRNGKeyArray | None) -> Array:
    if key is None or rate <= 0:
        return x
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), 0.0)


def pool(a: Float[Array, "B T q"], lengths: Int[Array, " B"], how: str, bidirectional: bool = False
         ) -> Float[Array, "B q"]:
    """h from the states a_1..a_L of each sequence. `last`: a_L (for two directions, the forward a_L and
    the backward a_1: each direction's final state); `mean`/`max`: over t <= L only."""
    B, T, q = a.shape
    mask = valid_steps(lengths, T)[..., None]  # (B, T, 1)
    if how == "max":
        return jnp.where(mask, a, -jnp.inf).max(axis=1)
    if how == "mean":
        return jnp.where(mask, a, 0.0).sum(axis=1) / lengths[:, None].astype(a.dtype)
    if how == "last":
        last = a[jnp.arange(B), lengths - 1]
        if bidirectional:
            return jnp.concatenate([last[:, : q // 2], a[:, 0, q // 2 :]], axis=-1)
        return last
    raise ValueError(f"unknown pooling {how!r}: use one of {', '.join(POOLINGS)}")


class TextClassifier(eqx.Module):
    """Embedding E (V, k) -> rnnlab layers (p units) -> pooling -> linear head (W_y, b_y) over C classes.

    ```python
    model = TextClassifier(ModelConfig(vocab_size=V, classes=4), key=jax.random.key(0))
    logits = model(tokens, lengths)             # tokens (B, T) ints, lengths (B,) -> (B, C)
    a, y = model.trace(tokens[0], lengths[0])   # (T, q) states and (T, C) probabilities, step by step
    ```
    """

    E: Float[Array, "V k"]
    rnn: Stack
    head: Readout
    config: ModelConfig = eqx.field(static=True)
    H: Float[Array, "N k"] | None = None        # hashed n-grams' rows (row 0: none), with subwords
    grams: Int[Array, "V G"] | None = None      # each token's n-gram rows of H (`data.subwords.table`)

    def __init__(self, config: ModelConfig, E: Float[np.ndarray, "V k"] | None = None, *, key: PRNGKeyArray,
                 grams: Int[np.ndarray, "V G"] | None = None):
        if config.pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {config.pooling!r}: use one of {', '.join(POOLINGS)}")
        k_E, k_rnn, k_head = jax.random.split(key, 3)
        if E is None:
            E = jax.random.normal(k_E, (config.vocab_size, config.k)) * 0.4
            E = E.at[0].set(0.0)
        if tuple(E.shape) != (config.vocab_size, config.k):
            raise ValueError(f"E must be (V={config.vocab_size}, k={config.k}); got {tuple(E.shape)}")
        self.E = jnp.asarray(E, jnp.float32)
        self.rnn = RNN(config.cell, features=config.k, units=config.units, layers=config.layers,
                       bidirectional=config.bidirectional, dropout=config.dropout, key=k_rnn)
        self.head = Readout(self.rnn.output_size, config.classes, key=k_head)
        self.config = config
        if config.subword_buckets:
            shape = (config.vocab_size, config.subword_grams)
            if grams is not None and tuple(grams.shape) != shape:
                raise ValueError(f"grams must be (V, G) = {shape}; got {tuple(grams.shape)}")
            self.H = jnp.zeros((config.subword_buckets + 1, config.k), jnp.float32)  # x_t starts as E's row
            self.grams = jnp.zeros(shape, jnp.int32) if grams is None else jnp.asarray(grams, jnp.int32)

    @property
    def q(self) -> int:
        """Features of each a_t given to pooling: p, or 2p when the last layer is bidirectional."""
        return self.rnn.output_size

    def embed(self, tokens: Int[Array, "*B T"]) -> Float[Array, "*B T k"]:
        """x_t = E[token_t], plus the mean of H's rows of the token's n-grams with subwords; E gets no
        gradient when the embeddings are frozen (H still learns)."""
        E = jax.lax.stop_gradient(self.E) if self.config.freeze_embeddings else self.E
        x = E[tokens]
        if self.H is None:
            return x
        g = self.grams[tokens]                                                  # (*B, T, G)
        has = (g > 0)[..., None]                                                # id 0: no n-gram, never read
        n = jnp.maximum(has.sum(-2), 1).astype(x.dtype)
        return x + jnp.where(has, self.H[g], 0.0).sum(-2) / n

    def states(
        self, tokens: Int[Array, "B T"], lengths: Int[Array, " B"], *, key: PRNGKeyArray | None = None
    ) -> Float[Array, "B T q"]:
        """a_t for every step of every sequence (zeros after each one's length). Dropout only with `key`."""
        keys = jax.random.split(key, 2) if key is not None else (None, None)
        x = _dropout(self.embed(tokens), self.config.embed_dropout, keys[0])
        a, _ = self.rnn(x, lengths, key=keys[1])
        return a

    def __call__(
        self, tokens: Int[Array, "B T"], lengths: Int[Array, " B"], *, key: PRNGKeyArray | None = None
    ) -> Float[Array, "B C"]:
        """Logits W_y h + b_y (B, C). Pass `key` to train (dropout on); leave it out to predict."""
        k_rnn, k_head = jax.random.split(key) if key is not None else (None, None)
        a = self.states(tokens, lengths, key=k_rnn)
        h = pool(a, lengths, self.config.pooling, isinstance(self.rnn.layers[-1], Bidirectional))
        return self.head(_dropout(h, self.config.dropout, k_head))

    def predict_proba(self, tokens: Int[Array, "B T"], lengths: Int[Array, " B"]) -> Float[Array, "B C"]:
        """softmax of the logits: one probability per class for each sequence."""
        return jax.nn.softmax(self(tokens, lengths), axis=-1)

    def trace(
        self, tokens: Int[Array, " T"], length: Int[Array, ""] | int | None = None
    ) -> tuple[Float[Array, "T q"], Float[Array, "T C"]]:
        """One text step by step: (a (T, q), y (T, C)).

        a_t is the recurrent state at step t (q = p, or 2p bidirectional: [forward a_t; backward a_t]).
        y_t is the class probabilities the head gives for the text's pooled states up to step t,
        softmax(W_y pool(a_1..a_t) + b_y), so y_L (L = length) is the prediction for the whole text.
        Steps after L (padding) hold zeros in a and repeat y_L. With two directions the backward half of
        each a_t has already read the text from its end.
        """
        tokens = jnp.asarray(tokens)
        return _trace(self, tokens, jnp.asarray(tokens.shape[0] if length is None else length, jnp.int32))


@eqx.filter_jit
def _trace(model: TextClassifier, tokens: Array, L: Array) -> tuple[Array, Array]:
    T = tokens.shape[0]
    a = model.states(tokens[None], L[None])[0]
    bidirectional = isinstance(model.rnn.layers[-1], Bidirectional)
    steps = jnp.minimum(jnp.arange(1, T + 1), L)  # pool over a_1..a_t, t capped at L
    h = pool(jnp.broadcast_to(a, (T, *a.shape)), steps, model.config.pooling, bidirectional)
    return a, jax.nn.softmax(model.head(h), axis=-1)
