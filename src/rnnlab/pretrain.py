"""Next-word pretraining: before it learns labels, the classifier's embedding E and recurrent layer learn to
predict the task's own texts, a prediction y_t at every step as in Elman's (1990) experiments:

    forward  a_t:  y_t = softmax(W_y a_t + b_y)   predicts token t+1
    backward a_t:  y_t = softmax(V_y a_t + c_y)   predicts token t-1      (bidirectional layers)

The targets are the `words` most frequent tokens, every rarer one sharing a last class, so the softmax stays
small. Only one-layer stacks: in a second layer the forward direction would read what the first layer's
backward direction saw of the future, and predicting the next token would be copying it.
"""

from __future__ import annotations

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Int, PRNGKeyArray

from rnnlab.cells import Readout
from rnnlab.data.batches import bucket_edges, plan
from rnnlab.models import TextClassifier, step_loss


class NextWord(eqx.Module):
    """The next-word objective on a classifier's own states: readouts over `words` + 1 token classes per
    direction, y_t at every step scored by `models.step_loss` as a many-to-many `SequenceModel` is.

    It is not a `SequenceModel` because each direction's half of a_t needs its own readout and its own
    targets (the next token forwards, the previous one backwards), where a `SequenceModel` reads all of a_t.
    """

    model: TextClassifier
    forward: Readout
    backward: Readout | None

    def __init__(self, model: TextClassifier, words: int, *, key: PRNGKeyArray):
        if model.config.layers != 1:
            raise ValueError("next-word pretraining takes a one-layer model (a second layer's forward "
                             "direction would see the future through the first's backward one); "
                             f"got layers={model.config.layers}")
        p = model.config.units
        k_f, k_b = jax.random.split(key)
        self.model = model
        self.forward = Readout(p, words + 1, key=k_f)
        self.backward = Readout(p, words + 1, key=k_b) if model.config.bidirectional else None

    def loss(self, tokens: Int[Array, "B T"], lengths: Int[Array, " B"], targets: Int[Array, "B T"],
             key: PRNGKeyArray | None) -> Array:
        """Mean cross-entropy of every next (and, backwards, previous) token within each text."""
        a = self.model.states(tokens, lengths, key=key)
        p = self.model.config.units
        t = jnp.arange(tokens.shape[1])[None, :]
        total, count = 0.0, 0.0
        pairs = [(self.forward, a[..., :p], targets[:, 1:], t[:, :-1] < lengths[:, None] - 1, slice(None, -1))]
        if self.backward is not None:
            pairs.append((self.backward, a[..., p:], targets[:, :-1], (t[:, 1:] < lengths[:, None]), slice(1, None)))
        for readout, a_dir, target, valid, steps in pairs:
            ce = step_loss("softmax", readout(a_dir[:, steps]), target)  # y_t at every step
            total += jnp.sum(jnp.where(valid, ce, 0.0))
            count += jnp.sum(valid)
        return total / jnp.maximum(count, 1.0)


@functools.lru_cache(maxsize=16)
def _optimizer(lr: float, clip: float) -> optax.GradientTransformation:
    """One optimiser object per (lr, clip), so that the step compiled for it is found again."""
    return optax.chain(optax.clip_by_global_norm(clip), optax.adamw(lr, weight_decay=1e-4))


@eqx.filter_jit
def _step(static, optim, params, opt_state, tokens, lengths, targets, key):
    """One AdamW step of next-word prediction (module level: compiled once per shape and optimiser)."""
    def loss_fn(params):
        return eqx.combine(params, static).loss(tokens, lengths, targets, key)

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = optim.update(grads, opt_state, params)
    return eqx.apply_updates(params, updates), opt_state, loss


def pretrain(
    model: TextClassifier,
    ids: Int[np.ndarray, "N T"],
    lengths: Int[np.ndarray, " N"],
    *,
    epochs: int,
    words: int = 2000,
    lr: float = 2e-3,
    batch_size: int = 32,
    clip: float = 1.0,
    seed: int = 0,
) -> tuple[TextClassifier, list[float]]:
    """`model` with E and the recurrent layer trained `epochs` passes on next-word prediction over the
    texts `ids` (N, T) with `lengths` (N,); returns it and the mean loss of each pass (nats per token)."""
    key = jax.random.key(seed + 7919)
    key, k_init = jax.random.split(key)
    lm = NextWord(model, words, key=k_init)
    trainable = eqx.tree_at(lambda m: m.model.head, jax.tree.map(eqx.is_inexact_array, lm), replace_fn=lambda h: False)
    params, static = eqx.partition(lm, trainable)
    optim = _optimizer(lr, clip)
    opt_state = optim.init(params)
    targets_all = np.minimum(ids, words + 1) - 1  # ids 1.. (unk, then most frequent first) -> classes 0..words
    targets_all = np.clip(targets_all, 0, words)
    step = functools.partial(_step, static, optim)

    rng = np.random.default_rng(seed)
    edges = bucket_edges(ids.shape[1])
    history = []
    for _ in range(epochs):
        losses = []
        for T, rows in plan(lengths, batch_size, edges, rng):
            B = batch_size
            take = np.resize(rows, B)  # fill a short last batch by repeating rows: shapes stay fixed
            key, sub = jax.random.split(key)
            params, opt_state, loss = step(params, opt_state, ids[take, :T], np.maximum(lengths[take], 1),
                                           targets_all[take, :T], sub)
            losses.append(float(loss))
        history.append(float(np.mean(losses)))
    return eqx.combine(params, static).model, history
