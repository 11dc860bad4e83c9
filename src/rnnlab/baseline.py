"""The floor a network has to clear: TF-IDF n-grams and logistic regression, fitted in seconds.

    floor = fit_floor(dataset["train"], dataset["val"], dataset.labels, dataset.task)
    floor.val["score"], floor.C            # the validation score (official metric) and the chosen C
    floor.evaluate(dataset["test"])        # `metrics.report` of another split

Features: word 1-2-grams and character 2-5-grams within word boundaries (`char_wb`), each TF-IDF with
sublinear term frequency, fitted on the training texts alone. The classifier: logistic regression with
balanced class weights; its inverse regularisation C is the one of `CS` with the best validation score.

`floor_report` (what `rnnlab train` writes as "baseline") is fitted once per data: its result is kept in
the user's cache folder (`platformdirs.user_cache_dir("rnnlab")/floor`), named by a digest of the texts,
labels, task, C grid and scikit-learn's version, so that training again on the same splits reads it back.
`RNNLAB_FLOOR_CACHE=0` turns that off; a path moves it.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rnnlab import _cache, metrics
from rnnlab.data.dataset import Split

CS = (0.3, 1.0, 3.0, 10.0)
METHOD = "tfidf word 1-2 + char_wb 2-5, logistic regression (balanced)"
FLOOR = 1  # part of the cache's digest: raise it whenever `features()` or the classifier's settings change
CACHE_ENV = "RNNLAB_FLOOR_CACHE"


def features() -> Any:
    """The unfitted TF-IDF vectoriser: word 1-2-grams beside char_wb 2-5-grams."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import FeatureUnion

    return FeatureUnion([
        ("word", TfidfVectorizer(analyzer="word", ngram_range=(1, 2), sublinear_tf=True, lowercase=True)),
        ("char", TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, lowercase=True,
                                 min_df=2)),
    ])


@dataclass
class Floor:
    """A fitted floor: the vectoriser, the classifier of the chosen C, and its validation report."""

    vectorizer: Any
    classifier: Any
    C: float
    labels: tuple[str, ...]
    task: str
    val: dict
    val_by_C: dict[float, float] = field(default_factory=dict)
    seconds: float = 0.0

    def predict(self, texts: Sequence[str]) -> np.ndarray:
        """Class ids (N,) of `texts`."""
        return self.classifier.predict(self.vectorizer.transform(list(texts))).astype(np.int64)

    def evaluate(self, split: Split) -> dict:
        """`metrics.report` of one split under the task's official metric."""
        return metrics.report(split.labels, self.predict(split.texts), self.labels, self.task)

    def summary(self) -> dict:
        """JSON-ready: the method, the chosen C, validation score by C, the validation score, seconds."""
        return {"method": METHOD, "C": self.C,
                "val_by_C": {str(c): s for c, s in self.val_by_C.items()}, "metric": self.val["metric"],
                "val": self.val["score"], "seconds": round(self.seconds, 2)}


def fit_floor(
    train: Split, val: Split, labels: Sequence[str], task: str, Cs: Sequence[float] = CS, seed: int = 0
) -> Floor:
    """TF-IDF + logistic regression fitted on `train`, C chosen on `val` (the official metric of `task`)."""
    from threadpoolctl import threadpool_limits

    start = time.perf_counter()
    with threadpool_limits(1):  # the solver's OpenMP threads only wait on each other at these sizes
        return _fit(train, val, tuple(labels), task, Cs, seed, start)


def _fit(train: Split, val: Split, labels: tuple[str, ...], task: str, Cs: Sequence[float], seed: int,
         start: float) -> Floor:
    from sklearn.linear_model import LogisticRegression

    vectorizer = features()
    X_train = vectorizer.fit_transform(train.texts)  # one pass over train: the same matrix as fit, transform
    X_val = vectorizer.transform(val.texts)
    best = None
    by_C: dict[float, float] = {}
    for C in Cs:
        clf = LogisticRegression(C=C, class_weight="balanced", max_iter=2000, random_state=seed)
        clf.fit(X_train, train.labels)
        report = metrics.report(val.labels, clf.predict(X_val), labels, task)
        by_C[C] = report["score"]
        if best is None or report["score"] > best[2]["score"]:
            best = (C, clf, report)
    C, clf, report = best
    return Floor(vectorizer, clf, C, labels, task, report, by_C, time.perf_counter() - start)


def floor_report(train: Split, val: Split, test: Split | None, labels: Sequence[str], task: str) -> dict:
    """`Floor.summary()` of the floor fitted on train (C on val), with its test score when `test` is given:
    what `rnnlab train` writes to metrics.json as "baseline". Read back from the cache when these splits
    were fitted before (then "cached": true; "seconds" is the fit's own)."""
    path = _cached(train, val, test, labels, task)
    if path is not None and path.is_file():
        try:
            report = json.loads(path.read_text())
            if isinstance(report, dict) and report.get("method") == METHOD:
                return {**report, "cached": True}
        except (OSError, ValueError):
            pass  # a damaged entry is fitted again and replaced
    floor = fit_floor(train, val, labels, task)
    report = {**floor.summary(), "test": None if test is None else floor.evaluate(test)["score"]}
    if path is not None:
        from rnnlab.checkpoint import RunError, write_json

        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_json(path, report)
        except (OSError, RunError):
            pass  # an unwritable cache costs the next run a fit, never this one
    return report


def _cached(train: Split, val: Split, test: Split | None, labels: Sequence[str], task: str):
    """The cache file of this floor (a digest of everything its report depends on), or None when off."""
    folder = _cache.folder(CACHE_ENV, "floor")
    if folder is None:
        return None
    from importlib.metadata import version  # not `import sklearn`: a read of the cache costs no import

    h = hashlib.sha256(json.dumps([METHOD, FLOOR, version("scikit-learn"), list(CS), list(labels), task]).encode())
    for split in (train, val, test):
        if split is None:
            h.update(b"\0none")
            continue
        # each text after its length: texts holding tabs or newlines never make two splits digest alike
        for text, label in zip(split.texts, np.asarray(split.labels).tolist(), strict=True):
            h.update(f"{label}\t{len(text)}\t{text}".encode("utf-8", "surrogatepass"))
        h.update(b"\0split")
    return folder / f"{h.hexdigest()[:32]}.json"
