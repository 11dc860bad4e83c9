"""Next-word pretraining: the embedding and layer learn the texts' own sequence before the labels."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnnlab.data.batches import encode
from rnnlab.data.tokenize import tokenize
from rnnlab.data.vocab import Vocabulary
from rnnlab.models import ModelConfig, TextClassifier
from rnnlab.pretrain import pretrain
from rnnlab.train import Config, fit


def cycle_texts(n: int = 200, seed: int = 0) -> list[str]:
    """Texts that walk a fixed cycle of 8 words from a random start: each next word is determined."""
    rng = np.random.default_rng(seed)
    words = [f"w{i}" for i in range(8)]
    return [" ".join(words[(s + j) % 8] for j in range(int(rng.integers(4, 12)))) for s in rng.integers(8, size=n)]


def test_pretraining_learns_the_next_word_and_leaves_the_head_alone():
    texts = cycle_texts()
    vocab = Vocabulary.build([tokenize(t) for t in texts])
    ids, lengths = encode(texts, vocab, 16)
    model = TextClassifier(ModelConfig(vocab_size=len(vocab), classes=2, k=8, units=16), key=jax.random.key(0))
    trained, history = pretrain(model, ids, lengths, epochs=8, words=20, lr=1e-2, batch_size=16)
    assert history[0] > np.log(9) * 0.8  # about uniform over the 9 classes at first (8 words + unk)
    assert history[-1] < 0.2  # then nearly certain: each next word follows from the one before
    np.testing.assert_array_equal(np.asarray(trained.head.W_y), np.asarray(model.head.W_y))
    assert not np.allclose(np.asarray(trained.E), np.asarray(model.E))


def test_pretraining_refuses_a_second_layer():
    model = TextClassifier(ModelConfig(vocab_size=10, classes=2, k=4, units=4, layers=2), key=jax.random.key(0))
    with pytest.raises(ValueError, match="one-layer model"):
        pretrain(model, np.ones((4, 5), np.int32), np.full(4, 5), epochs=1)


def test_fit_with_pretraining_runs_and_is_reproducible():
    from test_train import SMALL, leaves, toy_dataset

    config = Config(**{**SMALL, "epochs": 1, "pretrain_epochs": 1})
    a = fit(config, toy_dataset(n=64), progress=False)
    b = fit(config, toy_dataset(n=64), progress=False)
    for x, y in zip(leaves(a.model), leaves(b.model), strict=True):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_next_word_loss_is_the_cross_entropy_of_each_neighbour_by_hand(bidirectional):
    """NextWord's loss against a NumPy loop: forwards y_t = softmax(W_y a_t + b_y) scores token t+1, backwards
    softmax(V_y a_t + c_y) scores token t-1, over the steps inside each text only."""
    from rnnlab.pretrain import NextWord

    config = ModelConfig(vocab_size=12, classes=2, k=4, units=3, bidirectional=bidirectional)
    model = TextClassifier(config, key=jax.random.key(0))
    lm = NextWord(model, words=6, key=jax.random.key(1))
    rng = np.random.default_rng(2)
    tokens = rng.integers(1, 12, (3, 6)).astype(np.int32)
    lengths = np.array([6, 2, 4], np.int32)
    targets = np.clip(tokens - 1, 0, 6)
    a = np.asarray(model.states(jnp.asarray(tokens), jnp.asarray(lengths)))

    def log_softmax(z):
        return z - np.log(np.exp(z - z.max()).sum()) - z.max()

    terms = []
    for b, L in enumerate(lengths):
        for t in range(L):
            if t + 1 < L:
                z = np.asarray(lm.forward.W_y) @ a[b, t, :3] + np.asarray(lm.forward.b_y)
                terms.append(-log_softmax(z)[targets[b, t + 1]])
            if bidirectional and t > 0:
                z = np.asarray(lm.backward.W_y) @ a[b, t, 3:] + np.asarray(lm.backward.b_y)
                terms.append(-log_softmax(z)[targets[b, t - 1]])
    loss = lm.loss(jnp.asarray(tokens), jnp.asarray(lengths), jnp.asarray(targets), None)
    np.testing.assert_allclose(float(loss), np.mean(terms), rtol=1e-5)
