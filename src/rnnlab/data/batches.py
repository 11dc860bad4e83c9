"""Batches bucketed by length: short tweets are padded to a short T, long ones to a long T.

Every batch has one of a few shapes (B, T) with T from `bucket_edges(maxlen)`, so JIT compiles a bounded
number of programs (one per edge) while a 10-word tweet never pays for 60 steps. A last, partial batch of
a bucket is filled up with rows of weight 0 (length 1, label 0) that change neither loss nor scores.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
from jaxtyping import Float, Int

from rnnlab.data.tokenize import tokenize
from rnnlab.data.vocab import Vocabulary


def encode(
    texts: list[str], vocab: Vocabulary, maxlen: int
) -> tuple[Int[np.ndarray, "N T"], Int[np.ndarray, " N"]]:
    """Raw texts to (ids (N, T=maxlen), lengths (N,)): tokenize, look up, cut to maxlen, pad with 0."""
    return vocab.encode_batch([tokenize(t) for t in texts], maxlen)


def bucket_edges(maxlen: int, step: int = 32) -> tuple[int, ...]:
    """The padded lengths T a batch can have: multiples of `step` below maxlen, then maxlen itself."""
    return (*range(step, maxlen, step), maxlen)


@dataclass
class Batch:
    """tokens (B, T), lengths (B,), labels (B,), weights (B,): 0 for filler rows; index (B,): row in the
    split (-1 for filler)."""

    tokens: Int[np.ndarray, "B T"]
    lengths: Int[np.ndarray, " B"]
    labels: Int[np.ndarray, " B"]
    weights: Float[np.ndarray, " B"]
    index: Int[np.ndarray, " B"]


def plan(
    lengths: Int[np.ndarray, " N"], batch_size: int, edges: tuple[int, ...], rng: np.random.Generator | None
) -> list[tuple[int, np.ndarray]]:
    """[(T, rows)]: each row goes to the smallest edge T >= its length, in chunks of <= batch_size.

    With `rng`, rows are shuffled within buckets and the batches shuffled among themselves (training);
    without, order is kept (evaluation).
    """
    bucket = np.searchsorted(np.asarray(edges), lengths)  # first edge >= length
    batches = []
    for b, T in enumerate(edges):
        rows = np.flatnonzero(bucket == b)
        if rng is not None:
            rows = rng.permutation(rows)
        batches.extend((T, rows[i : i + batch_size]) for i in range(0, len(rows), batch_size))
    if rng is not None:
        order = rng.permutation(len(batches))
        batches = [batches[i] for i in order]
    return batches


def make(
    ids: Int[np.ndarray, "N maxlen"], lengths: Int[np.ndarray, " N"], labels: Int[np.ndarray, " N"],
    T: int, rows: np.ndarray, B: int, weight: Float[np.ndarray, " C"] | None = None,
) -> Batch:
    """The batch of `rows`, cut to T steps and filled to B rows; weights are class weights (or 1)."""
    n = len(rows)
    tokens = np.zeros((B, T), np.int32)
    tokens[:n] = ids[rows, :T]
    lens = np.ones(B, np.int32)
    lens[:n] = lengths[rows]
    labs = np.zeros(B, np.int32)
    labs[:n] = labels[rows]
    weights = np.zeros(B, np.float32)
    weights[:n] = 1.0 if weight is None else weight[labs[:n]]
    index = np.full(B, -1, np.int64)
    index[:n] = rows
    return Batch(tokens, lens, labs, weights, index)


Item = TypeVar("Item")
_DONE = object()


def prefetch(items: Iterable[Item], depth: int = 2) -> Iterator[Item]:
    """The items of `items` in order, each computed ahead in a background thread (at most `depth` ready
    and waiting), so that preparing batch i + 1 overlaps step i. An exception in the thread is raised here,
    at the item where it happened; leaving the loop early stops the thread."""
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce():
        try:
            for item in items:
                if stop.is_set():
                    return
                ready.put((item, None))
        except BaseException as e:  # handed to the consumer, raised there
            ready.put((_DONE, e))
            return
        ready.put((_DONE, None))

    thread = threading.Thread(target=produce, name="rnnlab-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item, error = ready.get()
            if item is _DONE:
                if error is not None:
                    raise error
                return
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                ready.get_nowait()
            except queue.Empty:
                thread.join(0.01)
