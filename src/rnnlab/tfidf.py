"""scikit-learn's `TfidfVectorizer` with less of it in Python (char_wb n-grams counted once per distinct word):
the same matrix.

    Tfidf(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=2).fit_transform(texts)  # (N, F)

scikit-learn cuts and counts every n-gram of every text one by one in Python. A text's char_wb n-grams are
those of its words, each word's taken alone (they never cross whitespace), so the counts (N, F) are W G:
W (N, U) counts each of the U distinct words in each text, G (U, F) each n-gram in each distinct word. Here
each distinct word is cut once (by scikit-learn's own `_char_wb_ngrams`), the n-grams are numbered in one
C-level pass in the order a pass over the texts first meets them (as scikit-learn numbers them), and the
product is left to scipy. Pruning by document frequency and sorting the terms are scikit-learn's steps
with their loops over the terms in C (for every analyzer); the TF-IDF weights are scikit-learn's own code.
"""

from __future__ import annotations

import itertools
from collections import defaultdict

import numpy as np
import scipy.sparse as sp
from sklearn.feature_extraction.text import TfidfVectorizer

try:  # scikit-learn >= 1.8 hands out the sparse interface its configuration asks for
    from sklearn.utils._sparse import _align_api_if_sparse
except ImportError:  # pragma: no cover - older scikit-learn: sparse matrices throughout
    def _align_api_if_sparse(X):
        return sp.csr_matrix(X)


class Tfidf(TfidfVectorizer):
    """`TfidfVectorizer`, counted as the module docstring says."""

    def _count_vocab(self, raw_documents, fixed_vocab):
        """(vocabulary, counts (N, F) CSR with sorted indices), as `CountVectorizer._count_vocab` returns them:
        in fitting, the vocabulary numbers the n-grams in order of first sight; with a fixed one, unknown
        n-grams are dropped."""
        if self.analyzer != "char_wb":
            return super()._count_vocab(raw_documents, fixed_vocab)
        vocabulary = self.vocabulary_ if fixed_vocab else _numbering()
        preprocess, decode = self.build_preprocessor(), self.decode
        words = _numbering()  # distinct word -> its row of G, numbered in order of first sight
        text_words, lengths = [], [0]
        for doc in raw_documents:
            split = preprocess(decode(doc)).split()  # the words that `_char_wb_ngrams` pads and cuts
            text_words += split
            lengths.append(len(split))
        N, word_ids = len(lengths) - 1, np.fromiter(map(words.__getitem__, text_words), np.int64, len(text_words))
        # Every n-gram of every distinct word, word after word in order of first sight (the order in which
        # a pass over the texts first meets them): `_char_wb_ngrams` of the words joined by spaces.
        grams = self._char_wb_ngrams(" ".join(words))
        padded = np.fromiter(map(len, words), np.int64, len(words)) + 2
        n_lo, n_hi = self.ngram_range
        # A padded word of L characters has L - n + 1 n-grams of each n <= L; one shorter than n_lo, one.
        per_word = (padded < n_lo) + sum(np.where(padded >= n, padded - n + 1, 0) for n in range(n_lo, n_hi + 1))
        gram_ids = _ids(vocabulary, grams, fixed_vocab)
        vocabulary = _checked(vocabulary, fixed_vocab)
        U, F = len(words), len(vocabulary)
        W = _counts(word_ids, np.cumsum(lengths), (N, U))
        G = _counts(gram_ids, np.concatenate([[0], np.cumsum(per_word)]), (U, F))
        return vocabulary, _as_counts(W @ G, self.dtype)

    def _limit_features(self, X, vocabulary, high=None, low=None, limit=None):
        """`CountVectorizer._limit_features` (terms kept by document frequency, the vocabulary renumbered in
        place, in its order) without its Python loop over the terms."""
        if limit is not None or (high is None and low is None):
            return super()._limit_features(X, vocabulary, high, low, limit)
        dfs = np.bincount(X.indices, minlength=X.shape[1])  # X is CSR without duplicates
        mask = np.ones(len(dfs), dtype=bool)
        if high is not None:
            mask &= dfs <= high
        if low is not None:
            mask &= dfs >= low
        kept = np.flatnonzero(mask)
        if len(kept) == 0:
            raise ValueError("After pruning, no terms remain. Try a lower min_df or a higher max_df.")
        terms = list(vocabulary)
        ids = np.fromiter(vocabulary.values(), np.int64, len(terms))
        keep = mask[ids]
        vocabulary.clear()
        vocabulary.update(zip(itertools.compress(terms, keep), (np.cumsum(mask) - 1)[ids[keep]].tolist(),
                              strict=True))
        return X[:, kept]

    def _sort_features(self, X, vocabulary):
        """`CountVectorizer._sort_features` (terms numbered in sorted order, the vocabulary renumbered in place,
        X's indices mapped and left in their stored order) without its Python loop over the terms."""
        terms = sorted(vocabulary)
        map_index = np.empty(len(terms), dtype=X.indices.dtype)
        map_index[np.fromiter(map(vocabulary.__getitem__, terms), np.int64, len(terms))] = np.arange(len(terms))
        vocabulary.update(zip(terms, range(len(terms)), strict=True))
        X.indices = map_index.take(X.indices, mode="clip")
        return X


def _counts(ids, indptr, shape):
    """CSR (R, C) counting each row's ids (ids[indptr[r]:indptr[r+1]]; a negative id is not counted)."""
    rows = np.repeat(np.arange(shape[0]), np.diff(indptr))
    keep = ids >= 0
    M = sp.csr_array((np.ones(int(keep.sum())), (rows[keep], ids[keep])), shape=shape)
    M.sum_duplicates()
    return M


def _numbering() -> defaultdict:
    """A dict that numbers each new key in order of first sight (as `CountVectorizer` builds its vocabulary)."""
    numbering = defaultdict()
    numbering.default_factory = numbering.__len__
    return numbering


def _ids(vocabulary: dict, grams: list[str], fixed: bool) -> np.ndarray:
    """The vocabulary's number of each gram (N,): -1 for one not in a fixed vocabulary, else a new number."""
    if fixed:
        return np.fromiter(map(vocabulary.get, grams, itertools.repeat(-1)), np.int64, len(grams))
    return np.fromiter(map(vocabulary.__getitem__, grams), np.int64, len(grams))


def _checked(vocabulary: dict, fixed: bool) -> dict:
    if fixed:
        return vocabulary
    if not vocabulary:
        raise ValueError("empty vocabulary; perhaps the documents only contain stop words")
    return dict(vocabulary)


def _as_counts(X, dtype):
    """X as `CountVectorizer._count_vocab` returns counts: CSR of `dtype`, int32 indices where they fit, sorted."""
    X = X.tocsr()
    index = np.int32 if X.nnz <= np.iinfo(np.int32).max else np.int64
    X = sp.csr_array((X.data.astype(dtype, copy=False), X.indices.astype(index), X.indptr.astype(index)),
                     shape=X.shape, dtype=dtype)
    X.sort_indices()
    return _align_api_if_sparse(X)
