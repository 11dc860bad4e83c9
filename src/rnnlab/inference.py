"""A trained classifier reading text: class probabilities over the members of an ensemble, and their scores.

    run = rnnlab.load_run("runs/emotion")          # a Run (rnnlab.checkpoint reads it from disk)
    run.predict("so happy today!")                 # one label
    run.predict_proba(["so happy today!"])        # (1, C)
    tokens, a, y = run.trace("so happy today!")   # per-step states (T, D) and probabilities (T, C)

One compiled program gives the members' mean probabilities for a batch (`_proba`); `predict_proba` feeds
it batches of a few shapes (length buckets) or of one shape (every batch padded to maxlen: what training's
evaluation uses, so that each epoch's evaluation reuses one program); `evaluate` scores a split with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from rnnlab import metrics
from rnnlab.data.batches import bucket_edges, encode, make, plan
from rnnlab.data.dataset import Split
from rnnlab.data.tokenize import tokenize
from rnnlab.data.vocab import Vocabulary
from rnnlab.models import TextClassifier

Members = tuple[TextClassifier, ...]

KIND = "classifier"  # the "kind" a classifier's config.json gives (a config.json without one is a classifier)
EVAL_BATCH = 512     # texts per evaluation call in `evaluate`, all padded to maxlen: one compiled shape


@dataclass
class Run:
    """A trained classifier with what it needs to read text: its members (an ensemble of one or more
    `TextClassifier`s whose probabilities are averaged), vocabulary, label names and config.

    `run.model` is the first member: one complete classifier, whose states `trace` shows.
    """

    members: Members
    config: dict
    vocab: Vocabulary
    labels: tuple[str, ...]
    task: str
    metric: str
    path: Path | None = None

    @property
    def model(self) -> TextClassifier:
        return self.members[0]

    @property
    def maxlen(self) -> int:
        return int(self.config.get("maxlen", 64))

    def encode(self, texts: list[str]) -> tuple[Int[np.ndarray, "N T"], Int[np.ndarray, " N"]]:
        """(ids (N, maxlen), lengths (N,)) for raw texts."""
        return encode(texts, self.vocab, self.maxlen)

    def predict_proba(self, texts: str | Sequence[str], batch_size: int = 256
                      ) -> Float[np.ndarray, "N C"] | Float[np.ndarray, " C"]:
        """Class probabilities (N, C) for N raw texts, the mean over the members; (C,) for one text given
        as a string."""
        if isinstance(texts, str):
            return self.predict_proba([texts], batch_size)[0]
        ids, lengths = self.encode(list(texts))
        return predict_proba(self.members, ids, lengths, batch_size)

    def predict(self, texts: str | Sequence[str]) -> list[str] | str:
        """The most probable label name of each text; one label for one text given as a string."""
        if isinstance(texts, str):
            return self.predict([texts])[0]
        return [self.labels[i] for i in self.predict_proba(texts).argmax(axis=1)]

    def trace(self, text: str) -> tuple[list[str], Float[Array, "T D"], Float[Array, "T C"]]:
        """(tokens, a (T, D), y (T, C)) for one text, T = its number of tokens (capped at maxlen; an empty
        text reads as one `<unk>`). a: the first member's states a_t (`TextClassifier.trace`); y_t: the
        members' mean probabilities for the text read up to token t, so y_T is the run's prediction."""
        if not isinstance(text, str):
            raise TypeError(f"trace reads one text (a string); got {type(text).__name__}")
        tokens = tokenize(text)[: self.maxlen] or ["<unk>"]
        ids = jnp.asarray(self.vocab.encode(tokens), jnp.int32)
        traces = [m.trace(ids) for m in self.members]
        return tokens, traces[0][0], jnp.mean(jnp.stack([y for _, y in traces]), axis=0)


@eqx.filter_jit
def _proba(members: Members, tokens: Int[Array, "B T"], lengths: Int[Array, " B"]) -> Float[Array, "B C"]:
    """The members' mean class probabilities for one batch."""
    return jnp.mean(jnp.stack([m.predict_proba(tokens, lengths) for m in members]), axis=0)


def predict_proba(
    members: Members | TextClassifier, ids: Int[np.ndarray, "N T"], lengths: Int[np.ndarray, " N"],
    batch_size: int = 256, buckets: bool = True,
) -> Float[np.ndarray, "N C"]:
    """Probabilities (N, C) for encoded texts, averaged over the members: in length buckets (a few compiled
    shapes), or with buckets=False in batches of the one shape (batch_size, T) whatever N is."""
    members = (members,) if isinstance(members, TextClassifier) else tuple(members)
    N = len(lengths)
    out = np.zeros((N, members[0].config.classes), np.float32)
    zeros = np.zeros(N, np.int32)
    if buckets:
        batches = plan(lengths, batch_size, bucket_edges(ids.shape[1]), None)
    else:
        batches = [(ids.shape[1], np.arange(i, min(i + batch_size, N))) for i in range(0, N, batch_size)]
    for T, rows in batches:
        b = make(ids, lengths, zeros, T, rows, batch_size)
        out[rows] = np.asarray(_proba(members, *jax.device_put((b.tokens, b.lengths))))[: len(rows)]
    return out


def evaluate(
    members: Members | TextClassifier, vocab: Vocabulary, split: Split, labels: tuple[str, ...], task: str,
    maxlen: int, encoded: tuple[Int[np.ndarray, "N T"], Int[np.ndarray, " N"]] | None = None,
) -> dict:
    """`metrics.report` (official metric, accuracy, per class, confusion matrix) for one split, from the
    members' mean probabilities (batches of EVAL_BATCH texts of one shape). encoded: the split's
    (ids, lengths) when already encoded."""
    ids, lengths = encoded if encoded is not None else encode(split.texts, vocab, maxlen)
    proba = predict_proba(members, ids, lengths, EVAL_BATCH, buckets=False)
    return metrics.report(split.labels, proba.argmax(axis=1), labels, task)
