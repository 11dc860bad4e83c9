"""Hashed character n-grams of each token (as fastText): what a rare, misspelt or foreign word shares with others.

    grams("happy")            -> ['<ha', 'hap', 'app', 'ppy', 'py>', '<hap', ..., 'appy>']
    bucket("<ha", 100_000)    -> an id in 1..100000, the same in every process (CRC-32, not Python's hash)
    table(vocab.tokens, B, G) -> (V, G) bucket ids, 0 where a token has fewer than G n-grams

The model adds the mean of its n-grams' rows of H to each token's row of E (`models.TextClassifier.embed`):

    x_t = E[token_t] + (1 / n_t) Σ_g H[bucket(g)]      over the n_t n-grams g of token_t (n from 3 to 5)

The word is marked with `<` and `>` at its ends, so that prefixes and suffixes differ from the middle. The
placeholders `<pad>`, `<unk>`, `<url>` and `@user` and one-character tokens (punctuation) have no n-grams.

`cached_table(words, B, G)` is `table` kept on disk under a digest of its inputs, for a list every training
reads again (the pretrained vectors' first words): in the user's cache folder, `RNNLAB_GRAMS_CACHE=0` off,
a path moves it (`rnnlab._cache`).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import zlib
from collections.abc import Sequence

import numpy as np
from jaxtyping import Int

from rnnlab import _cache
from rnnlab._files import RunError, atomic_write

N_MIN, N_MAX = 3, 5
MAX_GRAMS = 32           # G: n-grams kept per token (the first ones: the shortest, from the word's start)
_NONE = {"<pad>", "<unk>", "<url>", "@user"}
CACHE_ENV = "RNNLAB_GRAMS_CACHE"
VERSION = 1  # part of the cache's digest: raise it whenever `grams`, `bucket` or `table` change


def grams(token: str, n_min: int = N_MIN, n_max: int = N_MAX) -> list[str]:
    """The character n-grams of `<token>`, n_min <= n <= n_max, shortest first (none for placeholders)."""
    if token in _NONE or len(token) < 2:
        return []
    word = f"<{token}>"
    return [word[i : i + n] for n in range(n_min, n_max + 1) for i in range(len(word) - n + 1)]


def bucket(gram: str, buckets: int) -> int:
    """The row of H for `gram`: 1 + CRC-32 of its UTF-8 bytes modulo `buckets` (row 0 means no n-gram)."""
    return 1 + zlib.crc32(gram.encode("utf-8")) % buckets


def table(tokens: Sequence[str], buckets: int, max_grams: int = MAX_GRAMS) -> Int[np.ndarray, "V G"]:
    """(V, G = max_grams) bucket ids of each token's n-grams, padded with 0: the model's gram table."""
    if buckets < 1 or max_grams < 1:
        raise ValueError(f"buckets and max_grams must be >= 1; got {buckets} and {max_grams}")
    out = np.zeros((len(tokens), max_grams), np.int32)
    for i, token in enumerate(tokens):
        ids = list(dict.fromkeys(bucket(g, buckets) for g in grams(token)))[:max_grams]
        out[i, : len(ids)] = ids
    return out


def cached_table(words: Sequence[str], buckets: int, max_grams: int = MAX_GRAMS) -> Int[np.ndarray, "V G"]:
    """`table(words, buckets, max_grams)`, read from the cache when these words were hashed before, and
    written to it otherwise (an entry that cannot be read is made again)."""
    folder = _cache.folder(CACHE_ENV, "grams")
    if folder is None:
        return table(words, buckets, max_grams)
    key = json.dumps([VERSION, N_MIN, N_MAX, MAX_GRAMS, buckets, max_grams, list(words)], ensure_ascii=False)
    path = folder / f"{hashlib.sha256(key.encode('utf-8', 'surrogatepass')).hexdigest()[:32]}.npy"
    try:
        out = np.load(path, allow_pickle=False)
        if (isinstance(out, np.ndarray) and out.shape == (len(words), max_grams) and out.dtype == np.int32
                and (out.size == 0 or (out.min() >= 0 and out.max() <= buckets))):
            return out
    except Exception:  # missing, cut, or not an array at all: hashed again and replaced
        pass
    out = table(words, buckets, max_grams)
    buffer = io.BytesIO()
    np.save(buffer, out, allow_pickle=False)
    with contextlib.suppress(RunError):  # an unwritable cache costs the next run the hashing, never this one
        atomic_write(path, buffer.getvalue())  # whole or not at all, for a process reading it at the same time
    return out
