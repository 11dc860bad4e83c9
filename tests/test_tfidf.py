"""rnnlab.tfidf.Tfidf builds exactly scikit-learn's TfidfVectorizer matrix (every stored number, in the same
places and order), and the floor fitted on it reports exactly what the floor on scikit-learn's own does."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.pipeline import FeatureUnion

from rnnlab import baseline
from rnnlab.data import load
from rnnlab.tfidf import Tfidf

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
TASKS = ("tweeteval/emotion", "tweeteval/hate", "tweeteval/irony",
         "umsab/english", "umsab/french", "umsab/italian", "umsab/spanish")
FLOOR_CHAR = dict(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, lowercase=True, min_df=2)
FLOOR_WORD = dict(analyzer="word", ngram_range=(1, 2), sublinear_tf=True, lowercase=True)


def assert_same_matrix(A, B):
    assert type(A) is type(B) and A.shape == B.shape and A.dtype == B.dtype
    assert A.indices.dtype == B.indices.dtype and A.has_sorted_indices == B.has_sorted_indices
    np.testing.assert_array_equal(A.indptr, B.indptr)
    np.testing.assert_array_equal(A.indices, B.indices)  # the stored order too: the solver sums in it
    np.testing.assert_array_equal(A.data, B.data)


def assert_same(kwargs: dict, train: list[str], others: list[list[str]]):
    stock, ours = TfidfVectorizer(**kwargs), Tfidf(**kwargs)
    assert_same_matrix(stock.fit_transform(train), ours.fit_transform(train))
    assert list(stock.vocabulary_.items()) == list(ours.vocabulary_.items())  # in the same order too
    if stock.use_idf:
        np.testing.assert_array_equal(stock.idf_, ours.idf_)
    for texts in others:
        assert_same_matrix(stock.transform(texts), ours.transform(texts))


@pytest.mark.parametrize("task", TASKS)
def test_the_floors_features_on_every_shared_task(task):
    if not DATA.is_dir():
        pytest.skip(f"no data at {DATA}")
    d = load(DATA / task)
    for kwargs in (FLOOR_CHAR, FLOOR_WORD):
        assert_same(kwargs, d["train"].texts, [d["val"].texts, d["test"].texts])


TEXTS = ["I  am   SO happy!!! 😂😂", "a b c", "Été à Paris\u3000ce soir\x1cx", "", "   \t\n ", "l'amour qu’il",
         "x", "no  new\u00a0words here", "🇫🇷 👨‍👩‍👧 #tag @user", "ab ab ab", "Über über UBER", "happy happy day",
         "a happy day", "so happy"]
UNSEEN = ["totally unseen zzz", "", "happy über", "😂", "q"]


@pytest.mark.parametrize("kwargs", [
    FLOOR_CHAR,
    dict(analyzer="char_wb", ngram_range=(1, 1)),
    dict(analyzer="char_wb", ngram_range=(4, 7), min_df=1),  # words padded shorter than n: one n-gram each
    dict(analyzer="char_wb", ngram_range=(2, 3), lowercase=False, strip_accents="unicode", sublinear_tf=True),
    dict(analyzer="char_wb", ngram_range=(2, 4), max_df=0.5, norm="l1", use_idf=False),
    dict(analyzer="char_wb", ngram_range=(2, 5), binary=True, smooth_idf=False),
    dict(analyzer="char_wb", ngram_range=(2, 3), vocabulary=[" a", "ab", "pp", "zz", " x "]),
    dict(analyzer="word", ngram_range=(1, 2)),  # any other analyzer: scikit-learn's own counting
    dict(analyzer="word", ngram_range=(1, 3), min_df=2),
    dict(analyzer="word", ngram_range=(1, 2), max_df=2),
    dict(analyzer="char", ngram_range=(1, 3), max_features=20),  # limited: scikit-learn's own pruning
])
def test_matches_scikit_learn_on_hand_written_texts(kwargs):
    assert_same(kwargs, TEXTS, [UNSEEN, TEXTS[::-1]])


def test_the_same_errors():
    for texts, kwargs in [(["", "  "], dict(analyzer="char_wb")),
                          (["ab", "cd"], dict(analyzer="char_wb", ngram_range=(2, 2), min_df=2))]:
        with pytest.raises(ValueError) as stock:
            TfidfVectorizer(**kwargs).fit_transform(texts)
        with pytest.raises(ValueError, match=str(stock.value).split(";")[0]):
            Tfidf(**kwargs).fit_transform(texts)


def test_the_floor_reports_exactly_what_it_reports_on_scikit_learns_vectorizers(monkeypatch):
    if not DATA.is_dir():
        pytest.skip(f"no data at {DATA}")
    d = load(DATA / "tweeteval/irony")
    ours = baseline.floor_report(d["train"], d["val"], d["test"], d.labels, d.task)
    monkeypatch.setattr(baseline, "features", lambda: FeatureUnion([
        ("word", TfidfVectorizer(analyzer="word", ngram_range=(1, 2), sublinear_tf=True, lowercase=True)),
        ("char", TfidfVectorizer(**FLOOR_CHAR)),
    ]))
    stock = baseline.floor_report(d["train"], d["val"], d["test"], d.labels, d.task)
    assert {k: v for k, v in ours.items() if k != "seconds"} == {k: v for k, v in stock.items() if k != "seconds"}
