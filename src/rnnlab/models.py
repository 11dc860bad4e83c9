"""The models: a recurrent `Stack` and the readout y_t = f_y(W_y a_t + b_y), in two forms.

`SequenceModel`, on raw features: x_t (k,) -> a_t (D,) -> y_t (q,), at every step (many-to-many, Elman's
streams) or at each sequence's last one (many-to-one); `sequence_model(...)` builds one.

`TextClassifier`, on tokens: one label per text.

    x_t = E[token_t] (+ mean_g H[g])                   (k,)   embedding row of the t-th token (and, with
                                                              subwords, the mean row of its hashed n-grams g)
    a_t = RNN(x_1..x_t)                                (D,)   D = p units, or 2p when bidirectional
    h   = pool(a_1..a_L)                               (D,)   last state, mean or max over the L real steps
    y   = softmax(W_y h + b_y)                         (C,)   one probability per class (q = C outputs)

Padding (steps after each text's length L) is never read: the layers stop at L and pooling masks it.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import asdict, dataclass

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Float, Int, PRNGKeyArray, PyTree

from rnnlab import fast
from rnnlab.cells import Activation, Readout, make_cell
from rnnlab.layers import RNN, Bidirectional, Recurrent, Stack, with_fields
from rnnlab.padding import valid_steps

POOLINGS = ("last", "mean", "max")
OUTPUTS = ("softmax", "sigmoid", "identity")


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


def pool(a: Float[Array, "B T D"], lengths: Int[Array, " B"], how: str, bidirectional: bool = False
         ) -> Float[Array, "B D"]:
    """h from the states a_1..a_L of each sequence. `last`: a_L (for two directions, the forward a_L and
    the backward a_1: each direction's final state); `mean`/`max`: over t <= L only."""
    B, T, D = a.shape
    mask = valid_steps(lengths, T)[..., None]  # (B, T, 1)
    if how == "max":
        return jnp.where(mask, a, -jnp.inf).max(axis=1)
    if how == "mean":
        return jnp.where(mask, a, 0.0).sum(axis=1) / lengths[:, None].astype(a.dtype)
    if how == "last":
        last = a[jnp.arange(B), lengths - 1]
        if bidirectional:
            return jnp.concatenate([last[:, : D // 2], a[:, 0, D // 2 :]], axis=-1)
        return last
    raise ValueError(f"unknown pooling {how!r}: use one of {', '.join(POOLINGS)}")


def step_loss(output: str, logits: Float[Array, "*T q"], targets: Array) -> Float[Array, "*T"]:
    """The loss of y_t at every step, (*T,) from logits (*T, q): for "softmax" the cross-entropy (nats) with
    targets (*T, q) (a distribution over the q symbols) or (*T,) (the symbols' ids); for "sigmoid" the
    binary cross-entropy summed over the q bits; for "identity" the squared error summed over the q outputs."""
    if output == "softmax":
        if jnp.issubdtype(targets.dtype, jnp.integer):
            return optax.softmax_cross_entropy_with_integer_labels(logits, targets)
        return optax.softmax_cross_entropy(logits, targets)
    if output == "sigmoid":
        return optax.sigmoid_binary_cross_entropy(logits, targets).sum(-1)
    if output == "identity":
        return ((logits - targets) ** 2).sum(-1)
    raise ValueError(f"unknown output {output!r}: use one of {', '.join(OUTPUTS)}")


class SequenceModel(eqx.Module):
    """x_t (k features) -> `Stack` (p units a layer; a_t has D = p, or 2p bidirectional) -> y_t = W_y a_t + b_y
    (q outputs, logits), the layers run by `Recurrent` (so on the fused engine where it runs the cell).

    every_step: y_t at every step (many-to-many: a prediction after each element of a stream) or only at
    each sequence's last step, t = L (many-to-one: one answer per sequence). output: how the logits read
    as y_t: "softmax" (one of q symbols), "sigmoid" (q independent bits) or "identity" (q numbers); it picks
    `probabilities` and the loss. Without a readout (None) the model gives the states a_t alone.

    ```python
    model = sequence_model("elman", k=6, p=20, q=6, output="sigmoid", key=jax.random.key(0))
    logits, a, state_T = model.run(x)           # x (B, T, k) -> (B, T, q), (B, T, p), [state_T per layer]
    more, _, _ = model.run(x_next, state_T)     # the same streams, continued where they ended
    ```
    """

    rnn: Stack
    readout: Readout | None
    every_step: bool = eqx.field(static=True, default=True)
    output: str = eqx.field(static=True, default="softmax")

    def __init__(self, rnn: Stack, readout: Readout | None = None, every_step: bool = True,
                 output: str = "softmax"):
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {', '.join(OUTPUTS)}; got {output!r}")
        if readout is not None and readout.W_y.shape[1] != rnn.output_size:
            raise ValueError(f"the readout reads a_t of {readout.W_y.shape[1]} features; the layers give "
                             f"{rnn.output_size}")
        self.rnn = rnn
        self.readout = readout
        self.every_step = every_step
        self.output = output

    @property
    def features(self) -> int:
        """k: features of each x_t."""
        return self.rnn.features

    @property
    def units(self) -> int:
        """p: units of the last layer (per direction)."""
        return self.rnn.units

    @property
    def q(self) -> int:
        """q: outputs of each y_t (0 without a readout)."""
        return 0 if self.readout is None else self.readout.W_y.shape[0]

    @property
    def layer(self) -> Recurrent | Bidirectional:
        """The first recurrent layer (Elman's experiments have this one alone)."""
        return self.rnn.layers[0]

    def initial_state(self, batch: int | None = None) -> list[PyTree]:
        """state_0 of every layer for one sequence, or for `batch` of them: zeros (or a layer's learned a_0)."""
        def of(layer: Recurrent) -> PyTree:
            return layer.initial_state(batch=batch)

        return [(of(x.forward), of(x.backward)) if isinstance(x, Bidirectional) else of(x) for x in self.rnn.layers]

    def run(
        self,
        x: Float[Array, "*B T k"],
        state_0: list[PyTree] | None = None,
        lengths: Int[Array, "..."] | None = None,
        *,
        key: PRNGKeyArray | None = None,
    ) -> tuple[Float[Array, "..."] | None, Float[Array, "*B T D"], list[PyTree]]:
        """(logits, a, state_T) for x (T, k) or (B, T, k) from state_0 (one entry per layer; default
        `initial_state`): logits (*B, T, q) at every step, or (*B, q) at t = L; a (*B, T, D) the last layer's
        states; state_T of every layer, a state_0 that continues the same sequences. Dropout only with `key`."""
        a, finals = self.rnn(x, lengths, state_0=state_0, key=key)
        if self.readout is None:
            return None, a, finals
        if self.every_step:
            return self.readout(a), a, finals
        return self.readout(self._last(a, lengths)), a, finals

    def _last(self, a: Float[Array, "*B T D"], lengths) -> Float[Array, "*B D"]:
        """a at each sequence's last step, t = L (for two directions, the forward a_L and the backward a_1)."""
        bidirectional = isinstance(self.rnn.layers[-1], Bidirectional)
        if a.ndim == 2:
            return self._last(a[None], None if lengths is None else jnp.reshape(lengths, (1,)))[0]
        L = jnp.full(a.shape[:1], a.shape[1], jnp.int32) if lengths is None else jnp.asarray(lengths)
        return pool(a, L, "last", bidirectional)

    def __call__(
        self, x: Float[Array, "*B T k"], lengths: Int[Array, "..."] | None = None, state_0: list[PyTree] | None = None
    ) -> Float[Array, "..."]:
        """The logits (`run`'s first result) from state_0 (default zeros); a_t where there is no readout."""
        logits, a, _ = self.run(x, state_0, lengths)
        return a if logits is None else logits

    def probabilities(self, logits: Float[Array, "*T q"]) -> Float[Array, "*T q"]:
        """y_t as the output reads it: per bit (sigmoid), over the q symbols (softmax), or as they are."""
        if self.output == "sigmoid":
            return jax.nn.sigmoid(logits)
        return jax.nn.softmax(logits, axis=-1) if self.output == "softmax" else logits

    def step_loss(self, logits: Float[Array, "*T q"], targets: Array) -> Float[Array, "*T"]:
        """The loss at every step for this model's output (`step_loss`)."""
        return step_loss(self.output, logits, targets)


def sequence_model(
    cell: str,
    k: int,
    p: int,
    q: int,
    output: str = "softmax",
    *,
    layers: int = 1,
    bidirectional: bool = False,
    activation: str | Activation = "tanh",
    every_step: bool = True,
    engine: str = "auto",
    key: PRNGKeyArray,
) -> SequenceModel:
    """A `SequenceModel`: `layers` layers of `cell` ("elman" | "gru" | "lstm" | "mingru" | "minlstm") reading
    k features, p units each (per direction), and a readout of q outputs (none when q = 0). activation: an
    Elman cell's f_a. output, every_step: see `SequenceModel`; engine: see `Recurrent`."""
    if output not in OUTPUTS:
        raise ValueError(f"output must be one of {', '.join(OUTPUTS)}; got {output!r}")
    if q < 0:
        raise ValueError(f"q (outputs of y_t) must be 0 (no readout) or more; got {q}")
    k_rnn, k_out = jax.random.split(key)
    if layers == 1 and not bidirectional:  # a single cell takes k_rnn itself
        rnn = Stack([Recurrent(make_cell(cell, k, p, activation=activation, key=k_rnn), engine=engine)])
    else:
        rnn = RNN(cell, k, p, layers=layers, bidirectional=bidirectional, activation=activation, engine=engine,
                  key=k_rnn)
    readout = Readout(rnn.output_size, q, key=k_out) if q else None
    return SequenceModel(rnn, readout, every_step, output)


class TextClassifier(eqx.Module):
    """Embedding E (V, k) -> rnnlab layers (p units) -> pooling -> linear head (W_y, b_y) over C classes.

    ```python
    model = TextClassifier(ModelConfig(vocab_size=V, classes=4), key=jax.random.key(0))
    logits = model(tokens, lengths)             # tokens (B, T) ints, lengths (B,) -> (B, C)
    a, y = model.trace(tokens[0], lengths[0])   # (T, D) states and (T, C) probabilities, step by step
    ```
    """

    E: Float[Array, "V k"]
    rnn: Stack
    head: Readout
    config: ModelConfig = eqx.field(static=True)
    H: Float[Array, "N k"] | None = None        # hashed n-grams' rows (row 0: none), with subwords
    grams: Int[Array, "V G"] | None = None      # each token's n-gram rows of H (`data.subwords.table`)

    def __init__(self, config: ModelConfig, E: Float[np.ndarray | Array, "V k"] | None = None, *, key: PRNGKeyArray,
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
        """Deprecated: the features of each a_t given to pooling (`model.rnn.output_size`, D = p or 2p); q
        names the outputs of y_t elsewhere (here C, `config.classes`)."""
        warnings.warn("TextClassifier.q is deprecated: use model.rnn.output_size (the width D of a_t) or "
                      "model.config.classes (the outputs of y)", DeprecationWarning, stacklevel=2)
        return self.rnn.output_size

    def embed(self, tokens: Int[Array, "*B T"]) -> Float[Array, "*B T k"]:
        """x_t = E[token_t], plus the mean of H's rows of the token's n-grams with subwords; E gets no
        gradient when the embeddings are frozen (H still learns)."""
        E = jax.lax.stop_gradient(self.E) if self.config.freeze_embeddings else self.E
        x = E[tokens]
        if self.H is None:
            return x
        g = self.grams[tokens]                                                  # (*B, T, G), 0: no n-gram
        layer = self._first_layer
        if fast.bag_on_engine(layer.engine, layer.cell, self.H):  # the same equation in C++, no (*B, T, G, k) rows
            return x + fast.bag(self.H, g)
        # id 0 reads as a row of zeros that passes H no gradient: out of range, filled (no float mask)
        rows = self.H.at[jnp.where(g > 0, g, self.H.shape[0])].get(mode="fill", fill_value=0.0)
        n = jnp.maximum((g > 0).sum(-1, keepdims=True), 1).astype(x.dtype)
        return x + rows.sum(-2) / n

    @property
    def engine(self) -> str:
        """Where the layers run ("auto", "scan" or "fused", `layers.with_engine`); embed follows them."""
        return self._first_layer.engine

    @property
    def _first_layer(self) -> Recurrent:
        return next(node for node in jax.tree.leaves(self.rnn, is_leaf=lambda n: isinstance(n, Recurrent))
                    if isinstance(node, Recurrent))

    def with_rows(self, E_rows: Float[Array, "X k"], gram_rows: Int[Array, "X G"] | None = None) -> TextClassifier:
        """This model reading X more tokens, ids V..V+X-1: E's rows (and, with subwords, the gram table's)
        appended; config.vocab_size becomes V + X. Every other weight is the same array."""
        if (self.H is None) != (gram_rows is None):
            raise ValueError("gram rows come with a gram table, and only with one")
        E = jnp.concatenate([self.E, jnp.asarray(E_rows, self.E.dtype)])
        grams = self.grams if gram_rows is None else jnp.concatenate([self.grams, jnp.asarray(gram_rows, jnp.int32)])
        return with_fields(self, E=E, grams=grams, config=dataclasses.replace(self.config, vocab_size=E.shape[0]))

    def states(
        self, tokens: Int[Array, "B T"], lengths: Int[Array, " B"], *, key: PRNGKeyArray | None = None
    ) -> Float[Array, "B T D"]:
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
    ) -> tuple[Float[Array, "T D"], Float[Array, "T C"]]:
        """One text step by step: (a (T, D), y (T, C)).

        a_t is the recurrent state at step t (D = p, or 2p bidirectional: [forward a_t; backward a_t]).
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
