"""Classification scores, and each TweetEval task's official metric.

    emotion, hate, offensive, emoji   macro_f1          mean F1 over all classes
    irony                             f1_irony          F1 of the ironic class
    stance                            f1_against_favor  mean of F1(against) and F1(favor)
    sentiment                         macro_recall      mean recall over all classes
    anything else                     macro_f1

F1 of a class with no true and no predicted examples is 0 (as in scikit-learn's `zero_division=0`).
The scores are computed from per-class counts in O(N + C); `report` lists the C × C confusion matrix
whole up to `DENSE_CONFUSION` classes and past that only its non-zero cells, so that memory and JSON stay
bounded by the number of examples.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from jaxtyping import Int

DENSE_CONFUSION = 100  # classes up to which `report` lists the confusion matrix whole


def confusion(y_true: Int[np.ndarray, " N"], y_pred: Int[np.ndarray, " N"], C: int) -> Int[np.ndarray, "C C"]:
    """M (C, C): M[i, j] counts examples of true class i predicted as j."""
    M = np.zeros((C, C), np.int64)
    np.add.at(M, (np.asarray(y_true), np.asarray(y_pred)), 1)
    return M


def _ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.divide(a, b, out=np.zeros(a.shape, np.float64), where=b > 0)


def per_class(M: Int[np.ndarray, "C C"]) -> dict[str, np.ndarray]:
    """precision, recall, f1 and support (C,) each, from a confusion matrix."""
    return _stats(np.diag(M), M.sum(axis=0), M.sum(axis=1))


def _counts(y_true: np.ndarray, y_pred: np.ndarray, C: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(true positives, predicted, actual) per class (C,) each: the confusion matrix's diagonal and sums."""
    y_true, y_pred = np.asarray(y_true, np.int64), np.asarray(y_pred, np.int64)
    tp = np.bincount(y_true[y_true == y_pred], minlength=C)
    return tp, np.bincount(y_pred, minlength=C), np.bincount(y_true, minlength=C)


def _stats(tp: np.ndarray, predicted: np.ndarray, actual: np.ndarray) -> dict[str, np.ndarray]:
    tp = tp.astype(np.float64)
    precision, recall = _ratio(tp, predicted), _ratio(tp, actual)
    f1 = _ratio(2 * tp, predicted + actual)
    return {"precision": precision, "recall": recall, "f1": f1, "support": actual}


def official_metric(task: str) -> str:
    """The name of a task's official metric (see the module docstring)."""
    task = task.split("/")[0].lower()
    official = {"irony": "f1_irony", "stance": "f1_against_favor", "sentiment": "macro_recall"}
    return official.get(task, "macro_f1")


def _class(labels: Sequence[str], *names: str) -> int:
    for name in names:
        if name in labels:
            return list(labels).index(name)
    raise ValueError(f"no class named {' or '.join(map(repr, names))} among the labels {list(labels)}")


def score(metric: str, M: Int[np.ndarray, "C C"], labels: Sequence[str]) -> float:
    """The value of `metric` (a name from `official_metric`, or "accuracy") for confusion matrix M."""
    return _score(metric, per_class(M), labels, int(np.trace(M)))


def _score(metric: str, stats: dict[str, np.ndarray], labels: Sequence[str], correct: int) -> float:
    if metric == "macro_f1":
        return float(stats["f1"].mean())
    if metric == "macro_recall":
        return float(stats["recall"].mean())
    if metric == "accuracy":
        return float(correct / max(stats["support"].sum(), 1))
    if metric == "f1_irony":
        return float(stats["f1"][_class(labels, "irony", "ironic")])
    if metric == "f1_against_favor":
        return float((stats["f1"][_class(labels, "against")] + stats["f1"][_class(labels, "favor")]) / 2)
    raise ValueError(f"unknown metric {metric!r}")


def report(
    y_true: Int[np.ndarray, " N"], y_pred: Int[np.ndarray, " N"], labels: Sequence[str], task: str = ""
) -> dict:
    """Everything about one set of predictions, JSON-ready: the official metric (name and value),
    accuracy, macro-F1, per-class precision/recall/F1/support and the confusion matrix (rows: true):
    `confusion` (C, C) up to `DENSE_CONFUSION` classes, else `confusion_cells`, the non-zero cells as
    [true, predicted, count] (at most N of them) with `confusion` None."""
    C = len(labels)
    y_true, y_pred = np.asarray(y_true, np.int64), np.asarray(y_pred, np.int64)
    tp, predicted, actual = _counts(y_true, y_pred, C)
    stats, correct = _stats(tp, predicted, actual), int(tp.sum())
    metric = official_metric(task)
    if C <= DENSE_CONFUSION:
        cells = {"confusion": confusion(y_true, y_pred, C).tolist()}
    else:
        pairs, n = np.unique(np.stack([y_true, y_pred], axis=1), axis=0, return_counts=True)
        cells = {"confusion": None,
                 "confusion_cells": [[int(i), int(j), int(k)] for (i, j), k in zip(pairs, n, strict=True)]}
    return {
        "metric": metric,
        "score": _score(metric, stats, labels, correct),
        "accuracy": _score("accuracy", stats, labels, correct),
        "macro_f1": _score("macro_f1", stats, labels, correct),
        "per_class": {
            name: {k: (int(v[i]) if k == "support" else float(v[i])) for k, v in stats.items()}
            for i, name in enumerate(labels)
        },
        **cells,
        "labels": list(labels),
        "n": len(y_true),
    }
